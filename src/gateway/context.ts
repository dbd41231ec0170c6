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
import type { GuardedUpstream } from './guarded-upstream.ts';
import type { ApiError } from './openai.ts';

/** Completion tokens assumed for a TPM reservation when the request sets no `max_tokens`. @default 256 */
export const DEFAULT_COMPLETION_ESTIMATE = 256;

/** The response header naming the cache outcome (`hit`, `miss`, `bypass`); also a request header. */
export const CACHE_HEADER = 'x-clawperf-cache';

/**
 * How a request's answer was had: from the cache (`hit`, a stale value included), produced by this request
 * (`miss`), from another request's production it waited for (`coalesced`), or without the cache (`bypass`).
 */
export type CacheState = 'hit' | 'miss' | 'coalesced' | 'bypass';

/** What one request carries through the hooks. */
export interface RequestState {
  start: number;
  upstreamMs: number;
  cache: CacheState;
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
  /** Answers that waited for another request's upstream call for the same key. */
  cacheCoalesced: number;
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
  /** Every model call: backpressure, spans, GenAI metrics, the local models and the HTTP upstream. */
  upstream: GuardedUpstream;
  counts: GatewayCounts;
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
  /**
   * Times an upstream-bound wait, so `x-clawperf-overhead-ms` leaves it out; with `waited`, only when the
   * result says the wait was the upstream's (a cache hit is the gateway's own time).
   */
  timed<R>(request: FastifyRequest, fn: () => Promise<R>, waited?: (result: R) => boolean): Promise<R>;
  /**
   * The cached value of `key`, or `factory`'s result, cached, with how it was had: one lookup of every
   * level. The request whose factory ran gets its value without waiting for the cache's writes.
   */
  lookup<V>(key: string, factory: () => Promise<V>, tags: string[]): Promise<{ value: V; cache: CacheState }>;
  /**
   * Records how a request was answered, once: its state (the `x-clawperf-cache` header), the gateway's
   * counts, `clawperf_gateway_answers_total` and the request span's GenAI attributes (with the usage, given
   * the answer).
   */
  record(
    request: FastifyRequest,
    endpoint: 'chat' | 'embeddings',
    model: string,
    cache: CacheState,
    items: number,
    answer?: unknown,
  ): void;
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
