/**
 * clawperf/tracing: OpenTelemetry tracing with async context, the `@Trace` decorator, W3C trace context
 * propagation for node:http, fetch and Fastify, and GenAI semantic conventions for LLM calls.
 *
 * @module
 */
export {
  GEN_AI_DURATION_BUCKETS,
  GEN_AI_OPERATION_DURATION_METRIC,
  GEN_AI_TOKEN_USAGE_BUCKETS,
  GEN_AI_TOKEN_USAGE_METRIC,
  GenAIAttributes,
  type GenAIOperation,
  type GenAIRequest,
  type GenAISpanOptions,
  type GenAIUsage,
  genAIAttributes,
  genAISpanName,
  recordGenAIMetrics,
  setGenAIUsage,
  usageFromResponse,
  withGenAISpan,
} from './genai.ts';
export {
  extractTraceContext,
  type FastifyTracingOptions,
  fastifyTracing,
  type HeaderSource,
  type HeaderTarget,
  injectTraceContext,
  requestSpan,
  traceHeaders,
} from './propagation.ts';
export { type TokenUsage, tokenUsage, totalTokenUsage } from './token-usage.ts';
export { Trace, type TraceDecorator, type TraceOptions } from './trace.ts';
export {
  DEFAULT_EXPORT_TIMEOUT_MS,
  DEFAULT_EXPORTER,
  DEFAULT_MAX_EXPORT_BATCH_SIZE,
  DEFAULT_MAX_QUEUE_SIZE,
  DEFAULT_OTLP_URL,
  DEFAULT_SAMPLE_RATIO,
  DEFAULT_SCHEDULED_DELAY_MS,
  type StartSpanOptions,
  TRACER_SCOPE,
  Tracer,
  type TracerOptions,
  type TracerStats,
} from './tracer.ts';
