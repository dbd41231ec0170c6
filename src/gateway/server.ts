/**
 * `clawperf gateway`: an OpenAI-compatible HTTP service composed of every clawperf component through its
 * public entry point: the multi-level cache, the request batcher, per-tenant rate limits, backpressure,
 * metrics, tracing and profiling.
 *
 * @module
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { pipeline, Readable, Transform } from 'node:stream';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { Counter, Histogram } from 'prom-client';
import { DEFAULT_MAX_VALUE_BYTES, MultiLevelCache } from '../cache/index.ts';
import {
  OutboundLimiter,
  RateLimiter,
  type RateLimitPolicy,
  type RateLimitResult,
  RequestBatcher,
  type Reservation,
} from '../concurrency/index.ts';
import {
  BatchItemError,
  CircuitOpenError,
  ClawperfError,
  ClosedError,
  OverloadedError,
  QueueTimeoutError,
  RateLimitedError,
  TimeoutError,
  UpstreamError,
} from '../errors.ts';
import { MetricsCollector, PrometheusExporter, type Trackable } from '../metrics/index.ts';
import { createProfilingHandler } from '../profiling/index.ts';
import { BackpressureController, MemoryManager } from '../resources/index.ts';
import {
  fastifyTracing,
  GEN_AI_DURATION_BUCKETS,
  GEN_AI_TOKEN_USAGE_BUCKETS,
  type GenAIRequest,
  genAIAttributes,
  requestSpan,
  setGenAIUsage,
  Tracer,
  usageFromResponse,
  withGenAISpan,
} from '../tracing/index.ts';
import { type GatewayConfig, resolveConfig } from './config.ts';
import { DashboardFeed, dashboardPage } from './dashboard.ts';
import { WriteBehindDiskStore } from './disk-writer.ts';
import {
  LOCAL_CHAT_MODEL,
  LOCAL_EMBED_MODEL,
  LOCAL_MODELS,
  LOCAL_OWNER,
  LocalUpstream,
} from './local-upstream.ts';
import {
  type ApiError,
  apiError,
  type ChatRequest,
  type EmbeddingsRequest,
  estimateTokens,
  parseChatRequest,
  parseEmbeddingsRequest,
  toBase64,
  totalTokens,
} from './openai.ts';
import { UpstreamClient } from './upstream.ts';

/** Provider name recorded on spans of calls answered by the built-in local models. */
export const LOCAL_PROVIDER = 'clawperf.local';
/** Completion tokens assumed for a TPM reservation when the request sets no `max_tokens`. @default 256 */
export const DEFAULT_COMPLETION_ESTIMATE = 256;

/** A running gateway. */
export interface Gateway {
  app: FastifyInstance;
  config: GatewayConfig;
  /** The cache, for tests and embedding applications. */
  cache: MultiLevelCache<unknown>;
  /** Counters of the gateway itself. */
  stats(): GatewayStats;
  /** Stops accepting, finishes in-flight requests (bounded by `drainTimeoutMs`), then closes every component. Idempotent. */
  close(): Promise<void>;
}

/** Counters of the gateway itself (exported as `clawperf_gateway_*`). */
export interface GatewayStats {
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
  /** Answers that needed no upstream call of their own: servedItems - upstreamCalls. */
  upstreamCallsSaved: number;
}

