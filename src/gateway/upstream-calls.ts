/**
 * Upstream calls as the gateway makes them: under backpressure, in a GenAI client span when traces are
 * exported, recorded in the `gen_ai.client.*` histograms, with non-success answers turned into errors.
 *
 * @module
 */
import { Histogram, type Registry } from 'prom-client';
import { ClawperfError, OverloadedError, QueueTimeoutError, UpstreamError } from '../errors.ts';
import type { BackpressureController } from '../resources/index.ts';
import {
  GEN_AI_DURATION_BUCKETS,
  GEN_AI_TOKEN_USAGE_BUCKETS,
  type GenAIRequest,
  type Tracer,
  usageFromResponse,
  withGenAISpan,
} from '../tracing/index.ts';
import type { GatewayConfig } from './config.ts';
import type { GatewayContext, GatewayCounts } from './context.ts';
import { rootCause } from './error-answers.ts';
import { LOCAL_MODELS } from './local-upstream.ts';
import type { UpstreamClient } from './upstream.ts';

/** Provider name recorded on spans of calls answered by the built-in local models. */
export const LOCAL_PROVIDER = 'clawperf.local';

/** What upstream calls use. */
export interface UpstreamCallsOptions {
  config: GatewayConfig;
  upstream: UpstreamClient | undefined;
  backpressure: BackpressureController;
  tracer: Tracer;
  counts: GatewayCounts;
  /** Where the GenAI histograms are registered. */
  registry: Registry;
}

/** The gateway's `upstreamCall` and `expectSuccess`, and the GenAI description of a call. */
export function createUpstreamCalls(options: UpstreamCallsOptions): Pick<
  GatewayContext,
  'upstreamCall' | 'expectSuccess'
> & {
  genAIRequest(operation: 'chat' | 'embeddings', model: string): GenAIRequest;
} {
  const { config, upstream, backpressure, tracer, counts, registry } = options;
  const genAIDuration = new Histogram({
    name: 'gen_ai_client_operation_duration_seconds',
    help: 'GenAI operation duration (gen_ai.client.operation.duration), upstream calls only',
    labelNames: ['gen_ai_operation_name', 'gen_ai_request_model', 'gen_ai_provider_name', 'error_type'],
    buckets: [...GEN_AI_DURATION_BUCKETS],
    registers: [registry],
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
    registers: [registry],
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

  return { upstreamCall, expectSuccess, genAIRequest };
}
