/**
 * The OpenTelemetry spans around MultiLevelCache's I/O.
 *
 * @module
 */
import { type Span, SpanStatusCode, type Tracer, trace } from '@opentelemetry/api';

let cachedTracer: Tracer | undefined;
function tracer(): Tracer {
  cachedTracer ??= trace.getTracer('clawperf');
  return cachedTracer;
}

/**
 * Runs `fn` inside a span. Only cache I/O that is not a read hit is spanned (writes, deletes, invalidations,
 * factory runs), so hits stay at memory and Redis speed.
 */
export async function spanned<R>(name: string, fn: (span: Span) => Promise<R>): Promise<R> {
  return tracer().startActiveSpan(name, async (span) => {
    try {
      return await fn(span);
    } catch (error) {
      span.recordException(error instanceof Error ? error : String(error));
      span.setStatus({ code: SpanStatusCode.ERROR });
      throw error;
    } finally {
      span.end();
    }
  });
}