/** What one request carries through the hooks. */
interface RequestState {
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

interface EmbedItem {
  model: string;
  dimensions: number | undefined;
  input: string | number[];
}

interface EmbedValue {
  /** The vector. */
  e: number[];
  /** Tokens of the input. */
  t: number;
}

const LOOPBACK = /^(127\.|::1$|::ffff:127\.)/;
const CACHE_HEADER = 'x-clawperf-cache';

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('base64url');
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

function bearer(headers: IncomingHttpHeaders): string | undefined {
  const auth = headers.authorization;
  if (typeof auth !== 'string' || !auth.startsWith('Bearer ')) return undefined;
  return auth.slice(7).trim();
}

/** The cause chain's first error that says something about the upstream or admission. */
function rootCause(error: unknown): unknown {
  let e = error;
  for (let i = 0; i < 5 && e instanceof BatchItemError && e.cause !== undefined; i++) e = e.cause;
  return e;
}

function retrySeconds(ms: number | undefined): string {
  return String(Math.max(1, Math.ceil((ms ?? 1000) / 1000)));
}

/** Maps a failure to the OpenAI-style error answer the client gets. */
export function errorAnswer(error: unknown): ApiError {
  const e = rootCause(error);
  if (e instanceof UpstreamError) {
    const answer = e.cause as { status?: number; body?: unknown } | undefined;
    if (e.status !== undefined && e.status < 500 && e.status !== 429 && answer?.body !== undefined) {
      const body = answer.body as {
        error?: { message?: unknown; type?: unknown; code?: unknown; param?: unknown };
      };
      const err = body?.error;
      return apiError(
        e.status,
        typeof err?.message === 'string' ? err.message : `the upstream answered ${e.status}`,
        typeof err?.type === 'string' ? err.type : 'invalid_request_error',
        typeof err?.code === 'string' ? err.code : null,
        typeof err?.param === 'string' ? err.param : null,
      );
    }
    if (e.status === 429) {
      return apiError(
        503,
        'the upstream is rate limiting; retry later',
        'server_error',
        'upstream_rate_limited',
        null,
        {
          'retry-after': retrySeconds(e.retryAfterMs),
        },
      );
    }
    return apiError(502, e.message, 'server_error', 'upstream_error');
  }
  if (e instanceof TimeoutError) return apiError(504, e.message, 'server_error', 'upstream_timeout');
  if (e instanceof CircuitOpenError) {
    return apiError(503, e.message, 'server_error', 'upstream_unavailable', null, {
      'retry-after': retrySeconds(e.retryAfterMs),
    });
  }
  if (e instanceof OverloadedError) {
    return apiError(503, e.message, 'server_error', 'overloaded', null, {
      'retry-after': retrySeconds(e.retryAfterMs),
    });
  }
  if (e instanceof QueueTimeoutError) {
    return apiError(503, e.message, 'server_error', 'overloaded', null, { 'retry-after': '1' });
  }
  if (e instanceof RateLimitedError) {
    return apiError(
      503,
      `the upstream's rate limit is exhausted: ${e.message}`,
      'server_error',
      'upstream_rate_limited',
      null,
      {
        'retry-after': retrySeconds(e.retryAfterMs),
      },
    );
  }
  if (e instanceof ClosedError) {
    return apiError(503, 'the gateway is shutting down', 'server_error', 'shutting_down', null, {
      'retry-after': '1',
    });
  }
  return apiError(500, 'internal error', 'server_error', e instanceof ClawperfError ? e.code : null);
}

function sendError(reply: FastifyReply, error: ApiError): FastifyReply {
  if (error.headers !== undefined) reply.headers(error.headers);
  return reply.code(error.status).send(error.body);
}

function isApiError(value: unknown): value is ApiError {
  return value !== null && typeof value === 'object' && 'status' in value && 'body' in value;
}

/**
 * Without an OTLP endpoint nothing is recorded (sample ratio 0), but every request still gets a span
 * context, so every answer carries a `traceparent`; a span a caller's sampled trace forces is discarded.
 */
const discardSpans = {
  export(_spans: unknown[], done: (result: { code: number }) => void): void {
    done({ code: 0 });
  },
  shutdown: async (): Promise<void> => {},
  forceFlush: async (): Promise<void> => {},
};

/**
 * Builds the gateway (not listening: call `app.listen` or use {@link startGateway}).
 *
 * @throws {ConfigError} naming the setting, for an invalid configuration.
 */
export async function createGateway(input: Partial<GatewayConfig> = {}): Promise<Gateway> {
  const config = resolveConfig(input);
  const local = new LocalUpstream({ chatLatencyMs: config.localChatLatencyMs });
  const outbound =
    config.upstreamUrl === undefined ? undefined : new OutboundLimiter({ maxWaitMs: config.queueTimeoutMs });
  const upstream =
    config.upstreamUrl === undefined
      ? undefined
      : new UpstreamClient({
          baseUrl: config.upstreamUrl,
          apiKey: config.upstreamApiKey,
          timeoutMs: config.upstreamTimeoutMs,
          retries: config.upstreamRetries,
          connections: config.upstreamConnections,
          outbound,
        });
  const disk = config.cacheDir === false ? undefined : new WriteBehindDiskStore({ dir: config.cacheDir });
  const cache = new MultiLevelCache<unknown>({
    l1: { maxEntries: config.l1MaxEntries },
    disk: disk ?? false,
    redis: config.redisUrl,
    namespace: 'clawperf:gw',
    defaultTtlMs: config.cacheTtlMs,
  });
  // A store failure is counted in the cache's stats and never reaches a request.
  cache.on('error', () => {});
  cache.on('degraded', () => {});
  const limiter =
    config.limits === undefined
      ? undefined
      : new RateLimiter({
          policies: [
            ...(config.limits.rpm === undefined
              ? []
              : [
                  {
                    name: 'requests',
                    windowMs: 60_000,
                    limit: config.limits.rpm,
                    unit: 'requests',
                  } as RateLimitPolicy,
                ]),
            ...(config.limits.tpm === undefined
              ? []
              : [
                  {
                    name: 'tokens',
                    windowMs: 60_000,
                    limit: config.limits.tpm,
                    unit: 'tokens',
                  } as RateLimitPolicy,
                ]),
          ],
          redis: config.redisUrl,
          keyPrefix: 'clawperf:gw:rl',
        });
  limiter?.on('store-error', () => {});
  const backpressure = new BackpressureController({
    maxConcurrency: config.maxConcurrency,
    maxQueueSize: config.maxQueueSize,
    queueTimeoutMs: config.queueTimeoutMs,
    name: 'upstream',
  });
  const memory = new MemoryManager();
  const collector = new MetricsCollector({ intervalMs: 1000 });
  const prometheus = new PrometheusExporter({ collector });
  const profiling = createProfilingHandler({ token: config.adminToken });
  const tracer = new Tracer({
    serviceName: 'clawperf-gateway',
    ...(config.otlpUrl === undefined
      ? { exporter: discardSpans as never, processor: 'simple' as const, sampleRatio: 0 }
      : { exporter: 'otlp' as const, otlpUrl: config.otlpUrl }),
  });
  const genAIDuration = new Histogram({
    name: 'gen_ai_client_operation_duration_seconds',
    help: 'GenAI operation duration (gen_ai.client.operation.duration), upstream calls only',
    labelNames: ['gen_ai_operation_name', 'gen_ai_request_model', 'gen_ai_provider_name', 'error_type'],
    buckets: [...GEN_AI_DURATION_BUCKETS],
    registers: [collector.registry],
  });
  const genAITokens = new Histogram({
    name: 'gen_ai_client_token_usage',
    help: 'Tokens used per GenAI operation (gen_ai.client.token.usage), upstream calls only',
    labelNames: [
      'gen_ai_operation_name',
      'gen_ai_request_model',
      'gen_ai_provider_name',
      'gen_ai_token_type',
    ],
    buckets: [...GEN_AI_TOKEN_USAGE_BUCKETS],
    registers: [collector.registry],
  });
  const answers = new Counter({
    name: 'clawperf_gateway_answers_total',
    help: 'Answers by endpoint and cache outcome',
    labelNames: ['endpoint', 'cache'],
    registers: [collector.registry],
  });

  const counts = {
    requests: 0,
    errors4xx: 0,
    errors5xx: 0,
    cacheHits: 0,
    cacheMisses: 0,
    cacheBypass: 0,
    rateLimited: 0,
    overloaded: 0,
    upstreamCalls: 0,
    upstreamItems: 0,
    servedItems: 0,
    inFlight: 0,
  };
  const stats = (): GatewayStats => ({
    ...counts,
    upstreamCallsSaved: Math.max(0, counts.servedItems - counts.upstreamCalls),
  });
  const feed = new DashboardFeed({
    cache,
    backpressure,
    limiter,
    batcherStats: () => batcher.stats(),
    stats,
  });

  const genAIRequest = (operation: 'chat' | 'embeddings', model: string): GenAIRequest => {
    const isLocal = LOCAL_MODELS.includes(model);
    return {
      operation,
      model,
      provider: isLocal ? LOCAL_PROVIDER : 'openai',
      ...(isLocal || upstream === undefined
        ? {}
        : { serverAddress: upstream.host, serverPort: upstream.port }),
    };
  };

  /** Label children by label values: a child observes without prom-client validating labels each time. */
  const children = new Map<string, { observe(value: number): void }>();
  const child = (
    histogram: Histogram,
    operation: string,
    model: string,
    provider: string,
    last: [string, string],
  ) => {
    const id = `${histogram === genAIDuration ? 'd' : 't'}\u0000${operation}\u0000${model}\u0000${last[1]}`;
    let c = children.get(id);
    if (c === undefined) {
      c = histogram.labels({
        gen_ai_operation_name: operation,
        gen_ai_request_model: model,
        gen_ai_provider_name: provider,
        [last[0]]: last[1],
      });
      children.set(id, c);
    }
    return c;
  };
  // Without an exporter a client span would be discarded: skip making it (the request span stays, for `traceparent`).
  const clientSpans = config.otlpUrl !== undefined;

  /** Runs one upstream call under backpressure, in a GenAI client span, and records the GenAI metrics. */
  const upstreamCall = async <R>(
    operation: 'chat' | 'embeddings',
    model: string,
    items: number,
    fn: () => Promise<R>,
  ): Promise<R> => {
    const request = genAIRequest(operation, model);
    const provider = request.provider;
    const start = performance.now();
    try {
      const result = await backpressure.run(() => {
        counts.upstreamCalls++;
        counts.upstreamItems += items;
        return clientSpans ? withGenAISpan(tracer, request, fn) : fn();
      });
      child(genAIDuration, operation, model, provider, ['error_type', '']).observe(
        (performance.now() - start) / 1e3,
      );
      const usage = usageFromResponse(result);
      if (usage.inputTokens !== undefined)
        child(genAITokens, operation, model, provider, ['gen_ai_token_type', 'input']).observe(
          usage.inputTokens,
        );
      if (usage.outputTokens !== undefined)
        child(genAITokens, operation, model, provider, ['gen_ai_token_type', 'output']).observe(
          usage.outputTokens,
        );
      return result;
    } catch (error) {
      const e = rootCause(error);
      if (e instanceof OverloadedError || e instanceof QueueTimeoutError) counts.overloaded++;
      child(genAIDuration, operation, model, provider, [
        'error_type',
        e instanceof ClawperfError ? e.code : 'error',
      ]).observe((performance.now() - start) / 1e3);
      throw error;
    }
  };

  /** An upstream answer that is not a success becomes an error, so nothing caches it. */
  const expectSuccess = <B>(answer: { status: number; body: B }): B => {
    if (answer.status >= 300) {
      throw new UpstreamError(
        `the upstream answered ${answer.status}`,
        { status: answer.status },
        { cause: answer },
      );
    }
    return answer.body;
  };

  const embedGroup = async (
    model: string,
    dimensions: number | undefined,
    inputs: (string | number[])[],
  ): Promise<EmbedValue[]> => {
    if (model === LOCAL_EMBED_MODEL) {
      return upstreamCall('embeddings', model, inputs.length, async () => {
        const { vectors, tokens } = local.embed(inputs, dimensions);
        return vectors.map((e, i) => ({ e, t: tokens[i]! }));
      });
    }
    const body = await upstreamCall('embeddings', model, inputs.length, async () =>
      expectSuccess(
        await upstream!.postJson(
          '/embeddings',
          {
            model,
            input: inputs,
            encoding_format: 'float',
            ...(dimensions === undefined ? {} : { dimensions }),
          },
          {
            tokens: inputs.reduce<number>(
              (n, i) => n + (typeof i === 'string' ? estimateTokens(i) : i.length),
              0,
            ),
          },
        ),
      ),
    );
    const data = (body as { data?: unknown }).data;
    if (!Array.isArray(data) || data.length !== inputs.length) {
      throw new UpstreamError('the upstream answered embeddings of the wrong shape', { status: 200 });
    }
    const estimates = inputs.map((i) => (typeof i === 'string' ? estimateTokens(i) : i.length));
    const sum = estimates.reduce((a, b) => a + b, 0) || 1;
    const total = totalTokens(body) ?? sum;
    const vectors = new Array<number[]>(inputs.length);
    for (const d of data as { index?: unknown; embedding?: unknown }[]) {
      const index = typeof d?.index === 'number' ? d.index : -1;
      if (index < 0 || index >= inputs.length || !Array.isArray(d.embedding)) {
        throw new UpstreamError('the upstream answered an embedding without a valid index or vector', {
          status: 200,
        });
      }
      vectors[index] = d.embedding as number[];
    }
    return vectors.map((e, i) => ({ e, t: Math.round((total * estimates[i]!) / sum) }));
  };

  const batcher = new RequestBatcher<EmbedItem, EmbedValue>(
    async (items) => {
      const groups = new Map<string, number[]>();
      items.forEach((item, i) => {
        const id = `${item.model}\u0000${item.dimensions ?? ''}`;
        const group = groups.get(id);
        if (group === undefined) groups.set(id, [i]);
        else group.push(i);
      });
      const results = new Array<EmbedValue | Error>(items.length);
      await Promise.all(
        [...groups.values()].map(async (indexes) => {
          const first = items[indexes[0]!]!;
          try {
            const values = await embedGroup(
              first.model,
              first.dimensions,
              indexes.map((i) => items[i]!.input),
            );
            indexes.forEach((i, j) => {
              results[i] = values[j]!;
            });
          } catch (error) {
            for (const i of indexes) results[i] = error as Error;
          }
        }),
      );
      return results;
    },
    {
      maxBatchSize: config.batchMaxSize,
      maxWaitMs: config.batchMaxWaitMs,
      maxQueueSize: config.maxQueueSize * config.batchMaxSize,
    },
  );

  const tracked: [string, Trackable | undefined][] = [
    ['cache', cache],
    ['disk_writer', disk],
    ['batcher', batcher],
    ['backpressure', backpressure],
    ['memory', memory],
    ['local_upstream', local],
    ['tracer', tracer],
    ['prometheus', prometheus],
    ['gateway', { stats, statsCounters: Object.keys(counts).filter((k) => k !== 'inFlight') }],
    ['limiter', limiter],
    ['upstream', upstream],
    ['outbound', outbound],
  ];
  for (const [name, component] of tracked) if (component !== undefined) collector.track(name, component);

  const app = Fastify({
    bodyLimit: config.bodyLimitBytes,
    forceCloseConnections: 'idle',
    return503OnClosing: true,
    logger: false,
  });
  // Clients that POST JSON without `content-type: application/json` (curl -d) still get parsed.
  app.addContentTypeParser('*', { parseAs: 'string' }, (_request, body, done) => {
    try {
      done(null, body === '' ? undefined : JSON.parse(body as string));
    } catch (error) {
      (error as { statusCode?: number }).statusCode = 400;
      done(error as Error, undefined);
    }
  });
  app.decorateRequest('clawperf', null as unknown as RequestState);
  await app.register(fastifyTracing, { tracer });

  app.addHook('onRequest', (request, _reply, done) => {
    counts.requests++;
    counts.inFlight++;
    request.clawperf = {
      start: performance.now(),
      upstreamMs: 0,
      cache: 'bypass',
      limit: undefined,
      cacheKey: undefined,
    };
    done();
  });
  app.addHook('onSend', (request, reply, payload, done) => {
    const s = request.clawperf;
    if (s !== null && s !== undefined) {
      reply.header(CACHE_HEADER, s.cache);
      reply.header(
        'x-clawperf-overhead-ms',
        Math.max(0, performance.now() - s.start - s.upstreamMs).toFixed(3),
      );
      if (s.cacheKey !== undefined) reply.header('x-clawperf-cache-key', s.cacheKey);
      if (s.limit !== undefined) reply.headers(rateLimitHeaders(s.limit));
    }
    done(null, payload);
  });
  app.addHook('onResponse', (request, reply, done) => {
    counts.inFlight--;
    const status = reply.statusCode;
    if (status >= 500) counts.errors5xx++;
    else if (status >= 400) counts.errors4xx++;
    const s = request.clawperf;
    const ms = performance.now() - (s?.start ?? performance.now());
    collector.recordRequest({
      method: request.method,
      route: request.routeOptions.url ?? 'unknown',
      status,
      durationMs: ms,
    });
    if (request.url.startsWith('/v1/')) feed.record(ms, status);
    done();
  });

  app.setErrorHandler((error: Error & { statusCode?: number; code?: string }, request, reply) => {
    const status = error.statusCode;
    if (error.code === 'FST_ERR_CTP_BODY_TOO_LARGE' || status === 413) {
      return sendError(
        reply,
        apiError(
          413,
          `the request body is larger than the limit of ${config.bodyLimitBytes} bytes`,
          'invalid_request_error',
          'request_too_large',
        ),
      );
    }
    if (status !== undefined && status >= 400 && status < 500) {
      const json = error instanceof SyntaxError || /JSON/i.test(error.message);
      return sendError(
        reply,
        apiError(
          status,
          json ? `the request body is not valid JSON: ${error.message}` : error.message,
          'invalid_request_error',
          json ? 'invalid_json' : (error.code ?? null),
          json ? 'body' : null,
        ),
      );
    }
    const span = requestSpan(request);
    span?.recordException(error);
    return sendError(reply, errorAnswer(error));
  });
  app.setNotFoundHandler((request, reply) =>
    sendError(
      reply,
      apiError(
        404,
        `no route ${request.method} ${request.url.split('?', 1)[0]}`,
        'invalid_request_error',
        'not_found',
      ),
    ),
  );

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
    if (span === undefined) return;
    span.setAttributes(genAIAttributes(genAIRequest(operation, model)));
    span.setAttribute('clawperf.cache', request.clawperf.cache);
    if (answer !== undefined) setGenAIUsage(span, usageFromResponse(answer));
  };

