import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { context, SpanStatusCode, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { failSpan, inSpan, NO_SPAN, startSpan } from '../../src/internal/telemetry.ts';

function register(): { exporter: InMemorySpanExporter; provider: BasicTracerProvider } {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  trace.setGlobalTracerProvider(provider);
  return { exporter, provider };
}

after(() => trace.disable());

describe('with no OpenTelemetry SDK registered', () => {
  it('builds no span: every start gives the one no-op span, and inSpan just runs its function', async () => {
    trace.disable();
    assert.equal(startSpan('a'), NO_SPAN);
    assert.equal(await inSpan('b', async (span) => (span === NO_SPAN ? 'no-op' : 'built')), 'no-op');
    failSpan(NO_SPAN, new Error('ignored'));
  });
});

describe('with an SDK registered', () => {
  it('records spans, a failure with its status and exception, and nests spans started inside inSpan', async () => {
    const { exporter, provider } = register();
    const contexts = new AsyncLocalStorageContextManager().enable();
    context.setGlobalContextManager(contexts);
    try {
      assert.notEqual(startSpan('probe'), NO_SPAN);
      startSpan('plain').end();
      failSpan(startSpan('failed'), new Error('boom'));
      await inSpan('outer', async () => startSpan('inner').end());
      await assert.rejects(
        inSpan('rejected', async () => {
          throw new Error('nope');
        }),
        /nope/,
      );
      const spans = Object.fromEntries(exporter.getFinishedSpans().map((s) => [s.name, s]));
      assert.deepEqual(Object.keys(spans).sort(), ['failed', 'inner', 'outer', 'plain', 'rejected']);
      assert.equal(spans.failed!.status.code, SpanStatusCode.ERROR);
      assert.equal(spans.failed!.events[0]?.name, 'exception');
      assert.equal(spans.rejected!.status.code, SpanStatusCode.ERROR);
      assert.equal(spans.plain!.status.code, SpanStatusCode.UNSET);
      assert.equal(spans.inner!.parentSpanContext?.spanId, spans.outer!.spanContext().spanId);
    } finally {
      context.disable();
      trace.disable();
      await provider.shutdown();
    }
  });

  it('follows the provider registered now, not the first one it saw', async () => {
    const first = register();
    startSpan('to the first').end();
    trace.disable();
    await first.provider.shutdown();
    const second = register();
    try {
      startSpan('to the second').end();
      assert.deepEqual(
        second.exporter.getFinishedSpans().map((s) => s.name),
        ['to the second'],
      );
    } finally {
      trace.disable();
      await second.provider.shutdown();
    }
  });
});
