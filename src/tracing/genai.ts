/**
 * OpenTelemetry GenAI semantic conventions for LLM calls: client spans named
 * `{gen_ai.operation.name} {gen_ai.request.model}` with the request, response and usage attributes, and
 * the `gen_ai.client.token.usage` / `gen_ai.client.operation.duration` histograms through the
 * `@opentelemetry/api` metrics API (no-ops until the application registers an SDK `MeterProvider`).
 *
 * @module
 */
import { performance } from 'node:perf_hooks';
import {
  type Tracer as ApiTracer,
  type Attributes,
  context,
  type Histogram,
  type MeterProvider,
  metrics,
  type Span,
  SpanKind,
  type SpanOptions,
  trace,
  ValueType,
} from '@opentelemetry/api';
import { runInSpan } from './run-in-span.ts';
import { tokenUsage } from './token-usage.ts';
import { TRACER_SCOPE, Tracer } from './tracer.ts';

/** Attribute names of the GenAI conventions used here. */
export const GenAIAttributes = {
  OPERATION_NAME: 'gen_ai.operation.name',
  PROVIDER_NAME: 'gen_ai.provider.name',
  REQUEST_MODEL: 'gen_ai.request.model',
  RESPONSE_MODEL: 'gen_ai.response.model',
  RESPONSE_ID: 'gen_ai.response.id',
  RESPONSE_FINISH_REASONS: 'gen_ai.response.finish_reasons',
  USAGE_INPUT_TOKENS: 'gen_ai.usage.input_tokens',
  USAGE_OUTPUT_TOKENS: 'gen_ai.usage.output_tokens',
  USAGE_CACHE_READ_INPUT_TOKENS: 'gen_ai.usage.cache_read.input_tokens',
  USAGE_CACHE_CREATION_INPUT_TOKENS: 'gen_ai.usage.cache_creation.input_tokens',
  TOKEN_TYPE: 'gen_ai.token.type',
  ERROR_TYPE: 'error.type',
  SERVER_ADDRESS: 'server.address',
  SERVER_PORT: 'server.port',
} as const;