  app.post('/v1/embeddings', async (request, reply) => {
    const parsed = parseEmbeddingsRequest(request.body);
    if (isApiError(parsed)) return sendError(reply, parsed);
    const req: EmbeddingsRequest = parsed;
    const wrong = checkModel(req.model, 'embeddings');
    if (wrong !== undefined) return sendError(reply, wrong);
    const tenant = tenantOf(request);
    if (typeof tenant !== 'string') return sendError(reply, tenant);
    const estimates = req.inputs.map((i) => (typeof i === 'string' ? estimateTokens(i) : i.length));
    const estimate = estimates.reduce((a, b) => a + b, 0);
    const admitted = await admit(request, tenant, estimate);
    if (isApiError(admitted)) return sendError(reply, admitted);
    setSpan(request, 'embeddings', req.model);
    const mode = cacheMode(request);
    const dims = req.dimensions;
    const keys = req.inputs.map(
      (input) =>
        `emb:${tenant}:${req.model}:${dims ?? ''}:${sha256(typeof input === 'string' ? input : JSON.stringify(input))}`,
    );
    const values = new Array<EmbedValue | undefined>(keys.length);
    if (mode !== 'bypass') {
      const found = await cache.getMany(keys).catch(() => new Array<undefined>(keys.length));
      for (let i = 0; i < keys.length; i++) values[i] = found[i] as EmbedValue | undefined;
    }
    const missing: number[] = [];
    for (let i = 0; i < keys.length; i++) if (values[i] === undefined) missing.push(i);
    request.clawperf.cache = mode === 'bypass' ? 'bypass' : missing.length === 0 ? 'hit' : 'miss';
    if (keys.length === 1) request.clawperf.cacheKey = keys[0];
    if (missing.length > 0) {
      const tags = [`tenant:${tenant}`, `model:${req.model}`];
      await timed(request, () =>
        Promise.all(
          missing.map(async (i) => {
            const item: EmbedItem = { model: req.model, dimensions: dims, input: req.inputs[i]! };
            values[i] = (
              mode === 'bypass'
                ? await batcher.add(item)
                : await loadThrough(keys[i]!, () => batcher.add(item), tags)
            ) as EmbedValue;
          }),
        ),
      );
    }
    counts.servedItems += keys.length;
    if (request.clawperf.cache === 'hit') counts.cacheHits++;
    else if (request.clawperf.cache === 'miss') counts.cacheMisses++;
    else counts.cacheBypass++;
    answers.inc({ endpoint: 'embeddings', cache: request.clawperf.cache });
    let tokens = 0;
    const data = values.map((v, index) => {
      tokens += v!.t;
      return {
        object: 'embedding',
        index,
        embedding: req.encodingFormat === 'base64' ? toBase64(v!.e) : v!.e,
      };
    });
    settle(admitted, missing.length === 0 ? 0 : tokens);
    const answer = {
      object: 'list',
      data,
      model: req.model,
      usage: { prompt_tokens: tokens, total_tokens: tokens },
    };
    setGenAIUsage(requestSpan(request)!, { inputTokens: tokens });
    return answer;
  });

