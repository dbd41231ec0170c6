/**
 * The gateway's Fastify instance before its routes: body parsing, the request id (`x-request-id`) and the
 * request log, the request span, the per-request state and response headers (`x-clawperf-cache`,
 * `x-clawperf-overhead-ms`, rate-limit headers), request metrics, and errors answered in the shape of the
 * API a path speaks (Anthropic's under `/v1/messages`, else OpenAI's).
 *
 * @module
 */
import cluster from 'node:cluster';
import { type ServerResponse, STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { RateLimitResult } from '../concurrency/index.ts';
import type { MetricsCollector } from '../metrics/index.ts';
import { fastifyTracing, requestSpan, type Tracer } from '../tracing/index.ts';
import { fastifyTraceparent } from '../tracing/traceparent.ts';
import type { GatewayConfig } from './config.ts';
import { CACHE_HEADER, type GatewayCounts, type RequestState } from './context.ts';
import type { DashboardFeed } from './dashboard.ts';
import { clientErrorAnswer, errorAnswer, requestErrorAnswer, sendErrorFor } from './error-answers.ts';
import { apiError } from './openai.ts';
import { REQUEST_ID_HEADER, RequestLog, requestId, requestLogger } from './request-log.ts';

/** The worker that answered (its process id), on every answer of a gateway with several workers. */
export const WORKER_HEADER = 'x-clawperf-worker';

/** What the hooks record into. */
export interface HttpAppOptions {
  config: GatewayConfig;
  counts: GatewayCounts;
  collector: MetricsCollector;
  feed: DashboardFeed;
  tracer: Tracer;
  /** Fastify's logger: one line per request at `info` (see request-log.ts). */
  logger: Logger;
}

/** Builds the Fastify instance with the gateway's hooks and error handling; routes are added by the caller. */
export async function createHttpApp(options: HttpAppOptions): Promise<FastifyInstance> {
  const { config, counts, collector, feed, tracer, logger } = options;
  const requestLog = new RequestLog(logger);
  const app = Fastify({
    bodyLimit: config.bodyLimitBytes,
    forceCloseConnections: 'idle',
    // Fastify's own 503 while closing has its own body; the onRequest hook answers in OpenAI's shape instead.
    return503OnClosing: false,
    loggerInstance: logger as FastifyBaseLogger,
    logController: requestLog,
    genReqId: requestId,
    childLoggerFactory: requestLogger as never,
    clientErrorHandler: answerClientError,
    frameworkErrors: (error, request, reply) => {
      sendErrorFor(
        request,
        reply,
        requestErrorAnswer(error, config.bodyLimitBytes, request.headers['content-type']),
      );
    },
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
  // Spans cost a request a few per cent of its CPU; with nothing to record them, the answer's
  // `traceparent` alone still places it in the caller's trace.
  if (config.otlpUrl === undefined) await app.register(fastifyTraceparent);
  else await app.register(fastifyTracing, { tracer });

  const leftFlight = () => {
    counts.inFlight--;
  };
  // Which worker answered, when several serve the port.
  const worker = cluster.worker === undefined ? undefined : String(process.pid);
  let closing = false;
  app.addHook('preClose', (done) => {
    closing = true;
    done();
  });
  app.addHook('onRequest', (request, reply, done) => {
    counts.requests++;
    counts.inFlight++;
    // onResponse runs only once a response finished, not when the client left first (an aborted request, a
    // dashboard connection, a stream cut short); the response's 'close' comes once for every request.
    if (requestLog.on) {
      // A response the client cut short never finishes, so Fastify never completes it: its line is written here.
      reply.raw.once('close', () => {
        leftFlight();
        if (!reply.raw.writableFinished && reply.raw.errored === null)
          requestLog.requestAborted(request, reply);
      });
    } else {
      reply.raw.once('close', leftFlight);
    }
    reply.header(REQUEST_ID_HEADER, request.id);
    if (worker !== undefined) reply.header(WORKER_HEADER, worker);
    request.clawperf = {
      start: performance.now(),
      upstreamMs: 0,
      cache: 'bypass',
      limit: undefined,
      cacheKey: undefined,
      tenant: undefined,
      recorded: false,
      answer: undefined,
      streamed: undefined,
      overheadMs: undefined,
    };
    // A request still arriving on an open connection while the gateway drains: the client should go elsewhere.
    if (closing) {
      reply.header('connection', 'close');
      sendErrorFor(
        request,
        reply,
        apiError(503, 'the gateway is shutting down', 'server_error', 'shutting_down', null, {
          'retry-after': '1',
        }),
      );
      return;
    }
    done();
  });
  app.addHook('onSend', (request, reply, payload, done) => {
    const s = request.clawperf;
    if (s !== null && s !== undefined) {
      reply.header(CACHE_HEADER, s.cache);
      s.overheadMs = Math.max(0, performance.now() - s.start - s.upstreamMs);
      reply.header('x-clawperf-overhead-ms', s.overheadMs.toFixed(3));
      if (s.cacheKey !== undefined) reply.header('x-clawperf-cache-key', s.cacheKey);
      if (s.limit !== undefined) reply.headers(rateLimitHeaders(s.limit));
    }
    done(null, payload);
  });
  app.addHook('onResponse', (request, reply, done) => {
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
    if (request.url.startsWith('/v1/')) feed.record(request, reply);
    done();
  });

  app.setErrorHandler((error: Error & { statusCode?: number; code?: string }, request, reply) => {
    const status = error.statusCode;
    if (status !== undefined && status >= 400 && status < 500) {
      return sendErrorFor(
        request,
        reply,
        requestErrorAnswer(error, config.bodyLimitBytes, request.headers['content-type']),
      );
    }
    const span = requestSpan(request);
    span?.recordException(error);
    return sendErrorFor(request, reply, errorAnswer(error));
  });
  app.setNotFoundHandler((request, reply) =>
    sendErrorFor(
      request,
      reply,
      apiError(
        404,
        `no route ${request.method} ${request.url.split('?', 1)[0]}`,
        'invalid_request_error',
        'not_found',
      ),
    ),
  );
  return app;
}

/**
 * Answers a request Node's HTTP parser refused (headers too large, not HTTP, too slow) in OpenAI's shape; it
 * never reaches Fastify. As Node does: no answer on a reset socket or after a response's headers went out.
 */
function answerClientError(error: Error & { code?: string }, socket: Socket): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const response = (socket as Socket & { _httpMessage?: ServerResponse })._httpMessage;
  if (socket.writable && response?.headersSent !== true) {
    const answer = clientErrorAnswer(error.code);
    const body = JSON.stringify(answer.body);
    socket.write(
      `HTTP/1.1 ${answer.status} ${STATUS_CODES[answer.status]}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy(error);
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
