/**
 * `clawperf gateway`: an OpenAI-compatible HTTP service composed of every clawperf component through its
 * public entry point: the multi-level cache, the request batcher, per-tenant rate limits, backpressure,
 * metrics, tracing and profiling.
 *
 * @module
 */
import { timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { Counter, Histogram } from 'prom-client';
import { MultiLevelCache } from '../cache/index.ts';
import {
  OutboundLimiter,
  RateLimiter,
  type RateLimitPolicy,
  type Reservation,
} from '../concurrency/index.ts';
import { ClawperfError, OverloadedError, QueueTimeoutError, UpstreamError } from '../errors.ts';
import { MetricsCollector, PrometheusExporter, type Trackable } from '../metrics/index.ts';
import { createProfilingHandler } from '../profiling/index.ts';
import { BackpressureController, MemoryManager } from '../resources/index.ts';
import {
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
import { chatHandler } from './chat.ts';
import { type GatewayConfig, resolveConfig } from './config.ts';
import { bearer, CACHE_HEADER, digest, type GatewayContext, type GatewayCounts } from './context.ts';
import { DashboardFeed } from './dashboard.ts';
import { WriteBehindDiskStore } from './disk-writer.ts';
import { createEmbeddingBatcher, embeddingsHandler } from './embeddings.ts';
import { retrySeconds, rootCause } from './error-answers.ts';
import { createHttpApp } from './http.ts';
import { LOCAL_CHAT_MODEL, LOCAL_EMBED_MODEL, LOCAL_MODELS, LocalUpstream } from './local-upstream.ts';
import { type ApiError, apiError } from './openai.ts';
import { registerOperations } from './operations.ts';
import { UpstreamClient } from './upstream.ts';

/** Provider name recorded on spans of calls answered by the built-in local models. */
export { DEFAULT_COMPLETION_ESTIMATE } from './context.ts';

export const LOCAL_PROVIDER = 'clawperf.local';
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

const LOOPBACK = /^(127\.|::1$|::ffff:127\.)/;

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

  const counts: GatewayCounts = {
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

  const app = await createHttpApp({ config, counts, collector, feed, tracer });

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

  const ctx: GatewayContext = {
    config,
    cache,
    local,
    upstream,
    counts,
    answers,
    upstreamCall,
    expectSuccess,
    tenantOf,
    checkModel,
    admit,
    settle,
    cacheMode,
    timed,
    loadThrough,
    safeGet,
    setSpan,
  };

  const batcher = createEmbeddingBatcher(ctx);

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

  app.post('/v1/embeddings', embeddingsHandler(ctx, batcher));
  app.post('/v1/chat/completions', chatHandler(ctx));

  registerOperations(app, {
    config,
    cache,
    upstream,
    prometheus,
    profiling,
    feed,
    isClosing: () => closing,
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