  const chatOnce = async (req: ChatRequest, estimate: number): Promise<Record<string, unknown>> => {
    if (req.model === LOCAL_CHAT_MODEL) return upstreamCall('chat', req.model, 1, () => local.chat(req));
    return upstreamCall('chat', req.model, 1, async () =>
      expectSuccess(await upstream!.postJson('/chat/completions', req.body, { tokens: estimate })),
    ) as Promise<Record<string, unknown>>;
  };

  app.post('/v1/chat/completions', async (request, reply) => {
    const parsed = parseChatRequest(request.body);
    if (isApiError(parsed)) return sendError(reply, parsed);
    const req: ChatRequest = parsed;
    const wrong = checkModel(req.model, 'chat');
    if (wrong !== undefined) return sendError(reply, wrong);
    const tenant = tenantOf(request);
    if (typeof tenant !== 'string') return sendError(reply, tenant);
    const estimate = Math.ceil(req.promptChars / 4) + (req.maxTokens ?? DEFAULT_COMPLETION_ESTIMATE);
    const admitted = await admit(request, tenant, estimate);
    if (isApiError(admitted)) return sendError(reply, admitted);
    setSpan(request, 'chat', req.model);
    const mode = cacheMode(request);
    const cacheable = mode === 'force' || (mode === 'auto' && req.deterministic);
    const { stream: _stream, stream_options: _options, user: _user, ...identity } = req.body;
    const key = cacheable ? `chat:${tenant}:${sha256(JSON.stringify(identity))}` : undefined;
    const tags = [`tenant:${tenant}`, `model:${req.model}`];
    if (req.stream) {
      const cached = key === undefined ? undefined : await safeGet(key);
      if (cached === undefined) return streamChat(request, reply, req, admitted, estimate, key, tags);
      request.clawperf.cache = 'hit';
      request.clawperf.cacheKey = key;
      counts.cacheHits++;
      counts.servedItems++;
      answers.inc({ endpoint: 'chat', cache: 'hit' });
      settle(admitted, 0);
      reply.header('content-type', 'text/event-stream; charset=utf-8');
      reply.header('cache-control', 'no-cache');
      return reply.send(Readable.from(replayStream(cached, req.body.stream_options)));
    }
    let answer: unknown;
    if (key === undefined) {
      request.clawperf.cache = 'bypass';
      counts.cacheBypass++;
      answer = await timed(request, () => chatOnce(req, estimate));
    } else {
      request.clawperf.cacheKey = key;
      answer = await safeGet(key);
      if (answer !== undefined) {
        request.clawperf.cache = 'hit';
        counts.cacheHits++;
      } else {
        request.clawperf.cache = 'miss';
        counts.cacheMisses++;
        answer = await timed(request, () => loadThrough(key, () => chatOnce(req, estimate), tags));
      }
    }
    counts.servedItems++;
    answers.inc({ endpoint: 'chat', cache: request.clawperf.cache });
    settle(admitted, request.clawperf.cache === 'hit' ? 0 : totalTokens(answer));
    setSpan(request, 'chat', req.model, answer);
    return answer;
  });