/** Name of the token usage histogram. */
export const GEN_AI_TOKEN_USAGE_METRIC = 'gen_ai.client.token.usage';
/** Name of the operation duration histogram (seconds). */
export const GEN_AI_OPERATION_DURATION_METRIC = 'gen_ai.client.operation.duration';
/** Bucket boundaries the conventions recommend for `gen_ai.client.token.usage`. */
export const GEN_AI_TOKEN_USAGE_BUCKETS: readonly number[] = [
  1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
];
/** Bucket boundaries (seconds) the conventions recommend for `gen_ai.client.operation.duration`. */
export const GEN_AI_DURATION_BUCKETS: readonly number[] = [
  0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/** Well-known `gen_ai.operation.name` values; any other string is allowed. */
export type GenAIOperation =
  | 'chat'
  | 'embeddings'
  | 'text_completion'
  | 'generate_content'
  | 'execute_tool'
  | 'invoke_agent'
  | 'create_agent'
  | (string & {});

/** What a GenAI call is, known before it runs. */
export interface GenAIRequest {
  /** `gen_ai.operation.name`, e.g. `'chat'` or `'embeddings'`. */
  operation: GenAIOperation;
  /** `gen_ai.request.model`, e.g. `'gpt-4o-mini'`. */
  model: string;
  /** `gen_ai.provider.name`, e.g. `'openai'`, `'anthropic'`, `'aws.bedrock'`. */
  provider: string;
  /** `server.address` of the upstream. */
  serverAddress?: string;
  /** `server.port` of the upstream. */
  serverPort?: number;
  /** More span attributes (`gen_ai.request.temperature`, `gen_ai.request.max_tokens`, ...). */
  attributes?: Attributes;
}

/** What a GenAI call reported back. */
export interface GenAIUsage {
  /** Every prompt token, cached or not (see {@link tokenUsage}). */
  inputTokens?: number;
  outputTokens?: number;
  /** Prompt tokens read from the provider's prompt cache, a part of `inputTokens`. */
  cacheReadInputTokens?: number;
  /** Prompt tokens written to the provider's prompt cache, a part of `inputTokens`. */
  cacheCreationInputTokens?: number;
  responseModel?: string;
  responseId?: string;
  finishReasons?: string[];
}

/** Span name by the conventions: `{operation} {model}`. */
export function genAISpanName(request: Pick<GenAIRequest, 'operation' | 'model'>): string {
  return request.model ? `${request.operation} ${request.model}` : request.operation;
}

/** The span attributes of `request`. */
export function genAIAttributes(request: GenAIRequest): Attributes {
  const attributes: Attributes = {
    ...request.attributes,
    [GenAIAttributes.OPERATION_NAME]: request.operation,
    [GenAIAttributes.PROVIDER_NAME]: request.provider,
    [GenAIAttributes.REQUEST_MODEL]: request.model,
  };
  if (request.serverAddress !== undefined) attributes[GenAIAttributes.SERVER_ADDRESS] = request.serverAddress;
  if (request.serverPort !== undefined) attributes[GenAIAttributes.SERVER_PORT] = request.serverPort;
  return attributes;
}

/**
 * Reads usage from a provider response body: OpenAI chat/completions/embeddings
 * (`usage.prompt_tokens`/`completion_tokens`), the OpenAI Responses API and Anthropic
 * (`usage.input_tokens`/`output_tokens`, with Anthropic's cache reads and writes counted as input: see
 * {@link tokenUsage}), plus `model`, `id` and finish reasons. Unknown shapes give `{}`.
 */
export function usageFromResponse(result: unknown): GenAIUsage {
  if (result === null || typeof result !== 'object') return {};
  const r = result as {
    usage?: Record<string, unknown>;
    model?: unknown;
    id?: unknown;
    choices?: unknown;
    stop_reason?: unknown;
  };
  const usage: GenAIUsage = {};
  const tokens = tokenUsage(r.usage);
  if (tokens !== undefined) {
    usage.inputTokens = tokens.input;
    // An answer without output (embeddings) reports none rather than zero.
    const u = r.usage as Record<string, unknown>;
    if (u.completion_tokens !== undefined || u.output_tokens !== undefined)
      usage.outputTokens = tokens.output;
    if (tokens.cacheRead !== undefined) usage.cacheReadInputTokens = tokens.cacheRead;
    if (tokens.cacheWrite !== undefined) usage.cacheCreationInputTokens = tokens.cacheWrite;
  }
  if (typeof r.model === 'string') usage.responseModel = r.model;
  if (typeof r.id === 'string') usage.responseId = r.id;
  if (Array.isArray(r.choices)) {
    const reasons = r.choices
      .map((c: unknown) => (c as { finish_reason?: unknown } | null)?.finish_reason)
      .filter((x): x is string => typeof x === 'string');
    if (reasons.length > 0) usage.finishReasons = reasons;
  } else if (typeof r.stop_reason === 'string') {
    usage.finishReasons = [r.stop_reason];
  }
  return usage;
}

/** Sets the response and usage attributes on `span`. */
export function setGenAIUsage(span: Span, usage: GenAIUsage): void {
  try {
    if (usage.responseModel !== undefined)
      span.setAttribute(GenAIAttributes.RESPONSE_MODEL, usage.responseModel);
    if (usage.responseId !== undefined) span.setAttribute(GenAIAttributes.RESPONSE_ID, usage.responseId);
    if (usage.finishReasons !== undefined) {
      span.setAttribute(GenAIAttributes.RESPONSE_FINISH_REASONS, usage.finishReasons);
    }
    if (usage.inputTokens !== undefined)
      span.setAttribute(GenAIAttributes.USAGE_INPUT_TOKENS, usage.inputTokens);
    if (usage.outputTokens !== undefined)
      span.setAttribute(GenAIAttributes.USAGE_OUTPUT_TOKENS, usage.outputTokens);
    if (usage.cacheReadInputTokens !== undefined) {
      span.setAttribute(GenAIAttributes.USAGE_CACHE_READ_INPUT_TOKENS, usage.cacheReadInputTokens);
    }
    if (usage.cacheCreationInputTokens !== undefined) {
      span.setAttribute(GenAIAttributes.USAGE_CACHE_CREATION_INPUT_TOKENS, usage.cacheCreationInputTokens);
    }
  } catch {
    // Telemetry never throws into the caller.
  }
}

interface Instruments {
  tokens: Histogram;
  duration: Histogram;
}

let instrumentsOf: MeterProvider | undefined;
let instruments: Instruments | undefined;

// The metrics API has no proxy: instruments taken from the no-op provider stay no-ops, so they are taken
// again whenever the global provider changes.
function currentInstruments(): Instruments {
  const provider = metrics.getMeterProvider();
  if (provider !== instrumentsOf || instruments === undefined) {
    const meter = provider.getMeter(TRACER_SCOPE);
    instruments = {
      tokens: meter.createHistogram(GEN_AI_TOKEN_USAGE_METRIC, {
        description: 'Number of input and output tokens used.',
        unit: '{token}',
        valueType: ValueType.INT,
        advice: { explicitBucketBoundaries: [...GEN_AI_TOKEN_USAGE_BUCKETS] },
      }),
      duration: meter.createHistogram(GEN_AI_OPERATION_DURATION_METRIC, {
        description: 'GenAI operation duration.',
        unit: 's',
        advice: { explicitBucketBoundaries: [...GEN_AI_DURATION_BUCKETS] },
      }),
    };
    instrumentsOf = provider;
  }
  return instruments;
}

/**
 * Records one call on the GenAI histograms: its duration, and its input and output token counts when
 * known. `errorType` marks a failed call (`error.type`).
 */
export function recordGenAIMetrics(
  request: GenAIRequest,
  result: { durationSeconds: number; usage?: GenAIUsage; errorType?: string },
): void {
  try {
    const { tokens, duration } = currentInstruments();
    const attributes: Attributes = {
      [GenAIAttributes.OPERATION_NAME]: request.operation,
      [GenAIAttributes.PROVIDER_NAME]: request.provider,
      [GenAIAttributes.REQUEST_MODEL]: request.model,
    };
    if (result.usage?.responseModel !== undefined) {
      attributes[GenAIAttributes.RESPONSE_MODEL] = result.usage.responseModel;
    }
    if (request.serverAddress !== undefined)
      attributes[GenAIAttributes.SERVER_ADDRESS] = request.serverAddress;
    if (request.serverPort !== undefined) attributes[GenAIAttributes.SERVER_PORT] = request.serverPort;
    if (result.errorType !== undefined) attributes[GenAIAttributes.ERROR_TYPE] = result.errorType;
    duration.record(result.durationSeconds, attributes);
    const input = result.usage?.inputTokens;
    const output = result.usage?.outputTokens;
    if (input !== undefined) tokens.record(input, { ...attributes, [GenAIAttributes.TOKEN_TYPE]: 'input' });
    if (output !== undefined)
      tokens.record(output, { ...attributes, [GenAIAttributes.TOKEN_TYPE]: 'output' });
  } catch {
    // Telemetry never throws into the caller.
  }
}

function errorTypeOf(error: unknown): string {
  if (error instanceof Error) return error.name;
  return error === null ? 'null' : typeof error;
}

/** Options of {@link withGenAISpan}. */
export interface GenAISpanOptions<R> {
  /** Reads usage from the result. @default usageFromResponse */
  usage?: (result: R) => GenAIUsage | undefined;
}

/**
 * Runs the LLM call `fn` in a CLIENT span named `{operation} {model}` with the GenAI attributes, records
 * the usage read from its result on the span and on the GenAI histograms, and on failure the `error.type`.
 * `tracer` is a clawperf `Tracer`, an OpenTelemetry tracer, or `undefined` for the global one.
 *
 * @example
 * ```ts
 * const reply = await withGenAISpan(tracer, { operation: 'chat', model: 'gpt-4o-mini', provider: 'openai' },
 *   () => openai.chat.completions.create({ model: 'gpt-4o-mini', messages }));
 * ```
 */
export function withGenAISpan<R>(
  tracer: Tracer | ApiTracer | undefined,
  request: GenAIRequest,
  fn: (span: Span) => R | Promise<R>,
  options?: GenAISpanOptions<R>,
): Promise<R> {
  const read = options?.usage ?? (usageFromResponse as (result: R) => GenAIUsage);
  const name = genAISpanName(request);
  const spanOptions: SpanOptions = { kind: SpanKind.CLIENT, attributes: genAIAttributes(request) };
  const start = performance.now();
  const seconds = () => (performance.now() - start) / 1e3;
  const body = (span: Span): Promise<R> =>
    Promise.resolve()
      .then(() => fn(span))
      .then(
        (result) => {
          let usage: GenAIUsage | undefined;
          try {
            usage = read(result);
          } catch {
            usage = undefined;
          }
          if (usage !== undefined) setGenAIUsage(span, usage);
          recordGenAIMetrics(request, {
            durationSeconds: seconds(),
            ...(usage === undefined ? {} : { usage }),
          });
          return result;
        },
        (error: unknown) => {
          recordGenAIMetrics(request, { durationSeconds: seconds(), errorType: errorTypeOf(error) });
          throw error;
        },
      );
  if (tracer instanceof Tracer) return tracer.withSpan(name, body, spanOptions);
  const otel = tracer ?? trace.getTracer(TRACER_SCOPE);
  return runInSpan(otel, context, name, spanOptions, context.active(), body);
}
