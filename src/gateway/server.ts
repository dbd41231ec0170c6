import { readFileSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { MultiLevelCache } from '../cache/index.ts';
import { releaseRedis, toRedis } from '../internal/redis.ts';
import { MetricsCollector, PrometheusExporter, type Trackable } from '../metrics/index.ts';
import { createProfilingHandler } from '../profiling/index.ts';
import { BackpressureController, MemoryManager } from '../resources/index.ts';
import { Tracer } from '../tracing/index.ts';
import { bannerLines } from './banner.ts';
import { chatHandler } from './chat.ts';
import { type GatewayConfig, resolveConfig } from './config.ts';
import { type GatewayContext, type GatewayCounts, noCounts } from './context.ts';
import { DashboardFeed, type DashboardSnapshot } from './dashboard.ts';
import { buildDeployments } from './deployments.ts';
import { WriteBehindDiskStore } from './disk-writer.ts';
import { createEmbeddingBatcher, embeddingsHandler } from './embeddings.ts';
import { GuardedUpstream } from './guarded-upstream.ts';
import { createHttpApp } from './http.ts';
import { createLimiter } from './limits.ts';
import { LocalUpstream } from './local-upstream.ts';
import { countTokensHandler, messagesHandler } from './messages.ts';
import { registerModels } from './models.ts';
import { registerOperations } from './operations.ts';
import { createLogger } from './request-log.ts';
import { RequestSteps } from './request-steps.ts';
import { ResponseOwners } from './response-owners.ts';
import { registerResponses } from './responses-route.ts';

export { DEFAULT_COMPLETION_ESTIMATE } from './context.ts';
export { LOCAL_PROVIDER } from './local-upstream.ts';

/** What a gateway is built with besides its configuration. */
export interface GatewayOptions {
  /**
   * Fastify's logger and where structured events go: one line per request when it logs at `info`.
   * @default a logger of `config.logLevel` and `config.logFormat` on stderr
   */
  logger?: Logger;
  /**
   * Set in each worker of a `--workers` gateway: makes the worker's `/metrics` serve the whole gateway's
   * (given the worker's registry, returns what renders them).
   */
  clusterMetrics?: (registry: Registry) => () => Promise<string>;
  /**
   * Set in each worker of a `--workers` gateway: makes the dashboard show the whole gateway (given the
   * worker's own snapshot, returns the merged one).
   */
  clusterDashboard?: (own: () => DashboardSnapshot) => () => Promise<DashboardSnapshot>;
}

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
export interface GatewayStats extends GatewayCounts {
  /** Answers that needed no upstream call of their own: servedItems - upstreamCalls. */
  upstreamCallsSaved: number;
}

/**
 * Without an OTLP endpoint nothing is recorded (sample ratio 0, and requests start no span: their answers
 * carry a `traceparent` all the same); a span a caller's sampled trace forces is discarded.
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
export async function createGateway(
  input: Partial<GatewayConfig> = {},
  options: GatewayOptions = {},
): Promise<Gateway> {
  const config = resolveConfig(input);
  // Request lines and structured events (a prompt-cache break, a stalled breakpoint), on stderr.
  const logger = options.logger ?? (await createLogger(config));
  const local = new LocalUpstream({ chatLatencyMs: config.localChatLatencyMs });
  const disk = config.cacheDir === false ? undefined : new WriteBehindDiskStore({ dir: config.cacheDir });
  // One client (a server's or a Cluster's) for the cache, its bus, the limits and the response owners.
  const redis =
    config.redisUrl === undefined
      ? undefined
      : toRedis(
          'redisUrl',
          config.redisUrl,
          config.redisCommandTimeoutMs,
          config.redisCaFile === undefined ? {} : { ca: readFileSync(config.redisCaFile) },
        );
  // Its failures are counted by the components that use it.
  redis?.client.on('error', () => {});
  const cache = new MultiLevelCache<unknown>({
    l1: { maxEntries: config.l1MaxEntries },
    disk: disk ?? false,
    // An answer goes to disk at its first reuse: the many asked once never cost a disk write.
    diskAdmission: 'reuse',
    redis: redis?.client,
    commandTimeoutMs: config.redisCommandTimeoutMs,
    namespace: 'clawperf:gw',
    defaultTtlMs: config.cacheTtlMs,
    // Identical requests at once on several workers make one upstream call: a Redis lease, held at most as
    // long as an upstream call may take (it costs a miss three more round trips to Redis).
    lock: redis !== undefined && config.workers > 1,
    lockLeaseMs: config.upstreamTimeoutMs,
    lockWaitMs: config.upstreamTimeoutMs,
  });
  // A store failure is counted in the cache's stats and never reaches a request.
  cache.on('error', () => {});
  cache.on('degraded', () => {});
  const limiter = createLimiter(config.limits, {
    redis: redis?.client,
    commandTimeoutMs: config.redisCommandTimeoutMs,
  });
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
      ? // Nothing is recorded, so nothing needs the active span across awaits (no AsyncLocalStorage), and
        // the library's own spans (cache loads and writes) stay the API's no-ops: not registered globally.
        {
          exporter: discardSpans as never,
          processor: 'simple' as const,
          sampleRatio: 0,
          asyncContext: false,
          registerGlobal: false,
        }
      : { exporter: 'otlp' as const, otlpUrl: config.otlpUrl }),
  });
  const counts = noCounts();
  const stats = (): GatewayStats => ({
    ...counts,
    upstreamCallsSaved: Math.max(0, counts.servedItems - counts.upstreamCalls),
  });
  const deployments = buildDeployments(config, collector.registry, redis?.client);
  const { router } = deployments;
  const client = deployments.defaults.openai?.client;
  const anthropic = deployments.defaults.anthropic?.client;
  const upstream = new GuardedUpstream({
    local,
    remote: router,
    backpressure,
    tracer,
    // Without an exporter a client span would be discarded: skip making it (the request span stays).
    clientSpans: config.otlpUrl !== undefined,
    counts,
    registry: collector.registry,
  });
  const ctx: GatewayContext = new RequestSteps({
    config,
    cache,
    upstream,
    serves: (api, model) => router.serves(api, model),
    limiter,
    counts,
    registry: collector.registry,
    log: (event) => logger.warn(event, event.event),
  });
  const batcher = createEmbeddingBatcher(ctx);
  const feed: DashboardFeed = new DashboardFeed({
    counts,
    backpressure,
    batcherStats: () => batcher.stats(),
    deployments: router.deployments,
    registry: collector.registry,
    limits: config.limits,
    prices: config.prices,
    ...(options.clusterDashboard === undefined
      ? {}
      : { gateway: options.clusterDashboard((): DashboardSnapshot => feed.snapshot()) }),
  });
  const app = await createHttpApp({ config, counts, collector, feed, tracer, logger });

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
    ['upstream', client],
    ['outbound', deployments.defaults.openai?.pacers[0] as Trackable | undefined],
    ['anthropic_upstream', anthropic],
    ['anthropic_outbound', deployments.defaults.anthropic?.pacers[0] as Trackable | undefined],
  ];
  for (const [name, component] of tracked) if (component !== undefined) collector.track(name, component);

  app.post('/v1/embeddings', embeddingsHandler(ctx, batcher));
  app.post('/v1/chat/completions', chatHandler(ctx));
  app.post('/v1/messages', messagesHandler(ctx));
  const owners = new ResponseOwners({ redis: redis?.client });
  registerResponses(app, { ctx, owners, router });
  app.post('/v1/messages/count_tokens', countTokensHandler(ctx));
  registerModels(app, {
    upstream: client,
    anthropic,
    listed: deployments.listed,
    tenantOf: (request) => ctx.tenantOf(request),
  });
  let closing = false;
  registerOperations(app, {
    config,
    cache,
    upstream: client,
    anthropic,
    router,
    prometheus,
    profiling,
    feed,
    isClosing: () => closing,
    clusterMetrics: options.clusterMetrics?.(collector.registry),
  });

  await cache.ready();

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
        router.close(),
        ...deployments.outbounds.map((o) => o.close()),
        profiling.close(),
        memory.close(),
        collector.close(),
        prometheus.close(),
      ]);
      await cache.close();
      if (redis !== undefined) await releaseRedis(redis);
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
  /** Print what it serves once listening. @default true */
  banner?: boolean;
  /** What {@link createGateway} takes besides the configuration. */
  gateway?: GatewayOptions;
}

/** Builds the gateway, listens on `config.host:config.port`, prints what it serves, and closes on SIGTERM/SIGINT. */
export async function startGateway(
  input: Partial<GatewayConfig> = {},
  options: StartOptions = {},
): Promise<Gateway & { url: string; closed: Promise<void> }> {
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const gateway = await createGateway(input, options.gateway);
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
  if (options.banner !== false) for (const line of bannerLines(config, address)) log(line);
  return { ...gateway, close, url: address, closed };
}
