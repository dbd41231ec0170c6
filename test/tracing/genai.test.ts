import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { metrics, SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { type HistogramMetricData, MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics';
import {
  GEN_AI_DURATION_BUCKETS,
  GEN_AI_TOKEN_USAGE_BUCKETS,
  genAISpanName,
  Tracer,
  usageFromResponse,
  withGenAISpan,
} from '../../src/tracing/index.ts';

const chatCompletion = {
  id: 'chatcmpl-123',
  model: 'gpt-4o-mini-2024-07-18',
  choices: [{ index: 0, finish_reason: 'stop', message: { role: 'assistant', content: 'hi' } }],
  usage: { prompt_tokens: 12, completion_tokens: 30, total_tokens: 42 },
};

/** Collects on demand, so the test reads exactly what was recorded. */
class TestReader extends MetricReader {
  protected override onForceFlush(): Promise<void> {
    return Promise.resolve();
  }
  protected override onShutdown(): Promise<void> {
    return Promise.resolve();
  }
}

describe('GenAI spans', () => {
  let tracer: Tracer;
  before(() => {
    tracer = new Tracer({ serviceName: 'genai-test', exporter: 'memory' });
  });
  after(() => tracer.close());

  it('names the span "{operation} {model}" and records request, response and usage attributes', async () => {
    tracer.resetFinishedSpans();
    const request = {
      operation: 'chat',
      model: 'gpt-4o-mini',
      provider: 'openai',
      serverAddress: 'api.openai.com',
    };
    const result = await withGenAISpan(tracer, request, async () => chatCompletion);
    assert.equal(result, chatCompletion);
    const [span] = tracer.getFinishedSpans();
    assert.equal(span?.name, 'chat gpt-4o-mini');
    assert.equal(span?.kind, SpanKind.CLIENT);
    assert.deepEqual(span?.attributes, {
      'gen_ai.operation.name': 'chat',
      'gen_ai.provider.name': 'openai',
      'gen_ai.request.model': 'gpt-4o-mini',
      'server.address': 'api.openai.com',
      'gen_ai.response.model': 'gpt-4o-mini-2024-07-18',
      'gen_ai.response.id': 'chatcmpl-123',
      'gen_ai.response.finish_reasons': ['stop'],
      'gen_ai.usage.input_tokens': 12,
      'gen_ai.usage.output_tokens': 30,
    });
  });

  it('records a failed call with error.type and ERROR status and rethrows it', async () => {
    tracer.resetFinishedSpans();
    class RateLimitError extends Error {
      override name = 'RateLimitError';
    }
    await assert.rejects(
      withGenAISpan(
        tracer,
        { operation: 'embeddings', model: 'text-embedding-3-small', provider: 'openai' },
        () => {
          throw new RateLimitError('429');
        },
      ),
      RateLimitError,
    );
    const [span] = tracer.getFinishedSpans();
    assert.equal(span?.name, 'embeddings text-embedding-3-small');
    assert.equal(span?.status.code, SpanStatusCode.ERROR);
    assert.equal(span?.attributes['error.type'], 'RateLimitError');
  });

  it('goes to the global tracer when none is given, as a child of the active span', async () => {
    tracer.resetFinishedSpans();
    await tracer.withSpan('agent.step', () =>
      withGenAISpan(
        undefined,
        { operation: 'chat', model: 'local-chat', provider: 'clawperf' },
        async () => ({}),
      ),
    );
    const spans = tracer.getFinishedSpans();
    const step = spans.find((s) => s.name === 'agent.step');
    const chat = spans.find((s) => s.name === 'chat local-chat');
    assert.equal(chat?.parentSpanContext?.spanId, step?.spanContext().spanId);
  });

  it('contains a usage reader that throws', async () => {
    const value = await withGenAISpan(
      tracer,
      { operation: 'chat', model: 'm', provider: 'p' },
      async () => 'plain text',
      {
        usage: () => {
          throw new Error('reader bug');
        },
      },
    );
    assert.equal(value, 'plain text');
  });
});

describe('usage from provider responses', () => {
  it('reads OpenAI chat, OpenAI embeddings, the Responses API and Anthropic shapes', () => {
    assert.deepEqual(usageFromResponse(chatCompletion), {
      inputTokens: 12,
      outputTokens: 30,
      responseModel: 'gpt-4o-mini-2024-07-18',
      responseId: 'chatcmpl-123',
      finishReasons: ['stop'],
    });
    assert.deepEqual(usageFromResponse({ model: 'text-embedding-3-small', usage: { prompt_tokens: 8 } }), {
      inputTokens: 8,
      responseModel: 'text-embedding-3-small',
    });
    assert.deepEqual(
      usageFromResponse({
        id: 'msg_1',
        model: 'claude',
        stop_reason: 'end_turn',
        usage: { input_tokens: 5, output_tokens: 9 },
      }),
      {
        inputTokens: 5,
        outputTokens: 9,
        responseModel: 'claude',
        responseId: 'msg_1',
        finishReasons: ['end_turn'],
      },
    );
    for (const nothing of [undefined, null, 'text', 42, { usage: { prompt_tokens: -1 } }]) {
      assert.deepEqual(usageFromResponse(nothing), {});
    }
  });

  it('names a span with no model by its operation alone', () => {
    assert.equal(genAISpanName({ operation: 'execute_tool', model: '' }), 'execute_tool');
  });
});

describe('GenAI metrics', () => {
  let tracer: Tracer;
  before(() => {
    tracer = new Tracer({ serviceName: 'genai-metrics', exporter: 'memory', registerGlobal: false });
  });
  after(async () => {
    metrics.disable();
    await tracer.close();
  });

  it('are no-ops until a MeterProvider is registered, then fill both histograms with the recommended buckets', async () => {
    const request = { operation: 'chat', model: 'gpt-4o-mini', provider: 'openai' };
    await withGenAISpan(tracer, request, async () => chatCompletion);

    const reader = new TestReader();
    metrics.setGlobalMeterProvider(new MeterProvider({ readers: [reader] }));
    await withGenAISpan(tracer, request, async () => chatCompletion);
    await assert.rejects(
      withGenAISpan(tracer, request, async () => {
        throw new TypeError('bad request');
      }),
    );

    const { resourceMetrics } = await reader.collect();
    const all = resourceMetrics.scopeMetrics.flatMap((s) => s.metrics) as HistogramMetricData[];
    const tokens = all.find((m) => m.descriptor.name === 'gen_ai.client.token.usage');
    const duration = all.find((m) => m.descriptor.name === 'gen_ai.client.operation.duration');
    assert.ok(tokens && duration, `metrics: ${all.map((m) => m.descriptor.name).join(', ')}`);
    assert.equal(tokens.descriptor.unit, '{token}');
    assert.equal(duration.descriptor.unit, 's');

    const byType = new Map(tokens.dataPoints.map((p) => [p.attributes['gen_ai.token.type'], p]));
    assert.equal(byType.get('input')?.value.sum, 12);
    assert.equal(byType.get('output')?.value.sum, 30);
    assert.equal(byType.get('input')?.value.count, 1);
    assert.deepEqual(byType.get('input')?.value.buckets.boundaries, GEN_AI_TOKEN_USAGE_BUCKETS);
    assert.equal(byType.get('input')?.attributes['gen_ai.response.model'], 'gpt-4o-mini-2024-07-18');

    const ok = duration.dataPoints.find((p) => p.attributes['error.type'] === undefined);
    const failed = duration.dataPoints.find((p) => p.attributes['error.type'] === 'TypeError');
    assert.equal(ok?.value.count, 1);
    assert.equal(failed?.value.count, 1);
    assert.deepEqual(ok?.value.buckets.boundaries, GEN_AI_DURATION_BUCKETS);
    assert.equal(ok?.attributes['gen_ai.operation.name'], 'chat');
    assert.equal(ok?.attributes['gen_ai.provider.name'], 'openai');
    assert.equal(ok?.attributes['gen_ai.request.model'], 'gpt-4o-mini');
  });
});
