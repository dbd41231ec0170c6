/**
 * Every model call the gateway makes, in one place: it picks the backend (the built-in local models or the
 * HTTP upstream), runs the call under backpressure, in a GenAI client span when traces are exported,
 * records the `gen_ai.client.*` histograms, and turns an answer that is not a success into an error so
 * nothing caches it. It is itself an {@link Upstream}, so a route never branches on a model name.
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
import type { GatewayCounts } from './context.ts';
import { rootCause } from './error-answers.ts';
import { LOCAL_MODELS } from './local-upstream.ts';
import type {
  Api,
  CallOptions,
  Operation,
  Upstream,
  UpstreamIdentity,
  UpstreamReply,
  UpstreamRequest,
} from './upstream-interface.ts';

/** What the guarded upstream wraps and where it records. */
export interface GuardedUpstreamOptions {
  /** The built-in local models. */
  local: Upstream;
  /** Every other model's upstream: the router over the deployments. */
  remote: Upstream;
  backpressure: BackpressureController;
  tracer: Tracer;
  /** Make a GenAI client span per call (only worth it when spans are exported). */
  clientSpans: boolean;
  counts: GatewayCounts;
  /** Where the GenAI histograms are registered. */
  registry: Registry;
}

type Child = { observe(value: number): void };

/** `gen_ai.operation.name` of each operation: a response is a chat by the conventions. */
const GENAI_OPERATION: Readonly<Record<Operation, string>> = {
  chat: 'chat',
  embeddings: 'embeddings',
  count_tokens: 'count_tokens',
  responses: 'chat',
};

export class GuardedUpstream implements Upstream {
  readonly #local: Upstream;
  readonly #remote: Upstream;
  readonly #backpressure: BackpressureController;
  readonly #tracer: Tracer;
  readonly #clientSpans: boolean;
  readonly #counts: GatewayCounts;
  readonly #duration: Histogram;
  readonly #tokens: Histogram;
  /** Label children by label values: a child observes without prom-client validating labels each time. */
  readonly #children = new Map<string, Child>();

  constructor(options: GuardedUpstreamOptions) {
    this.#local = options.local;
    this.#remote = options.remote;
    this.#backpressure = options.backpressure;
    this.#tracer = options.tracer;
    this.#clientSpans = options.clientSpans;
    this.#counts = options.counts;
    this.#duration = new Histogram({
      name: 'gen_ai_client_operation_duration_seconds',
      help: 'GenAI operation duration (gen_ai.client.operation.duration), upstream calls only',
      labelNames: ['gen_ai_operation_name', 'gen_ai_request_model', 'gen_ai_provider_name', 'error_type'],
      buckets: [...GEN_AI_DURATION_BUCKETS],
      registers: [options.registry],
    });
    this.#tokens = new Histogram({
      name: 'gen_ai_client_token_usage',
      help: 'Tokens used per GenAI operation (gen_ai.client.token.usage), upstream calls only',
      labelNames: [
        'gen_ai_operation_name',
        'gen_ai_request_model',
        'gen_ai_provider_name',
        'gen_ai_token_type',
      ],
      buckets: [...GEN_AI_TOKEN_USAGE_BUCKETS],
      registers: [options.registry],
    });
  }

  identity(call: Pick<UpstreamRequest, 'api' | 'model'>): UpstreamIdentity {
    return this.#backend(call).identity(call);
  }

  /** The GenAI description of a call of `operation` on `model` in `api`. */
  describe(api: Api, operation: Operation, model: string): GenAIRequest {
    return { operation: GENAI_OPERATION[operation], model, ...this.identity({ api, model }) };
  }

  /**
   * Runs the call under backpressure (a stream holds its slot until its answer starts), in a client span
   * when spans are exported, and records the GenAI metrics. An answer that is not a success rejects with
   * {@link UpstreamError} whose `cause` carries it, so the client gets the upstream's own error.
   */
  async call(request: UpstreamRequest, options?: CallOptions): Promise<UpstreamReply> {
    const { operation, model } = request;
    const backend = this.#backend(request);
    const genAI: GenAIRequest = {
      operation: GENAI_OPERATION[operation],
      model,
      ...backend.identity(request),
    };
    const start = performance.now();
    const attempt = async (): Promise<UpstreamReply> => {
      const reply = await backend.call(request, options);
      if (reply.status >= 300) {
        throw new UpstreamError(
          `the upstream answered ${reply.status}`,
          { status: reply.status },
          { cause: { status: reply.status, body: reply.json } },
        );
      }
      return reply;
    };
    try {
      const reply = await this.#backpressure.run(() => {
        this.#counts.upstreamCalls++;
        this.#counts.upstreamItems += request.items;
        return this.#clientSpans
          ? withGenAISpan(this.#tracer, genAI, attempt, { usage: (r) => usageFromResponse(r.json) })
          : attempt();
      });
      this.#observe(this.#duration, genAI, 'error_type', '', (performance.now() - start) / 1e3);
      if (reply.json !== undefined) {
        const usage = usageFromResponse(reply.json);
        if (usage.inputTokens !== undefined) {
          this.#observe(this.#tokens, genAI, 'gen_ai_token_type', 'input', usage.inputTokens);
        }
        if (usage.outputTokens !== undefined) {
          this.#observe(this.#tokens, genAI, 'gen_ai_token_type', 'output', usage.outputTokens);
        }
      }
      return reply;
    } catch (error) {
      const e = rootCause(error);
      if (e instanceof OverloadedError || e instanceof QueueTimeoutError) this.#counts.overloaded++;
      const type = e instanceof ClawperfError ? e.code : 'error';
      this.#observe(this.#duration, genAI, 'error_type', type, (performance.now() - start) / 1e3);
      throw error;
    }
  }

  #backend(call: Pick<UpstreamRequest, 'api' | 'model'>): Upstream {
    // The route checked the model: one the local models do not serve has a deployment in its API.
    return LOCAL_MODELS.includes(call.model) ? this.#local : this.#remote;
  }

  #observe(histogram: Histogram, genAI: GenAIRequest, label: string, value: string, amount: number): void {
    const id = `${histogram === this.#duration ? 'd' : 't'}\u0000${genAI.provider}\u0000${genAI.operation}\u0000${genAI.model}\u0000${value}`;
    let child = this.#children.get(id);
    if (child === undefined) {
      child = histogram.labels({
        gen_ai_operation_name: genAI.operation,
        gen_ai_request_model: genAI.model,
        gen_ai_provider_name: genAI.provider,
        [label]: value,
      });
      this.#children.set(id, child);
    }
    child.observe(amount);
  }
}
