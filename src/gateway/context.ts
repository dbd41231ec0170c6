/**
 * What the gateway's route modules share: the components, the counters and the per-request helpers
 * `createGateway` builds once.
 *
 * @module
 */
import { createHash } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { FastifyRequest } from 'fastify';
import type { MultiLevelCache } from '../cache/index.ts';
import type { RateLimitResult, Reservation } from '../concurrency/index.ts';
import type { GatewayConfig } from './config.ts';
import type { LocalUpstream } from './local-upstream.ts';
import type { ApiError } from './openai.ts';
import type { UpstreamClient } from './upstream.ts';

/** Completion tokens assumed for a TPM reservation when the request sets no `max_tokens`. @default 256 */
export const DEFAULT_COMPLETION_ESTIMATE = 256;

/** The response header naming the cache outcome (`hit`, `miss`, `bypass`); also a request header. */
export const CACHE_HEADER = 'x-clawperf-cache';

/** What one request carries through the hooks. */
export interface RequestState {
  start: number;
  upstreamMs: number;
  cache: 'hit' | 'miss' | 'bypass';
  limit: RateLimitResult | undefined;
  cacheKey: string | undefined;
}

declare module 'fastify' {
  interface FastifyRequest {
    clawperf: RequestState;
  }
}

/** The gateway's own counters, mutated by the routes. */
export interface GatewayCounts {
  requests: number;
  errors4xx: number;
  errors5xx: number;
  cacheHits: number;
  cacheMisses: number;
  cacheBypass: number;
  rateLimited: number;
  overloaded: number;
  /** Calls to the upstream (or the local models): embedding batches and chat completions. */
  upstreamCalls: number;
  /** Embedding inputs and chat completions sent upstream. */
  upstreamItems: number;
  /** Embedding inputs and chat completions answered. */
  servedItems: number;
  inFlight: number;
}

/** The shared pieces a route handler uses. */
export interface GatewayContext {
  config: GatewayConfig;
  cache: MultiLevelCache<unknown>;
  local: LocalUpstream;
  /** Undefined without `upstreamUrl`: only the local models are served. */
  upstream: UpstreamClient | undefined;
  counts: GatewayCounts;
  /** Counts an answer in `clawperf_gateway_answers_total{endpoint, cache}`. */
  answered(endpoint: 'chat' | 'embeddings', cache: RequestState['cache']): void;
  /** Runs one upstream call under backpressure, in a GenAI client span, and records the GenAI metrics. */
  upstreamCall<R>(
    operation: 'chat' | 'embeddings',
    model: string,
    items: number,
    fn: () => Promise<R>,
  ): Promise<R>;
  /** An upstream answer that is not a success becomes an error, so nothing caches it. */
  expectSuccess<B>(answer: { status: number; body: B }): B;
  /** The tenant of the request's API key, or the error answer for a missing or wrong key. */
  tenantOf(request: FastifyRequest): string | ApiError;
  /** An error answer when `model` cannot serve `kind` here. */
  checkModel(model: string, kind: 'chat' | 'embeddings'): ApiError | undefined;
  /** Charges the tenant's limits; an error answer when refused, undefined when no limits are set. */
  admit(request: FastifyRequest, tenant: string, tokens: number): Promise<Reservation | ApiError | undefined>;
  /** Corrects a reservation to the tokens really used (nothing when unknown). */
  settle(reservation: Reservation | undefined, tokens: number | undefined): void;
  /** The request's cache mode from `x-clawperf-cache` and `cache-control`. */
  cacheMode(request: FastifyRequest): 'bypass' | 'force' | 'auto';
  /** Times an upstream-bound wait, so `x-clawperf-overhead-ms` leaves it out. */
  timed<R>(request: FastifyRequest, fn: () => Promise<R>): Promise<R>;
  /** `cache.getOrSet`, answering the caller whose factory ran before the cache's writes finish. */
  loadThrough<V>(key: string, factory: () => Promise<V>, tags: string[]): Promise<V>;
  /** `cache.get` that treats a store failure as a miss. */
  safeGet(key: string): Promise<unknown>;
  /** Puts the GenAI attributes (and usage, given the answer) on the request's span. */
  setSpan(request: FastifyRequest, operation: 'chat' | 'embeddings', model: string, answer?: unknown): void;
}

/** `content-type` of answers the gateway writes as JSON text itself. */
export const JSON_TYPE = 'application/json; charset=utf-8';

/**
 * JSON text made once per object and kept while the object lives: for cached values, whose L1 entry keeps
 * the object (and so its text) alive, a hit sends the text without serializing the value again. The text
 * is not counted in L1's byte budget: use it for values of a few kilobytes (chat answers), and cache large
 * ones as text instead (embeddings).
 */
export class JsonMemo<K extends object> {
  readonly #texts = new WeakMap<K, string>();

  text(value: K): string {
    let json = this.#texts.get(value);
    if (json === undefined) {
      json = JSON.stringify(value);
      this.#texts.set(value, json);
    }
    return json;
  }
}

/** SHA-256 of `text`, base64url: the input part of cache keys. */
export function sha256(text: string): string {
  return createHash('sha256').update(text).digest('base64url');
}

/** SHA-256 of `text`, raw: compared in constant time for API keys and the admin token. */
export function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

/** The bearer token of `Authorization`, if any. */
export function bearer(headers: IncomingHttpHeaders): string | undefined {
  const auth = headers.authorization;
  if (typeof auth !== 'string' || !auth.startsWith('Bearer ')) return undefined;
  return auth.slice(7).trim();
}
