/**
 * The steps a model route takes, as methods a reader reaches by go-to-definition: the tenant from the API
 * key, the model check, rate-limit admission and settlement, the cache mode, the one cache lookup, and the
 * one place an answer is recorded. Routes receive it as their {@link GatewayContext}.
 *
 * @module
 */
import { timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { Counter, type Registry } from 'prom-client';
import type { CacheOutcome, MultiLevelCache } from '../cache/index.ts';
import type { RateLimiter, Reservation } from '../concurrency/index.ts';
import {
  genAIAttributes,
  requestSpan,
  setGenAIUsage,
  type TokenUsage,
  usageFromResponse,
} from '../tracing/index.ts';
import type { GatewayConfig } from './config.ts';
import {
  CACHE_HEADER,
  type CacheState,
  clientKey,
  digest,
  ENDPOINT_CALLS,
  type Endpoint,
  type GatewayCounts,
} from './context.ts';
import { retrySeconds } from './error-answers.ts';
import type { GuardedUpstream } from './guarded-upstream.ts';
import { LOCAL_CHAT_MODEL, LOCAL_EMBED_MODEL, LOCAL_MODELS } from './local-upstream.ts';
import { type ApiError, apiError } from './openai.ts';
import { PROMPT_CACHE_HEADER, PromptCacheMetrics, promptCacheHeader } from './prompt-cache-metrics.ts';
import { type PromptEvent, PromptSessions, sessionOf } from './prompt-sessions.ts';
import type { Api } from './upstream-interface.ts';

const LOOPBACK = /^(127\.|::1$|::ffff:127\.)/;
const always = () => true;

/** What the steps use. */
export interface RequestStepsOptions {
  config: GatewayConfig;
  cache: MultiLevelCache<unknown>;
  upstream: GuardedUpstream;
  /** Whether a configured upstream serves `model` in `api` (the local models aside). */
  serves: (api: Api, model: string) => boolean;
  limiter: RateLimiter | undefined;
  counts: GatewayCounts;
  /** Where `clawperf_gateway_answers_total` is registered. */
  registry: Registry;
  /** Where prompt-cache breaks and stalls are logged. */
  log: (event: PromptEvent) => void;
}

/** One answer the provider produced, as the prompt-cache accounting reads it. */
export interface AnsweredTurn {
  tenant: string;
  api: Api;
  model: string;
  /** The body sent upstream. */
  body: Record<string, unknown>;
  usage: TokenUsage | undefined;
}

/** A cache lookup's outcome as the request's cache state: a stale value served is a hit. */
const CACHE_STATE: Readonly<Record<CacheOutcome, CacheState>> = {
  hit: 'hit',
  stale: 'hit',
  miss: 'miss',
  coalesced: 'coalesced',
};

/** The steps of a model route, and the components they share (see docs/architecture.md). */
export class RequestSteps {
  readonly config: GatewayConfig;
  readonly cache: MultiLevelCache<unknown>;
  /** Every model call: backpressure, spans, GenAI metrics, the local models and the HTTP upstream. */
  readonly upstream: GuardedUpstream;
  readonly counts: GatewayCounts;
  readonly #serves: (api: Api, model: string) => boolean;
  readonly #limiter: RateLimiter | undefined;
  readonly #keys: readonly { digest: Buffer; tenant: string }[];
  readonly #answers: Counter;
  /** One child per label pair, so an answer does not hash its labels again. */
  readonly #answerChildren = new Map<string, { inc(): void }>();
  readonly #promptCache: PromptCacheMetrics;
  /** Break detection per session; `undefined` when it is off. */
  readonly #sessions: PromptSessions | undefined;

  constructor(options: RequestStepsOptions) {
    this.config = options.config;
    this.cache = options.cache;
    this.upstream = options.upstream;
    this.counts = options.counts;
    this.#serves = options.serves;
    this.#limiter = options.limiter;
    this.#keys = Object.entries(options.config.apiKeys).map(([key, tenant]) => ({
      digest: digest(key),
      tenant,
    }));
    this.#promptCache = new PromptCacheMetrics(options.registry);
    const maxSessions = options.config.promptCacheMaxSessions;
    this.#sessions =
      maxSessions === 0
        ? undefined
        : new PromptSessions({ registry: options.registry, log: options.log, maxSessions });
    this.#answers = new Counter({
      name: 'clawperf_gateway_answers_total',
      help: 'Answers by endpoint and cache outcome',
      labelNames: ['endpoint', 'cache'],
      registers: [options.registry],
    });
  }

  /** The tenant of the request's API key, or the error answer for a missing or wrong key. */
  tenantOf(request: FastifyRequest): string | ApiError {
    if (this.#keys.length === 0) {
      if (LOOPBACK.test(request.socket.remoteAddress ?? '')) {
        request.clawperf.tenant = 'default';
        return 'default';
      }
      return apiError(
        401,
        'this gateway has no API keys configured and only serves clients on loopback; set GATEWAY_API_KEYS',
        'invalid_request_error',
        'invalid_api_key',
      );
    }
    const key = clientKey(request.headers);
    if (key !== undefined) {
      const d = digest(key);
      for (const entry of this.#keys) {
        if (timingSafeEqual(d, entry.digest)) {
          request.clawperf.tenant = entry.tenant;
          return entry.tenant;
        }
      }
    }
    return apiError(
      401,
      key === undefined
        ? 'you must provide an API key (Authorization: Bearer <key>, or x-api-key: <key>)'
        : 'incorrect API key provided',
      'invalid_request_error',
      'invalid_api_key',
    );
  }

  /** An error answer when `model` cannot serve `endpoint` here. */
  checkModel(model: string, endpoint: Endpoint): ApiError | undefined {
    const wrongLocal = endpoint === 'embeddings' ? model === LOCAL_CHAT_MODEL : model === LOCAL_EMBED_MODEL;
    if (wrongLocal) {
      return apiError(
        400,
        `the local model ${model} does not serve ${endpoint}`,
        'invalid_request_error',
        'model_not_supported',
        'model',
      );
    }
    const { api } = ENDPOINT_CALLS[endpoint];
    if (LOCAL_MODELS.includes(model) || this.#serves(api, model)) return undefined;
    const served = endpoint === 'embeddings' ? LOCAL_EMBED_MODEL : LOCAL_CHAT_MODEL;
    const upstream = api === 'anthropic' ? 'an Anthropic upstream (--anthropic-upstream)' : 'an upstream';
    return apiError(
      404,
      `the model ${model} does not exist here; no deployment serves it, and without ${upstream} this route serves ${served}`,
      'invalid_request_error',
      'model_not_found',
      'model',
    );
  }

  /** Charges the tenant's limits; an error answer when refused, undefined when no limits are set. */
  async admit(
    request: FastifyRequest,
    tenant: string,
    tokens: number,
  ): Promise<Reservation | ApiError | undefined> {
    if (this.#limiter === undefined) return undefined;
    const reservation = await this.#limiter.reserve(tenant, { cost: 1, tokens });
    request.clawperf.limit = reservation;
    if (reservation.allowed) return reservation;
    this.counts.rateLimited++;
    const type = reservation.policy === 'tokens' ? 'tokens' : 'requests';
    if (reservation.retryAfterMs === undefined) {
      // No wait makes room for it: no Retry-After, so an obedient client does not retry it for ever.
      return apiError(
        429,
        `the request needs more ${type} than the whole per-minute limit of ${reservation.limit}: it can never pass; make it smaller`,
        type,
        'rate_limit_exceeded',
      );
    }
    return apiError(
      429,
      `rate limit reached for ${type} (limit ${reservation.limit} per minute); retry in ${Math.ceil(reservation.retryAfterMs / 1000)} s`,
      type,
      'rate_limit_exceeded',
      null,
      { 'retry-after': retrySeconds(reservation.retryAfterMs) },
    );
  }

  /** Corrects a reservation to the tokens really used (nothing when unknown). */
  settle(reservation: Reservation | undefined, tokens: number | undefined): void {
    if (reservation === undefined || tokens === undefined) return;
    reservation.settle({ cost: 1, tokens }).catch(() => {});
  }

  /** The request's cache mode from `x-clawperf-cache` and `cache-control`. */
  cacheMode(request: FastifyRequest): 'bypass' | 'force' | 'auto' {
    const h = request.headers[CACHE_HEADER];
    if (h === 'bypass') return 'bypass';
    if (h === 'force') return 'force';
    const cc = request.headers['cache-control'];
    if (typeof cc === 'string' && /no-cache|no-store/.test(cc)) return 'bypass';
    return 'auto';
  }

  /**
   * Times an upstream-bound wait, so `x-clawperf-overhead-ms` leaves it out; with `waited`, only when the
   * result says the wait was the upstream's (a cache hit is the gateway's own time).
   */
  async timed<R>(
    request: FastifyRequest,
    fn: () => Promise<R>,
    waited: (result: R) => boolean = always,
  ): Promise<R> {
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
  }

  /**
   * The cached value of `key`, or `factory`'s result, cached, with how it was had: one lookup of every
   * level. The request whose factory ran gets its value without waiting for the cache's writes.
   */
  lookup<V>(
    key: string,
    factory: () => Promise<V>,
    tags: string[],
  ): Promise<{ value: V; cache: CacheState }> {
    let produced!: (result: { value: V; cache: CacheState }) => void;
    const early = new Promise<{ value: V; cache: CacheState }>((resolve) => {
      produced = resolve;
    });
    const stored = this.cache
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
  }

  /**
   * After an answer the provider produced (not a cached one): counts its prompt-cache figures, puts them in
   * `x-clawperf-prompt-cache` when `reply` has not been sent (a stream's headers leave before its usage
   * exists), and compares the prompt with its session's last one, off the request's path.
   */
  answered(request: FastifyRequest, turn: AnsweredTurn, reply?: FastifyReply): void {
    if (turn.usage !== undefined) {
      this.#promptCache.record(turn.tenant, turn.model, turn.usage);
      if (reply !== undefined && !reply.sent)
        reply.header(PROMPT_CACHE_HEADER, promptCacheHeader(turn.usage));
    }
    const sessions = this.#sessions;
    // A response that continues a stored one carries only its new input: there is no prefix to compare.
    if (sessions === undefined || turn.body.previous_response_id != null) return;
    const session = sessionOf(request.headers, turn.api, turn.body);
    if (session !== undefined) setImmediate(() => sessions.observe({ ...turn, session }));
  }

  /**
   * Records how a request was answered, once: its state (the `x-clawperf-cache` header), the gateway's
   * counts, `clawperf_gateway_answers_total` and the request span's GenAI attributes (with the usage, given
   * the answer).
   */
  record(
    request: FastifyRequest,
    endpoint: Endpoint,
    model: string,
    state: CacheState,
    items: number,
    answer?: unknown,
  ): void {
    const counts = this.counts;
    const s = request.clawperf;
    s.cache = state;
    s.recorded = true;
    s.answer = answer;
    counts.servedItems += items;
    if (state === 'hit') counts.cacheHits++;
    else if (state === 'miss') counts.cacheMisses++;
    else if (state === 'coalesced') counts.cacheCoalesced++;
    else counts.cacheBypass++;
    const id = `${endpoint}:${state}`;
    let child = this.#answerChildren.get(id);
    if (child === undefined) {
      child = this.#answers.labels({ endpoint, cache: state });
      this.#answerChildren.set(id, child);
    }
    child.inc();
    const span = requestSpan(request);
    // Without an exporter the request span records nothing: skip building its attributes.
    if (span === undefined || !span.isRecording()) return;
    const { api, operation } = ENDPOINT_CALLS[endpoint];
    span.setAttributes(genAIAttributes(this.upstream.describe(api, operation, model)));
    span.setAttribute('clawperf.cache', state);
    if (answer !== undefined) setGenAIUsage(span, usageFromResponse(answer));
  }
}
