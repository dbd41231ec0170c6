/**
 * W3C trace context (`traceparent`, `tracestate`) across services: extract from incoming headers, inject
 * into outgoing ones, for node:http, fetch/undici and Fastify. Uses OpenTelemetry's
 * `W3CTraceContextPropagator` directly, so it works whatever global propagator is (or is not) installed.
 *
 * @module
 */
import {
  type Tracer as ApiTracer,
  type Context,
  context,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  type TextMapSetter,
  trace,
} from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import type { FastifyInstance, FastifyPluginCallback, FastifyRequest } from 'fastify';
import { recordError } from './run-in-span.ts';
import { TRACER_SCOPE, Tracer } from './tracer.ts';

/** Something incoming headers can be read from. */
export type HeaderSource =
  | { get(name: string): string | null | undefined }
  | { headers: Record<string, string | string[] | undefined> }
  | Record<string, string | string[] | undefined>;

/** Something outgoing headers can be written to. */
export type HeaderTarget =
  | { set(name: string, value: string): unknown }
  | { setHeader(name: string, value: string): unknown }
  | Record<string, string>;

const propagator = new W3CTraceContextPropagator();

const getter: TextMapGetter<HeaderSource> = {
  keys(carrier) {
    const c = carrier as { keys?: () => Iterable<string>; headers?: unknown };
    if (typeof c.keys === 'function') return Array.from(c.keys());
    if (c.headers !== null && typeof c.headers === 'object') return Object.keys(c.headers);
    return Object.keys(carrier);
  },
  get(carrier, key) {
    const c = carrier as { get?: (name: string) => string | null | undefined; headers?: unknown };
    if (typeof c.get === 'function') return c.get(key) ?? undefined;
    const record = (c.headers !== null && typeof c.headers === 'object' ? c.headers : carrier) as Record<
      string,
      string | string[] | undefined
    >;
    const exact = record[key];
    if (exact !== undefined) return exact;
    for (const name of Object.keys(record)) if (name.toLowerCase() === key) return record[name];
    return undefined;
  },
};

const setter: TextMapSetter<HeaderTarget> = {
  set(carrier, key, value) {
    const c = carrier as {
      set?: (n: string, v: string) => unknown;
      setHeader?: (n: string, v: string) => unknown;
    };
    if (typeof c.setHeader === 'function') c.setHeader(key, value);
    else if (typeof c.set === 'function') c.set(key, value);
    else (carrier as Record<string, string>)[key] = value;
  },
};

function toContext(source: Context | Span | undefined): Context {
  if (source === undefined) return context.active();
  if (typeof (source as Span).spanContext === 'function') return trace.setSpan(ROOT_CONTEXT, source as Span);
  return source as Context;
}

/**
 * Reads `traceparent`/`tracestate` from `carrier` (node:http `IncomingMessage` or its `headers`, a fetch
 * `Headers`, or a plain header object, any case) into a context derived from `base` (default: the active
 * one). Pass the result as `parent` to `tracer.withSpan` so the span continues the caller's trace. A
 * missing or malformed header leaves `base` unchanged; nothing here throws.
 */
export function extractTraceContext(carrier: HeaderSource, base: Context = context.active()): Context {
  try {
    return propagator.extract(base, carrier, getter);
  } catch {
    return base;
  }
}

/**
 * Writes `traceparent` (and `tracestate`, when there is one) for `source` (a context or span; default: the
 * active context) into `carrier`: a fetch/undici `Headers`, a node:http `ClientRequest` or
 * `ServerResponse` (`setHeader`), or a plain header object. Returns `carrier`. Writes nothing when there
 * is no valid span; never throws (headers already sent, a frozen object).
 */
export function injectTraceContext<C extends HeaderTarget>(carrier: C, source?: Context | Span): C {
  try {
    propagator.inject(toContext(source), carrier, setter);
  } catch {
    // Telemetry never breaks the request.
  }
  return carrier;
}

/** The trace context headers for `source` (default: the active context) as a plain object, for `fetch`. */
export function traceHeaders(source?: Context | Span): Record<string, string> {
  return injectTraceContext({}, source);
}