  const streamChat = async (
    request: FastifyRequest,
    reply: FastifyReply,
    req: ChatRequest,
    admitted: Reservation | undefined,
    estimate: number,
    key: string | undefined,
    tags: string[],
  ): Promise<FastifyReply> => {
    request.clawperf.cache = key === undefined ? 'bypass' : 'miss';
    if (key === undefined) counts.cacheBypass++;
    else {
      request.clawperf.cacheKey = key;
      counts.cacheMisses++;
    }
    const abort = new AbortController();
    reply.raw.once('close', () => {
      if (!reply.raw.writableFinished) abort.abort(new Error('the client went away'));
    });
    // The token limit settles from `usage`, so the gateway asks for it; a client that did not ask never sees it.
    const options = req.body.stream_options as Record<string, unknown> | undefined;
    const clientWantsUsage = options?.include_usage === true;
    const withUsage: ChatRequest = clientWantsUsage
      ? req
      : { ...req, body: { ...req.body, stream_options: { ...options, include_usage: true } } };
    let body: Readable;
    if (req.model === LOCAL_CHAT_MODEL) {
      counts.upstreamCalls++;
      counts.upstreamItems++;
      body = local.chatStream(withUsage, abort.signal);
    } else {
      const answer = await timed(request, () =>
        upstreamCall('chat', req.model, 1, () =>
          upstream!.postStream('/chat/completions', withUsage.body, {
            tokens: estimate,
            signal: abort.signal,
          }),
        ),
      );
      if (answer.status >= 300) {
        expectSuccess(answer);
      }
      body = answer.body as Readable;
    }
    counts.servedItems++;
    answers.inc({ endpoint: 'chat', cache: request.clawperf.cache });
    const tap = new StreamTap({
      dropUsage: !clientWantsUsage,
      assemble: key !== undefined,
      maxBytes: DEFAULT_MAX_VALUE_BYTES,
    });
    pipeline(body, tap, (error) => {
      settle(admitted, tap.total);
      if (error !== undefined || key === undefined) return;
      const completion = tap.completion();
      if (completion !== undefined) cache.set(key, completion, { tags }).catch(() => {});
    });
    reply.header('content-type', 'text/event-stream; charset=utf-8');
    reply.header('cache-control', 'no-cache');
    return reply.send(tap);
  };

