/**
 * What the gateway's modules share: the per-request state the hooks carry, the gateway's counters, the
 * context routes are given, and the small helpers of answers and keys (JSON text made once, digests).
 *
 * @module
 */
import * as crypto from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { RateLimitResult } from '../concurrency/index.ts';
import type { TokenUsage } from '../tracing/index.ts';
import type { RequestSteps } from './request-steps.ts';
import type { Api, Operation } from './upstream-interface.ts';

/** A model route, as metrics and cache keys name it. */
export type Endpoint = 'chat' | 'embeddings' | 'messages' | 'responses';

/** The API and the operation of each endpoint's upstream calls. */
export const ENDPOINT_CALLS: Readonly<Record<Endpoint, { api: Api; operation: Operation }>> = {
  chat: { api: 'openai', operation: 'chat' },
  embeddings: { api: 'openai', operation: 'embeddings' },
  messages: { api: 'anthropic', operation: 'chat' },
  responses: { api: 'openai', operation: 'responses' },
};

/** Completion tokens assumed for a TPM reservation when the request sets no `max_tokens`. @default 256 */
export const DEFAULT_COMPLETION_ESTIMATE = 256;

/** The response header naming the deployment that produced an answer (`local` for the local models). */
export const DEPLOYMENT_HEADER = 'x-clawperf-deployment';

/** The response header naming the cache outcome (`hit`, `miss`, `coalesced`, `bypass`); also a request header. */
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
  /** The tenant of the request's API key, once known. */
  tenant: string | undefined;
  /** Whether a model route recorded how it answered (and so `cache` holds its outcome). */
  recorded: boolean;
  /** The answer a model route recorded, for the request log to read its usage from. */
  answer: unknown;
  /** A live stream's tap, whose usage is known once the stream has reported it. */
  streamed: { readonly usage: TokenUsage | undefined } | undefined;
  /** The gateway's own time until the answer's headers (`x-clawperf-overhead-ms`), ms. */
  overheadMs: number | undefined;
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

/** Counts of a gateway that has served nothing yet. */
export function noCounts(): GatewayCounts {
  return {
    requests: 0,
    errors4xx: 0,
    errors5xx: 0,
    cacheHits: 0,
    cacheMisses: 0,
    cacheBypass: 0,
    cacheCoalesced: 0,
    rateLimited: 0,
    overloaded: 0,
    upstreamCalls: 0,
    upstreamItems: 0,
    servedItems: 0,
    inFlight: 0,
  };
}

/** What a route handler is given: the request steps and the components they share. */
export type GatewayContext = RequestSteps;

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

/** A JSON object as the gateway reads a request or an answer. */
export type Json = Record<string, unknown>;

/** Whether `value` is a JSON object (not null, not an array). */
export function isObject(value: unknown): value is Json {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** Node's one-shot digest (from 20.12): no Hash object per call. */
const oneShotHash = (crypto as { hash?: typeof crypto.hash }).hash;

/** SHA-256 of `text`, base64url: the input part of cache keys. */
export const sha256: (text: string) => string =
  oneShotHash === undefined
    ? (text) => crypto.createHash('sha256').update(text).digest('base64url')
    : (text) => oneShotHash('sha256', text, 'base64url');

/** SHA-256 of `text`, raw: compared in constant time for API keys and the admin token. */
export function digest(text: string): Buffer {
  return crypto.createHash('sha256').update(text).digest();
}

/** The bearer token of `Authorization`, if any. */
export function bearer(headers: IncomingHttpHeaders): string | undefined {
  const auth = headers.authorization;
  if (typeof auth !== 'string' || !auth.startsWith('Bearer ')) return undefined;
  return auth.slice(7).trim();
}

/** The client's API key: `x-api-key` (as Anthropic's SDKs send it), else the bearer token. */
export function clientKey(headers: IncomingHttpHeaders): string | undefined {
  const key = headers['x-api-key'];
  if (typeof key === 'string' && key !== '') return key.trim();
  return bearer(headers);
}