/** Options of {@link fastifyTracing}. */
export interface FastifyTracingOptions {
  /** Where server spans go: a clawperf `Tracer` or an OpenTelemetry tracer. @default the global tracer */
  tracer?: Tracer | ApiTracer;
  /** Span name for a request. @default `${method} ${route}` (the route pattern, not the raw URL) */
  spanName?: (request: FastifyRequest) => string;
  /** Send the server span's `traceparent` back on the response. @default true */
  responseHeader?: boolean;
}

interface RequestTrace {
  span: Span;
  ctx: Context;
}

const requestTraces = new WeakMap<FastifyRequest, RequestTrace>();

/** The server span {@link fastifyTracing} started for `request`, if any. */
export function requestSpan(request: FastifyRequest): Span | undefined {
  return requestTraces.get(request)?.span;
}

function endRequestSpan(request: FastifyRequest, statusCode: number | undefined): void {
  const entry = requestTraces.get(request);
  if (entry === undefined) return;
  requestTraces.delete(request);
  try {
    if (statusCode === undefined) {
      entry.span.setStatus({ code: SpanStatusCode.ERROR, message: 'request aborted' });
    } else {
      entry.span.setAttribute('http.response.status_code', statusCode);
      if (statusCode >= 500) entry.span.setStatus({ code: SpanStatusCode.ERROR });
    }
    entry.span.end();
  } catch {
    // Telemetry never breaks the request.
  }
}

/**
 * Fastify plugin: each request runs in a SERVER span that continues the caller's trace from its
 * `traceparent` (a new root when there is none or it is malformed), is active in the route handler (so
 * `withSpan` and `@Trace` inside become children), records errors and the status code, and its
 * `traceparent` is sent back on the response. Registered without encapsulation, so it covers every route.
 *
 * @example
 * ```ts
 * app.register(fastifyTracing, { tracer });
 * ```
 */
export const fastifyTracing: FastifyPluginCallback<FastifyTracingOptions> = (
  fastify: FastifyInstance,
  options: FastifyTracingOptions,
  done: (error?: Error) => void,
) => {
  const given = options.tracer;
  const ours = given instanceof Tracer ? given : undefined;
  const other =
    ours === undefined ? ((given as ApiTracer | undefined) ?? trace.getTracer(TRACER_SCOPE)) : undefined;
  const responseHeader = options.responseHeader ?? true;
  const within = (ctx: Context, next: () => void): void => {
    if (ours === undefined) context.with(ctx, next);
    else ours.withContext(ctx, next);
  };

  fastify.addHook('onRequest', (request, reply, next) => {
    let entry: RequestTrace;
    try {
      const route = request.routeOptions.url;
      const name =
        options.spanName?.(request) ?? (route === undefined ? request.method : `${request.method} ${route}`);
      const parent = extractTraceContext(request.headers, ROOT_CONTEXT);
      const span = (ours?.otelTracer ?? other!).startSpan(
        name,
        {
          kind: SpanKind.SERVER,
          attributes: {
            'http.request.method': request.method,
            'url.path': request.url.split('?', 1)[0]!,
            ...(route === undefined ? {} : { 'http.route': route }),
          },
        },
        parent,
      );
      entry = { span, ctx: trace.setSpan(parent, span) };
      requestTraces.set(request, entry);
      if (responseHeader) {
        for (const [key, value] of Object.entries(traceHeaders(entry.ctx))) reply.header(key, value);
      }
    } catch {
      next();
      return;
    }
    within(entry.ctx, next);
  });
  fastify.addHook('onError', (request, _reply, error, next) => {
    const entry = requestTraces.get(request);
    if (entry !== undefined) recordError(entry.span, error);
    next();
  });
  fastify.addHook('onResponse', (request, reply, next) => {
    endRequestSpan(request, reply.statusCode);
    next();
  });
  fastify.addHook('onRequestAbort', (request, next) => {
    endRequestSpan(request, undefined);
    next();
  });
  done();
};

// What `fastify-plugin` does: run in the parent scope, so the hooks cover routes registered beside it.
Object.assign(fastifyTracing, {
  [Symbol.for('skip-override')]: true,
  [Symbol.for('fastify.display-name')]: 'clawperf-tracing',
});