  app.get('/v1/models', async () => {
    const created = Math.floor(Date.now() / 1000);
    const data: unknown[] = LOCAL_MODELS.map((id) => ({
      id,
      object: 'model',
      created,
      owned_by: LOCAL_OWNER,
    }));
    if (upstream !== undefined) {
      try {
        const answer = await upstream.getJson('/models');
        const more = (answer.body as { data?: unknown }).data;
        if (answer.status < 300 && Array.isArray(more)) data.push(...more);
      } catch {
        // The local models are still served when the upstream cannot list its own.
      }
    }
    return { object: 'list', data };
  });

  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_request, reply) => {
    const s = cache.stats();
    const redis = config.redisUrl === undefined ? 'off' : s.l2_up === 1 ? 'up' : 'down';
    const upstreamState = upstream === undefined ? 'local' : upstream.available ? 'up' : 'circuit-open';
    const ready = !closing && upstreamState !== 'circuit-open';
    return reply
      .code(ready ? 200 : 503)
      .send({ status: ready ? 'ready' : 'not-ready', upstream: upstreamState, redis });
  });
  const metricsRoute = prometheus.route();
  app.get('/metrics', (request, reply) => metricsRoute.handler(request, reply));

  const adminToken = config.adminToken === undefined ? undefined : digest(config.adminToken);
  const adminCheck = (request: FastifyRequest): ApiError | undefined => {
    if (adminToken === undefined) {
      return apiError(
        404,
        'admin endpoints are disabled: no CLAWPERF_ADMIN_TOKEN is set',
        'invalid_request_error',
        'not_found',
      );
    }
    const given = bearer(request.headers);
    if (given === undefined || !timingSafeEqual(digest(given), adminToken)) {
      return apiError(
        401,
        'a valid admin bearer token is required',
        'invalid_request_error',
        'invalid_api_key',
      );
    }
    return undefined;
  };
  app.post('/admin/cache/invalidate', async (request, reply) => {
    const denied = adminCheck(request);
    if (denied !== undefined) return sendError(reply, denied);
    const body = request.body as { key?: unknown; tag?: unknown } | undefined;
    const key = body?.key;
    const tag = body?.tag;
    if ((typeof key !== 'string' || key === '') && (typeof tag !== 'string' || tag === '')) {
      return sendError(
        reply,
        apiError(400, 'give a non-empty "key" or "tag"', 'invalid_request_error', 'invalid_value', 'key'),
      );
    }
    if (typeof key === 'string' && key !== '') await cache.del(key);
    if (typeof tag === 'string' && tag !== '') await cache.invalidateByTag(tag);
    return {
      invalidated: { key: typeof key === 'string' ? key : null, tag: typeof tag === 'string' ? tag : null },
    };
  });
  const debug = async (request: FastifyRequest, reply: FastifyReply) => {
    reply.hijack();
    reply.raw.setHeader(CACHE_HEADER, 'bypass');
    await profiling(request.raw, reply.raw);
  };
  app.get('/debug/pprof/profile', debug);
  app.get('/debug/pprof/heap', debug);
  app.get('/debug/eventloop', debug);

  app.get('/', (_request, reply) => reply.type('text/html; charset=utf-8').send(dashboardPage()));
  app.get('/dashboard/uplot.js', (_request, reply) => reply.type('text/javascript').send(feed.asset('js')));
  app.get('/dashboard/uplot.css', (_request, reply) => reply.type('text/css').send(feed.asset('css')));
  app.get('/dashboard/events', (request, reply) => {
    reply.hijack();
    feed.subscribe(request.raw, reply.raw);
  });

  await cache.ready();

  let closing = false;
  let closed: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closed ??= (async () => {
      closing = true;
      feed.close();
      const drain = app.close();
      const timer = setTimeout(() => app.server.closeAllConnections(), config.drainTimeoutMs);
      timer.unref();
      await drain;
      clearTimeout(timer);
      await batcher.close();
      await backpressure.close();
      await Promise.allSettled([
        limiter?.close(),
        outbound?.close(),
        upstream?.close(),
        profiling.close(),
        memory.close(),
        collector.close(),
        prometheus.close(),
      ]);
      await cache.close();
      await tracer.close();
    })();
    return closed;
  };

  return { app, config, cache, stats, close };
}

