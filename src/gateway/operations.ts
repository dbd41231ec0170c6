/**
 * The gateway's operational routes: health and readiness, Prometheus metrics, cache invalidation,
 * profiling and the dashboard. Admin and debug routes need the admin token.
 *
 * @module
 */
import { timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { MultiLevelCache } from '../cache/index.ts';
import type { PrometheusExporter } from '../metrics/index.ts';
import type { createProfilingHandler } from '../profiling/index.ts';
import type { GatewayConfig } from './config.ts';
import { bearer, CACHE_HEADER, digest } from './context.ts';
import { type DashboardFeed, registerDashboard } from './dashboard.ts';
import type { DeploymentRouter } from './deployment-router.ts';
import { sendError } from './error-answers.ts';
import { type ApiError, apiError } from './openai.ts';
import type { UpstreamClient } from './upstream.ts';

/** What the operational routes read. */
export interface OperationsOptions {
  config: GatewayConfig;
  cache: MultiLevelCache<unknown>;
  upstream: UpstreamClient | undefined;
  /** The Anthropic upstream, if configured. */
  anthropic: UpstreamClient | undefined;
  /** Every deployment: each listed model needs a usable one to be ready. */
  router: DeploymentRouter;
  prometheus: PrometheusExporter;
  profiling: ReturnType<typeof createProfilingHandler>;
  feed: DashboardFeed;
  /** True once the gateway is shutting down (`/readyz` answers 503). */
  isClosing: () => boolean;
  /** The whole gateway's metrics when this process is one of several workers. */
  clusterMetrics?: (() => Promise<string>) | undefined;
}

/** `/readyz`'s `upstream` field for each breaker state: half-open lets the next request probe. */
const UPSTREAM_STATE = { closed: 'up', open: 'circuit-open', 'half-open': 'circuit-half-open' } as const;

/** Registers the operational routes on `app`. */
export function registerOperations(app: FastifyInstance, options: OperationsOptions): void {
  const { config, cache, upstream, anthropic, router, prometheus, profiling, feed } = options;
  const stateOf = (client: UpstreamClient | undefined) =>
    client === undefined ? 'local' : UPSTREAM_STATE[client.circuitState];
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_request, reply) => {
    const s = cache.stats();
    const redis = config.redisUrl === undefined ? 'off' : s.l2_up === 1 ? 'up' : 'down';
    const upstreams = { upstream: stateOf(upstream), anthropic: stateOf(anthropic) };
    // Each model a listed deployment serves needs one whose circuit lets calls through.
    const unserved: string[] = [];
    for (const d of config.deployments) {
      for (const model of Object.keys(d.models ?? {})) {
        if (!unserved.includes(model) && !router.servers(d.api, model).some((s) => s.usable))
          unserved.push(model);
      }
    }
    const ready =
      !options.isClosing() &&
      upstreams.upstream !== 'circuit-open' &&
      upstreams.anthropic !== 'circuit-open' &&
      unserved.length === 0;
    const body: Record<string, unknown> = { status: ready ? 'ready' : 'not-ready', ...upstreams, redis };
    if (config.deployments.length > 0) {
      body.deployments = Object.fromEntries(router.deployments.map((d) => [d.name, stateOf(d.client)]));
      if (unserved.length > 0) body.unserved = unserved;
    }
    return reply.code(ready ? 200 : 503).send(body);
  });
  const metricsRoute = prometheus.route();
  const { clusterMetrics } = options;
  app.get('/metrics', (request, reply) =>
    clusterMetrics === undefined
      ? metricsRoute.handler(request, reply)
      : clusterMetrics().then(
          (text) => reply.type('text/plain; version=0.0.4; charset=utf-8').send(text),
          (error: Error) => reply.code(503).type('text/plain; charset=utf-8').send(`${error.message}\n`),
        ),
  );

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

  registerDashboard(app, feed);
}
