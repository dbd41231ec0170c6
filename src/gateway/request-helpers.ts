/**
 * Per-request helpers of the gateway's routes: tenant from the API key, model checks, rate-limit
 * admission and settlement, cache mode and cache access that never fails a request.
 *
 * @module
 */
import { timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import type { MultiLevelCache } from '../cache/index.ts';
import type { RateLimiter, Reservation } from '../concurrency/index.ts';
import {
  type GenAIRequest,
  genAIAttributes,
  requestSpan,
  setGenAIUsage,
  usageFromResponse,
} from '../tracing/index.ts';
import type { GatewayConfig } from './config.ts';
import { bearer, CACHE_HEADER, digest, type GatewayContext, type GatewayCounts } from './context.ts';
import { retrySeconds } from './error-answers.ts';
import { LOCAL_CHAT_MODEL, LOCAL_EMBED_MODEL, LOCAL_MODELS } from './local-upstream.ts';
import { type ApiError, apiError } from './openai.ts';
import type { UpstreamClient } from './upstream.ts';

const LOOPBACK = /^(127\.|::1$|::ffff:127\.)/;

/** What the helpers use. */
export interface RequestHelpersOptions {
  config: GatewayConfig;
  cache: MultiLevelCache<unknown>;
  upstream: UpstreamClient | undefined;
  limiter: RateLimiter | undefined;
  counts: GatewayCounts;
  genAIRequest(operation: 'chat' | 'embeddings', model: string): GenAIRequest;
}

/** The per-request helpers of {@link GatewayContext}. */
export function createRequestHelpers(
  options: RequestHelpersOptions,
): Pick<
  GatewayContext,
  | 'tenantOf'
  | 'checkModel'
  | 'admit'
  | 'settle'
  | 'cacheMode'
  | 'timed'
  | 'loadThrough'
  | 'safeGet'
  | 'setSpan'
> {
  const { config, cache, upstream, limiter, counts, genAIRequest } = options;
  const keyDigests = Object.entries(config.apiKeys).map(([key, tenant]) => ({ digest: digest(key), tenant }));
  const tenantOf = (request: FastifyRequest): string | ApiError => {
    if (keyDigests.length === 0) {
      if (LOOPBACK.test(request.socket.remoteAddress ?? '')) return 'default';
      return apiError(
        401,
        'this gateway has no API keys configured and only serves clients on loopback; set GATEWAY_API_KEYS',
        'invalid_request_error',
        'invalid_api_key',
      );
    }
    const key = bearer(request.headers);
    if (key !== undefined) {
      const d = digest(key);
      for (const entry of keyDigests) if (timingSafeEqual(d, entry.digest)) return entry.tenant;
    }
    return apiError(
      401,
      key === undefined
        ? 'you must provide an API key (Authorization: Bearer <key>)'
        : 'incorrect API key provided',
      'invalid_request_error',
      'invalid_api_key',
    );
  };

  const checkModel = (model: string, kind: 'chat' | 'embeddings'): ApiError | undefined => {
    const wrongLocal = kind === 'chat' ? model === LOCAL_EMBED_MODEL : model === LOCAL_CHAT_MODEL;
    if (wrongLocal) {
      return apiError(
        400,
        `the local model ${model} does not serve ${kind}`,
        'invalid_request_error',
        'model_not_supported',
        'model',
      );
    }
    if (LOCAL_MODELS.includes(model) || upstream !== undefined) return undefined;
    return apiError(
      404,
      `the model ${model} does not exist; without an upstream this gateway serves ${LOCAL_MODELS.join(', ')}`,
      'invalid_request_error',
      'model_not_found',
      'model',
    );
  };

  /** Charges the tenant's limits; an error answer when refused. */
  const admit = async (
    request: FastifyRequest,
    tenant: string,
    tokens: number,
  ): Promise<Reservation | ApiError | undefined> => {
    if (limiter === undefined) return undefined;
    const reservation = await limiter.reserve(tenant, { cost: 1, tokens });
    request.clawperf.limit = reservation;
    if (reservation.allowed) return reservation;
    counts.rateLimited++;
    const type = reservation.policy === 'tokens' ? 'tokens' : 'requests';
    return apiError(
      429,
      reservation.retryAfterMs === undefined
        ? `the request needs more ${type} than the per-minute limit of ${reservation.limit}`
        : `rate limit reached for ${type} (limit ${reservation.limit} per minute); retry in ${Math.ceil(reservation.retryAfterMs / 1000)} s`,
      type,
      'rate_limit_exceeded',
      null,
      { 'retry-after': retrySeconds(reservation.retryAfterMs ?? 60_000) },
    );
  };

  const settle = (reservation: Reservation | undefined, tokens: number | undefined): void => {
    if (reservation === undefined || tokens === undefined) return;
    reservation.settle({ cost: 1, tokens }).catch(() => {});
  };

  const cacheMode = (request: FastifyRequest): 'bypass' | 'force' | 'auto' => {
    const h = request.headers[CACHE_HEADER];
    if (h === 'bypass') return 'bypass';
    if (h === 'force') return 'force';
    const cc = request.headers['cache-control'];
    if (typeof cc === 'string' && /no-cache|no-store/.test(cc)) return 'bypass';
    return 'auto';
  };

  /** Times an upstream-bound wait, so `x-clawperf-overhead-ms` leaves it out. */
  const timed = async <R>(request: FastifyRequest, fn: () => Promise<R>): Promise<R> => {
    const t0 = performance.now();
    try {
      return await fn();
    } finally {
      request.clawperf.upstreamMs += performance.now() - t0;
    }
  };

  /**
   * `cache.getOrSet`, but the caller whose factory ran gets the value as soon as it is produced, without
   * waiting for the cache's writes (Redis, disk): a miss then costs the client nothing for storing it.
   * Coalesced callers still wait for the cache as usual; a failed factory rejects and stores nothing.
   */
  const loadThrough = <V>(key: string, factory: () => Promise<V>, tags: string[]): Promise<V> => {
    let produced!: (value: V) => void;
    const early = new Promise<V>((resolve) => {
      produced = resolve;
    });
    const stored = cache.getOrSet(
      key,
      async () => {
        const value = await factory();
        produced(value);
        return value;
      },
      { tags },
    ) as Promise<V>;
    stored.catch(() => {});
    return Promise.race([stored, early]);
  };

  const safeGet = async (key: string): Promise<unknown> => {
    try {
      return await cache.get(key);
    } catch {
      return undefined;
    }
  };

  const setSpan = (
    request: FastifyRequest,
    operation: 'chat' | 'embeddings',
    model: string,
    answer?: unknown,
  ) => {
    const span = requestSpan(request);
    // Without an exporter the request span records nothing: skip building its attributes.
    if (span === undefined || !span.isRecording()) return;
    span.setAttributes(genAIAttributes(genAIRequest(operation, model)));
    span.setAttribute('clawperf.cache', request.clawperf.cache);
    if (answer !== undefined) setGenAIUsage(span, usageFromResponse(answer));
  };

  return { tenantOf, checkModel, admit, settle, cacheMode, timed, loadThrough, safeGet, setSpan };
}