/** A cached chat completion as the server-sent events a streaming client expects. */
function* replayStream(answer: unknown, streamOptions: unknown): Generator<string> {
  const a = answer as {
    id?: string;
    created?: number;
    model?: string;
    choices?: { index?: number; message?: { role?: string; content?: unknown }; finish_reason?: unknown }[];
    usage?: unknown;
  };
  const head = { id: a.id, object: 'chat.completion.chunk', created: a.created, model: a.model };
  const choices = a.choices ?? [];
  yield `data: ${JSON.stringify({ ...head, choices: choices.map((c, index) => ({ index: c.index ?? index, delta: { role: c.message?.role ?? 'assistant', content: c.message?.content ?? '' }, finish_reason: null })) })}\n\n`;
  yield `data: ${JSON.stringify({ ...head, choices: choices.map((c, index) => ({ index: c.index ?? index, delta: {}, finish_reason: c.finish_reason ?? 'stop' })) })}\n\n`;
  if ((streamOptions as { include_usage?: unknown } | undefined)?.include_usage === true) {
    yield `data: ${JSON.stringify({ ...head, choices: [], usage: a.usage })}\n\n`;
  }
  yield 'data: [DONE]\n\n';
}

function rateLimitHeaders(result: RateLimitResult): Record<string, string> {
  const headers: Record<string, string> = {};
  const policies: Record<string, { limit: number; remaining: number; resetMs: number }> = result.policies ?? {
    [result.policy]: { limit: result.limit, remaining: result.remaining, resetMs: result.resetMs },
  };
  for (const [name, p] of Object.entries(policies)) {
    headers[`x-ratelimit-limit-${name}`] = String(p.limit);
    headers[`x-ratelimit-remaining-${name}`] = String(Math.max(0, p.remaining));
    headers[`x-ratelimit-reset-${name}`] = `${Math.ceil(p.resetMs)}ms`;
  }
  return headers;
}

interface AssembledChoice {
  index: number;
  role: string;
  content: string;
  finish: unknown;
}

/**
 * Sits between a streamed chat completion and the client, event by event (backpressure is the pipe's): it
 * reads `usage` (for the token limit's settlement), drops the usage-only chunk when the gateway asked for it
 * and the client did not, and, when `assemble` is set, rebuilds the whole `chat.completion` so the answer
 * can be cached like a non-streamed one. Anything it cannot rebuild exactly (tool calls, refusals, a stream
 * without `[DONE]`) is passed on untouched and not assembled.
 */
class StreamTap extends Transform {
  total: number | undefined;
  #tail = '';
  #done = false;
  #assemble: boolean;
  #bytes = 0;
  readonly #dropUsage: boolean;
  readonly #maxBytes: number;
  #head: { id?: unknown; created?: unknown; model?: unknown; system_fingerprint?: unknown } = {};
  #usage: unknown;
  readonly #choices = new Map<number, AssembledChoice>();

  constructor(options: { dropUsage: boolean; assemble: boolean; maxBytes: number }) {
    super();
    this.#dropUsage = options.dropUsage;
    this.#assemble = options.assemble;
    this.#maxBytes = options.maxBytes;
  }

