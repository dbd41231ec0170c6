/**
 * Per-request helpers of the gateway's routes: tenant from the API key, model checks, rate-limit
 * admission and settlement, cache mode, the one cache lookup, and the one place an answer is recorded.
 *
 * @module
 */
import { timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { Counter, type Registry } from 'prom-client';
import type { CacheOutcome, MultiLevelCache } from '../cache/index.ts';
import type { RateLimiter, Reservation } from '../concurrency/index.ts';
import { genAIAttributes, requestSpan, setGenAIUsage, usageFromResponse } from '../tracing/index.ts';
import type { GatewayConfig } from './config.ts';
import {
  bearer,
  CACHE_HEADER,
  type CacheState,
  digest,
  type GatewayContext,
  type GatewayCounts,
} from './context.ts';
import { retrySeconds } from './error-answers.ts';
import type { GuardedUpstream } from './guarded-upstream.ts';
import { LOCAL_CHAT_MODEL, LOCAL_EMBED_MODEL, LOCAL_MODELS } from './local-upstream.ts';
import { type ApiError, apiError } from './openai.ts';

const LOOPBACK = /^(127\.|::1$|::ffff:127\.)/;
const always = () => true;

/** What the helpers use. */
export interface RequestHelpersOptions {
  config: GatewayConfig;
  cache: MultiLevelCache<unknown>;
  upstream: GuardedUpstream;
  /** Whether models other than the local ones are served (an upstream is configured). */
  remote: boolean;
  limiter: RateLimiter | undefined;
  counts: GatewayCounts;
  /** Where `clawperf_gateway_answers_total` is registered. */
  registry: Registry;
}

/** A cache lookup's outcome as the request's cache state: a stale value served is a hit. */
const CACHE_STATE: Readonly<Record<CacheOutcome, CacheState>> = {
  hit: 'hit',
  stale: 'hit',
  miss: 'miss',
  coalesced: 'coalesced',
};

/** The per-request helpers of {@link GatewayContext}. */
export function createRequestHelpers(
  options: RequestHelpersOptions,
): Pick<
  GatewayContext,
  'tenantOf' | 'checkModel' | 'admit' | 'settle' | 'cacheMode' | 'timed' | 'lookup' | 'record'
> {
  const { config, cache, upstream, remote, limiter, counts } = options;
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
    if (LOCAL_MODELS.includes(model) || remote) return undefined;
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
  const timed = async <R>(
    request: FastifyRequest,
    fn: () => Promise<R>,
    waited: (result: R) => boolean = always,
  ): Promise<R> => {
    const t0 = performance.now();
    let result: R;
    try {
      result = await fn();
    } catch (error) {
      request.clawperf.upstreamMs += performance.now() - t0;
      throw error;
    }
    if (waited(result)) request.clawperf.upstreamMs += performance.now() - t0;
    return result;
  };

  const lookup = <V>(
    key: string,
    factory: () => Promise<V>,
    tags: string[],
  ): Promise<{ value: V; cache: CacheState }> => {
    let produced!: (result: { value: V; cache: CacheState }) => void;
    const early = new Promise<{ value: V; cache: CacheState }>((resolve) => {
      produced = resolve;
    });
    const stored = cache
      .getOrSetWithOutcome(
        key,
        async () => {
          const value = await factory();
          produced({ value, cache: 'miss' });
          return value;
        },
        { tags },
      )
      .then((result) => ({ value: result.value as V, cache: CACHE_STATE[result.outcome] }));
    stored.catch(() => {});
    return Promise.race([stored, early]);
  };

  const answers = new Counter({
    name: 'clawperf_gateway_answers_total',
    help: 'Answers by endpoint and cache outcome',
    labelNames: ['endpoint', 'cache'],
    registers: [options.registry],
  });
  // One child per label pair, so an answer does not hash its labels again.
  const answerChildren = new Map<string, { inc(): void }>();
  const record = (
    request: FastifyRequest,
    endpoint: 'chat' | 'embeddings',
    model: string,
    state: CacheState,
    items: number,
    answer?: unknown,
  ): void => {
    request.clawperf.cache = state;
    counts.servedItems += items;
    if (state === 'hit') counts.cacheHits++;
    else if (state === 'miss') counts.cacheMisses++;
    else if (state === 'coalesced') counts.cacheCoalesced++;
    else counts.cacheBypass++;
    const id = `${endpoint}:${state}`;
    let child = answerChildren.get(id);
    if (child === undefined) {
      child = answers.labels({ endpoint, cache: state });
      answerChildren.set(id, child);
    }
    child.inc();
    const span = requestSpan(request);
    // Without an exporter the request span records nothing: skip building its attributes.
    if (span === undefined || !span.isRecording()) return;
    span.setAttributes(genAIAttributes(upstream.describe(endpoint, model)));
    span.setAttribute('clawperf.cache', state);
    if (answer !== undefined) setGenAIUsage(span, usageFromResponse(answer));
  };

  return { tenantOf, checkModel, admit, settle, cacheMode, timed, lookup, record };
}
