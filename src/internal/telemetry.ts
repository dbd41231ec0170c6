/**
 * Spans for the library's own I/O (pool waits and creations, batch flushes, Redis checks, cache writes),
 * made through `@opentelemetry/api` directly so no area imports another for telemetry. Off means free: until
 * an application registers an OpenTelemetry SDK, no span object is built and no context is switched.
 *
 * @example
 * const span = startSpan('clawperf.pool.create');
 * try { ...; span.end(); } catch (error) { failSpan(span, error); }
 * await inSpan('clawperf.cache.set', async (span) => { span.setAttribute('clawperf.cache.tags', 2); ... });
 */
import {
  INVALID_SPAN_CONTEXT,
  ProxyTracerProvider,
  type Span,
  type SpanOptions,
  SpanStatusCode,
  type Tracer,
  type TracerProvider,
  trace,
} from '@opentelemetry/api';

/** The instrumentation scope of every span the library makes. */
export const TRACER_NAME = 'clawperf';

/** The global provider while none is registered: the API's proxy, delegating to its no-op provider. */
const UNREGISTERED = new ProxyTracerProvider().getDelegate();

let cachedProvider: TracerProvider | undefined;
let cachedTracer: Tracer | undefined;

/**
 * The library's tracer from the provider registered now, or undefined while none is. Looked up on first use
 * (importing a module registers nothing) and again only when the application registers another provider.
 */
function current(): Tracer | undefined {
  const global = trace.getTracerProvider();
  const provider = global instanceof ProxyTracerProvider ? global.getDelegate() : global;
  if (provider === UNREGISTERED) return undefined;
  if (provider !== cachedProvider) {
    cachedProvider = provider;
    cachedTracer = provider.getTracer(TRACER_NAME);
  }
  return cachedTracer;
}

/** What {@link startSpan} gives while tracing is off: records nothing, and one object serves every call. */
export const NO_SPAN: Span = trace.wrapSpanContext(INVALID_SPAN_CONTEXT);

/** Starts a span when tracing is on; {@link NO_SPAN} otherwise. End it with `span.end()` or {@link failSpan}. */
export function startSpan(name: string, options?: SpanOptions): Span {
  return current()?.startSpan(name, options) ?? NO_SPAN;
}

/**
 * Records `error` on the span (an exception event and status ERROR with its message) and ends it; a span that
 * records nothing (or has ended) is left as it is.
 */
export function failSpan(span: Span, error: unknown): void {
  if (!span.isRecording()) return;
  span.recordException(error instanceof Error ? error : String(error));
  span.setStatus({ code: SpanStatusCode.ERROR, message: String(error) });
  span.end();
}

/**
 * Runs `fn` inside an active span, so spans started within it become its children; a rejection is recorded on
 * the span and passed on. While tracing is off, `fn` runs with {@link NO_SPAN} and nothing else happens.
 */
export async function inSpan<R>(
  name: string,
  fn: (span: Span) => Promise<R>,
  options: SpanOptions = {},
): Promise<R> {
  const otel = current();
  if (otel === undefined) return fn(NO_SPAN);
  return otel.startActiveSpan(name, options, async (span) => {
    try {
      const result = await fn(span);
      span.end();
      return result;
    } catch (error) {
      failSpan(span, error);
      throw error;
    }
  });
}