  override _transform(chunk: Buffer | string, _encoding: BufferEncoding, callback: () => void): void {
    const text = this.#tail + (typeof chunk === 'string' ? chunk : chunk.toString('utf8'));
    const end = text.lastIndexOf('\n\n');
    if (end === -1) {
      this.#tail = text;
      callback();
      return;
    }
    this.#tail = text.slice(end + 2);
    let out = '';
    for (const event of text.slice(0, end).split('\n\n')) {
      if (this.#event(event)) out += `${event}\n\n`;
    }
    if (out !== '') this.push(out);
    callback();
  }

  override _flush(callback: () => void): void {
    if (this.#tail !== '') {
      if (this.#event(this.#tail)) this.push(this.#tail);
      this.#tail = '';
    }
    callback();
  }

  /** Reads one event; false when it is to be dropped. */
  #event(event: string): boolean {
    if (this.#assemble) {
      this.#bytes += event.length;
      if (this.#bytes > this.#maxBytes) this.#assemble = false;
    }
    const data = event.startsWith('data: ') ? event.slice(6).trim() : undefined;
    if (data === undefined) return true;
    if (data === '[DONE]') {
      this.#done = true;
      return true;
    }
    if (!data.startsWith('{')) return true;
    let chunk: {
      id?: unknown;
      created?: unknown;
      model?: unknown;
      system_fingerprint?: unknown;
      choices?: { index?: unknown; delta?: Record<string, unknown>; finish_reason?: unknown }[];
      usage?: unknown;
    };
    try {
      chunk = JSON.parse(data);
    } catch {
      // A chunk that is not JSON is passed on untouched; nothing is assembled from such a stream.
      this.#assemble = false;
      return true;
    }
    const usageOnly = chunk.usage != null && Array.isArray(chunk.choices) && chunk.choices.length === 0;
    if (chunk.usage != null) {
      const t = totalTokens(chunk);
      if (t !== undefined) this.total = t;
      this.#usage = chunk.usage;
    }
    if (this.#assemble) this.#collect(chunk);
    return !(usageOnly && this.#dropUsage);
  }

  #collect(chunk: {
    id?: unknown;
    created?: unknown;
    model?: unknown;
    system_fingerprint?: unknown;
    choices?: { index?: unknown; delta?: Record<string, unknown>; finish_reason?: unknown }[];
  }): void {
    const head = this.#head;
    head.id ??= chunk.id;
    head.created ??= chunk.created;
    head.model ??= chunk.model;
    head.system_fingerprint ??= chunk.system_fingerprint;
    for (const c of chunk.choices ?? []) {
      const index = typeof c.index === 'number' ? c.index : 0;
      let choice = this.#choices.get(index);
      if (choice === undefined) {
        choice = { index, role: 'assistant', content: '', finish: null };
        this.#choices.set(index, choice);
      }
      for (const [field, value] of Object.entries(c.delta ?? {})) {
        if (value == null) continue;
        if (field === 'role' && typeof value === 'string') choice.role = value;
        else if (field === 'content' && typeof value === 'string') choice.content += value;
        // Tool calls, refusals, audio: not rebuilt, so not cached.
        else this.#assemble = false;
      }
      if (c.finish_reason != null) choice.finish = c.finish_reason;
    }
  }

  /** The whole completion, when the stream ended with `[DONE]` and every choice finished. */
  completion(): Record<string, unknown> | undefined {
    const choices = [...this.#choices.values()].sort((a, b) => a.index - b.index);
    if (!this.#assemble || !this.#done || choices.length === 0) return undefined;
    if (choices.some((c) => c.finish === null)) return undefined;
    return {
      id: this.#head.id,
      object: 'chat.completion',
      created: this.#head.created,
      model: this.#head.model,
      ...(this.#head.system_fingerprint == null ? {} : { system_fingerprint: this.#head.system_fingerprint }),
      choices: choices.map((c) => ({
        index: c.index,
        message: { role: c.role, content: c.content },
        logprobs: null,
        finish_reason: c.finish,
      })),
      ...(this.#usage === undefined ? {} : { usage: this.#usage }),
    };
  }
}

/**
 * Connections the kernel queues before the gateway accepts them (capped by `net.core.somaxconn`). Node's
 * default of 511 drops the SYNs of a larger burst of new clients, which then retry after a second: a burst
 * of 1,000 fresh connections took 1.6 s instead of 0.6 s and its embeddings went upstream in 2-3x more batches.
 */
export const LISTEN_BACKLOG = 4096;

/** Options of {@link startGateway}. */
export interface StartOptions {
  /** Where startup lines go. @default process.stderr */
  log?: (line: string) => void;
  /** Close on SIGTERM and SIGINT. @default true */
  handleSignals?: boolean;
}

/** Builds the gateway, listens on `config.host:config.port`, prints what it serves, and closes on SIGTERM/SIGINT. */
export async function startGateway(
  input: Partial<GatewayConfig> = {},
  options: StartOptions = {},
): Promise<Gateway & { url: string; closed: Promise<void> }> {
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const gateway = await createGateway(input);
  const { config } = gateway;
  let address: string;
  try {
    address = await gateway.app.listen({ port: config.port, host: config.host, backlog: LISTEN_BACKLOG });
  } catch (error) {
    await gateway.close();
    throw error;
  }
  let resolveClosed!: () => void;
  const closed = new Promise<void>((resolve) => {
    resolveClosed = resolve;
  });
  const close = async () => {
    await gateway.close();
    resolveClosed();
  };
  if (options.handleSignals !== false) {
    const onSignal = (signal: string) => {
      log(
        `clawperf gateway: ${signal} received, finishing in-flight requests (at most ${config.drainTimeoutMs} ms)`,
      );
      close().catch(() => resolveClosed());
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
    closed.then(() => {
      process.removeListener('SIGTERM', onSignal);
      process.removeListener('SIGINT', onSignal);
    });
  }
  log(`clawperf gateway listening on ${address}`);
  log(
    config.upstreamUrl === undefined
      ? `upstream: the built-in LOCAL models only (${LOCAL_MODELS.join(', ')}: simulations, not language models)`
      : `upstream: ${config.upstreamUrl} (plus the built-in LOCAL models ${LOCAL_MODELS.join(', ')})`,
  );
  log(
    `cache: memory${config.cacheDir === false ? '' : ` + disk (${config.cacheDir})`}${config.redisUrl === undefined ? '' : ' + Redis'}`,
  );
  log(config.limits === undefined ? 'limits: off' : `limits per tenant: ${JSON.stringify(config.limits)}`);
  if (Object.keys(config.apiKeys).length === 0) {
    log('auth: no API keys configured (GATEWAY_API_KEYS): open, to clients on loopback only');
  }
  log(
    `admin and debug endpoints: ${config.adminToken === undefined ? 'disabled (no CLAWPERF_ADMIN_TOKEN)' : 'enabled'}`,
  );
  log(
    `try: curl ${address}/v1/embeddings -H 'content-type: application/json' -d '{"model":"local-embed","input":"hello"}'`,
  );
  return { ...gateway, close, url: address, closed };
}
