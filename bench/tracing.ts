/**
 * Tracing overhead: `tracer.withSpan` around a no-op against raw OpenTelemetry `startActiveSpan` on the same
 * SDK setup (a SimpleSpanProcessor or a BatchSpanProcessor feeding an exporter that drops everything, every
 * span sampled, the same AsyncLocalStorage context manager), and an `@Trace`-decorated method against the
 * same method undecorated. Both sides end every span and record errors.
 */
import { type Span, SpanStatusCode } from '@opentelemetry/api';
import { ExportResultCode } from '@opentelemetry/core';
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  ParentBasedSampler,
  SimpleSpanProcessor,
  type SpanExporter,
  type SpanProcessor,
  TraceIdRatioBasedSampler,
} from '@opentelemetry/sdk-trace-base';
import { Trace, Tracer } from '../src/tracing/index.ts';
import { compare } from './harness.ts';

const dropAll: SpanExporter = {
  export: (_spans, done) => done({ code: ExportResultCode.SUCCESS }),
  shutdown: () => Promise.resolve(),
};
const noop = async (): Promise<number> => 1;
const sampler = () => new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(1) });

async function versusRaw(processor: 'simple' | 'batch'): Promise<void> {
  const tracer = new Tracer({ serviceName: 'bench', exporter: dropAll, processor });
  const spanProcessor: SpanProcessor =
    processor === 'simple' ? new SimpleSpanProcessor(dropAll) : new BatchSpanProcessor(dropAll);
  const provider = new BasicTracerProvider({ sampler: sampler(), spanProcessors: [spanProcessor] });
  const raw = provider.getTracer('bench');
  const rawWithSpan = () =>
    raw.startActiveSpan('op', async (span: Span) => {
      try {
        return await noop();
      } catch (error) {
        span.recordException(error as Error);
        span.setStatus({ code: SpanStatusCode.ERROR });
        throw error;
      } finally {
        span.end();
      }
    });
  const rawThen = () =>
    raw.startActiveSpan('op', (span: Span) =>
      noop().then(
        (value) => {
          span.end();
          return value;
        },
        (error: unknown) => {
          span.recordException(error as Error);
          span.setStatus({ code: SpanStatusCode.ERROR });
          span.end();
          throw error;
        },
      ),
    );
  await compare(
    { title: `withSpan around a no-op, ${processor} span processor`, rounds: 7, roundMs: 1_000 },
    [
      { name: 'clawperf tracer.withSpan', op: () => tracer.withSpan('op', noop) },
      { name: 'OpenTelemetry tracer.startActiveSpan (async/try/finally)', op: rawWithSpan },
      { name: 'OpenTelemetry tracer.startActiveSpan (hand-tuned .then)', op: rawThen },
    ],
  );
  await Promise.all([tracer.close(), provider.shutdown()]);
}

async function decorated(): Promise<void> {
  const tracer = new Tracer({ serviceName: 'bench', exporter: dropAll, processor: 'simple' });
  class Service {
    @Trace('service.work', { tracer })
    async traced(): Promise<number> {
      return 1;
    }

    async plain(): Promise<number> {
      return 1;
    }
  }
  const service = new Service();
  await compare(
    { title: '@Trace-decorated async method vs the same method undecorated', rounds: 7, roundMs: 1_000 },
    [
      { name: 'clawperf @Trace method', op: () => service.traced() },
      {
        name: 'tracer.withSpan around the undecorated method',
        op: () => tracer.withSpan('service.work', () => service.plain()),
      },
      { name: 'undecorated method (no span)', op: () => service.plain() },
    ],
  );
  await tracer.close();
}

await versusRaw('simple');
await versusRaw('batch');
await decorated();
