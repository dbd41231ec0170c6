/**
 * `Tracer`: the seed's convenience surface (`startSpan`, `endSpan`, `setTag`, `log`, `withSpan`) on the
 * OpenTelemetry JS SDK. Spans are OpenTelemetry spans with nanosecond-resolution times; the active span
 * travels with async work through `AsyncLocalStorage`, so nested calls become children without a parent
 * being passed by hand; every span is exported when it ends, so the tracer holds no span after that.
 *
 * The tracer and its options are here. Beside it: what a `Tracer` installs globally (propagators, context
 * manager, the forwarding provider) in `global-provider.ts`; running a function in a span, which the
 * `@Trace` decorator and the GenAI and request spans share with it, in `run-in-span.ts`; the counts behind
 * `stats()` in `span-counting.ts`.
 *
 * @module
 */
import {
  type Tracer as ApiTracer,
  type AttributeValue,
  type Context,
  context,
  isSpanContextValid,
  type Span,
  type SpanContext,
  type SpanOptions,
  trace,
} from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { defaultResource, resourceFromAttributes } from '@opentelemetry/resources';
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  ConsoleSpanExporter,
  InMemorySpanExporter,
  ParentBasedSampler,
  type ReadableSpan,
  SimpleSpanProcessor,
  type SpanExporter,
  TraceIdRatioBasedSampler,
} from '@opentelemetry/sdk-trace-base';
import { ClosedError } from '../errors.ts';
import * as check from '../internal/options.ts';
import { TRACER_NAME } from '../internal/telemetry.ts';
import { type ForwardingProvider, installGlobals, NOOP_TRACER } from './global-provider.ts';
import { type ContextRunner, recordError, runInSpan, SyncContext, safeStart } from './run-in-span.ts';
import { CountingExporter, countingProcessor } from './span-counting.ts';

/** Instrumentation scope name of every span clawperf starts. */
export const TRACER_SCOPE = TRACER_NAME;
/** Where the OTLP/HTTP exporter sends spans: an OpenTelemetry Collector's default HTTP receiver. */
export const DEFAULT_OTLP_URL = 'http://localhost:4318/v1/traces';
/** The exporter used when none is given. */
export const DEFAULT_EXPORTER = 'otlp';
/** Share of new root traces recorded. */
export const DEFAULT_SAMPLE_RATIO = 1;
/** Ended spans the batch processor holds before it drops new ones. */
export const DEFAULT_MAX_QUEUE_SIZE = 2048;
/** Spans sent in one export. */
export const DEFAULT_MAX_EXPORT_BATCH_SIZE = 512;
/** Delay between two scheduled batch exports, ms. */
export const DEFAULT_SCHEDULED_DELAY_MS = 5000;
/** How long one export may take before it is abandoned, ms. */
export const DEFAULT_EXPORT_TIMEOUT_MS = 10_000;

const EXPORTERS = ['otlp', 'console', 'memory'] as const;

/** Options of {@link Tracer}. */
export interface TracerOptions {
  /** `service.name` of every span's resource. Required. */
  serviceName: string;
  /** `service.version` of the resource, when given. */
  serviceVersion?: string;
  /** More resource attributes (`deployment.environment.name`, ...). */
  resourceAttributes?: Record<string, AttributeValue>;
  /**
   * Where ended spans go: `'otlp'` (OTLP/HTTP JSON to {@link TracerOptions.otlpUrl}), `'console'`,
   * `'memory'` (kept for {@link Tracer.getFinishedSpans}, for tests) or any OpenTelemetry `SpanExporter`.
   * @default 'otlp'
   */
  exporter?: 'otlp' | 'console' | 'memory' | SpanExporter;
  /** OTLP/HTTP traces endpoint. @default 'http://localhost:4318/v1/traces' */
  otlpUrl?: string;
  /** Extra HTTP headers sent with every OTLP export (an API key, ...). */
  otlpHeaders?: Record<string, string>;
  /**
   * Head sampling: the share of new root traces recorded; a span with a parent follows its parent's
   * decision (parent-based), so a trace is recorded whole or not at all, across services too.
   * @default 1
   */
  sampleRatio?: number;
  /**
   * `'batch'` queues ended spans and exports them in the background (bounded by `maxQueueSize`; spans
   * beyond it are dropped, never blocking the caller); `'simple'` exports each span as it ends.
   * @default 'simple' for the 'memory' and 'console' exporters, 'batch' otherwise
   */
  processor?: 'batch' | 'simple';
  /** Bound of the batch processor's queue. @default 2048 */
  maxQueueSize?: number;
  /** Spans per export, at most `maxQueueSize`. @default 512 */
  maxExportBatchSize?: number;
  /** Delay between scheduled batch exports, ms. @default 5000 */
  scheduledDelayMs?: number;
  /** Bound on one export, ms. @default 10000 */
  exportTimeoutMs?: number;
  /**
   * Make this tracer the one behind the global OpenTelemetry API (`trace.getTracer()`, and so `@Trace`
   * without a `tracer` and every area's spans), and install the `AsyncLocalStorage` context manager and
   * the W3C propagators globally if none is installed. The most recently constructed registered tracer
   * that is still open receives the global spans. With `false` nothing global changes: the tracer keeps
   * its own context manager, and only spans started through it link to each other.
   * @default true
   */
  registerGlobal?: boolean;
  /**
   * Keep the active span across `await` with `AsyncLocalStorage`. On Node 20 that hooks every promise in
   * the process, which costs a busy HTTP service about a sixth of its requests/s (measured in
   * BENCHMARKS.md). With `false` the active span holds only while the callback of `withSpan` or
   * `withContext` runs synchronously: a span started after an `await` inside it is a root unless it is
   * given a `parent`, and no global context manager is installed. Turn it off where spans are not
   * recorded, or where parents are passed explicitly.
   * @default true
   */
  asyncContext?: boolean;
}

/** Options of {@link Tracer.startSpan} and {@link Tracer.withSpan}. */
export interface StartSpanOptions extends SpanOptions {
  /**
   * The parent: a span, a span context (e.g. from another process) or a context (e.g. from
   * `extractTraceContext`). Defaults to the active span. A missing, invalid or ended parent is never an
   * error: an invalid one is ignored and the active span is used.
   */
  parent?: Span | SpanContext | Context | null;
}

/** Counters of a {@link Tracer}; every field only grows. */
export interface TracerStats {
  /** Recorded (sampled) spans started. */
  spansStarted: number;
  /** Recorded spans ended. */
  spansEnded: number;
  /** Spans the exporter accepted. */
  spansExported: number;
  /** Spans whose export failed (collector down, timeout, rejected). */
  spansExportFailed: number;
}

function isContext(value: object): value is Context {
  return (
    typeof (value as Context).getValue === 'function' && typeof (value as Context).setValue === 'function'
  );
}

function exporterOption(value: unknown): 'otlp' | 'console' | 'memory' | SpanExporter {
  if (value === undefined) return DEFAULT_EXPORTER;
  if (value !== null && typeof value === 'object' && typeof (value as SpanExporter).export === 'function') {
    return value as SpanExporter;
  }
  if (typeof value === 'string') return check.oneOf('options.exporter', value, EXPORTERS);
  return check.invalid('options.exporter', 'one of "otlp", "console", "memory" or a SpanExporter', value);
}

function urlOption(value: unknown): string {
  const url = value === undefined ? DEFAULT_OTLP_URL : check.string('options.otlpUrl', value);
  if (!URL.canParse(url) || !/^https?:$/.test(new URL(url).protocol)) {
    check.invalid('options.otlpUrl', 'an http(s) URL', url);
  }
  return url;
}

/**
 * A tracer on the OpenTelemetry SDK with the seed's convenience surface.
 *
 * Constructing one (with `registerGlobal`, the default) registers it behind the global OpenTelemetry API
 * and installs the `AsyncLocalStorage` context manager and W3C propagators when the application has not
 * installed its own. Telemetry never throws into the caller: exporter failures are counted in
 * {@link Tracer.stats}, and after {@link Tracer.close} spans are non-recording while the work still runs.
 *
 * @example
 * ```ts
 * const tracer = new Tracer({ serviceName: 'gateway' });   // OTLP/HTTP to localhost:4318
 * await tracer.withSpan('chat', async () => {
 *   await tracer.withSpan('cache.get', () => cache.get(key));   // a child, no parent passed
 * });
 * await tracer.close();
 * ```
 */
export class Tracer {
  /** Fields of {@link Tracer.stats} that only grow (all of them). */
  readonly statsCounters: readonly string[] = [
    'spansStarted',
    'spansEnded',
    'spansExported',
    'spansExportFailed',
  ];
  /** `service.name` of the spans. */
  readonly serviceName: string;

  readonly #provider: BasicTracerProvider;
  readonly #memory: InMemorySpanExporter | undefined;
  readonly #runner: ContextRunner;
  readonly #forwarding: ForwardingProvider | undefined;
  readonly #counts: TracerStats = { spansStarted: 0, spansEnded: 0, spansExported: 0, spansExportFailed: 0 };
  #otel: ApiTracer;
  #closing: Promise<void> | undefined;

  constructor(options: TracerOptions) {
    const o = check.object<Partial<TracerOptions>>('options', options);
    this.serviceName = check.string('options.serviceName', o.serviceName);
    const serviceVersion =
      o.serviceVersion === undefined ? undefined : check.string('options.serviceVersion', o.serviceVersion);
    const extra = check.object<Record<string, AttributeValue>>(
      'options.resourceAttributes',
      o.resourceAttributes,
    );
    const exporterChoice = exporterOption(o.exporter);
    const otlpUrl = urlOption(o.otlpUrl);
    const otlpHeaders = check.object<Record<string, string>>('options.otlpHeaders', o.otlpHeaders);
    for (const [key, value] of Object.entries(otlpHeaders)) check.string(`options.otlpHeaders.${key}`, value);
    const sampleRatio =
      o.sampleRatio === undefined ? DEFAULT_SAMPLE_RATIO : check.ratio('options.sampleRatio', o.sampleRatio);
    const simpleByDefault = exporterChoice === 'memory' || exporterChoice === 'console';
    const processor =
      o.processor === undefined
        ? simpleByDefault
          ? 'simple'
          : 'batch'
        : check.oneOf('options.processor', o.processor, ['batch', 'simple'] as const);
    const maxQueueSize =
      o.maxQueueSize === undefined
        ? DEFAULT_MAX_QUEUE_SIZE
        : check.integer('options.maxQueueSize', o.maxQueueSize, 1);
    const maxExportBatchSize =
      o.maxExportBatchSize === undefined
        ? Math.min(DEFAULT_MAX_EXPORT_BATCH_SIZE, maxQueueSize)
        : check.compared(
            'options.maxExportBatchSize',
            check.integer('options.maxExportBatchSize', o.maxExportBatchSize, 1),
            '<=',
            'options.maxQueueSize',
            maxQueueSize,
          );
    const scheduledDelayMs =
      o.scheduledDelayMs === undefined
        ? DEFAULT_SCHEDULED_DELAY_MS
        : check.integer('options.scheduledDelayMs', o.scheduledDelayMs, 1);
    const exportTimeoutMs =
      o.exportTimeoutMs === undefined
        ? DEFAULT_EXPORT_TIMEOUT_MS
        : check.integer('options.exportTimeoutMs', o.exportTimeoutMs, 1);
    const registerGlobal =
      o.registerGlobal === undefined ? true : check.boolean('options.registerGlobal', o.registerGlobal);
    const asyncContext =
      o.asyncContext === undefined ? true : check.boolean('options.asyncContext', o.asyncContext);

    this.#memory = exporterChoice === 'memory' ? new InMemorySpanExporter() : undefined;
    const base =
      exporterChoice === 'memory'
        ? this.#memory!
        : exporterChoice === 'console'
          ? new ConsoleSpanExporter()
          : exporterChoice === 'otlp'
            ? new OTLPTraceExporter({ url: otlpUrl, headers: otlpHeaders, timeoutMillis: exportTimeoutMs })
            : exporterChoice;
    const exporter = new CountingExporter(base, this.#counts);
    const spanProcessor =
      processor === 'simple'
        ? new SimpleSpanProcessor(exporter)
        : new BatchSpanProcessor(exporter, {
            maxQueueSize,
            maxExportBatchSize,
            scheduledDelayMillis: scheduledDelayMs,
            exportTimeoutMillis: exportTimeoutMs,
          });
    this.#provider = new BasicTracerProvider({
      resource: defaultResource().merge(
        resourceFromAttributes({
          ...extra,
          'service.name': this.serviceName,
          ...(serviceVersion === undefined ? {} : { 'service.version': serviceVersion }),
        }),
      ),
      sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(sampleRatio) }),
      spanProcessors: [countingProcessor(this.#counts), spanProcessor],
    });
    this.#otel = this.#provider.getTracer(TRACER_SCOPE);
    this.#forwarding = registerGlobal ? installGlobals(asyncContext) : undefined;
    this.#forwarding?.open.push(this.#provider);
    this.#runner = !asyncContext
      ? new SyncContext()
      : registerGlobal
        ? context
        : new AsyncLocalStorageContextManager().enable();
  }

  /** The underlying OpenTelemetry tracer (scope `clawperf`), for code that speaks the OpenTelemetry API. */
  get otelTracer(): ApiTracer {
    return this.#otel;
  }

  /** Whether the global OpenTelemetry API currently sends its spans to this tracer. */
  get isGlobal(): boolean {
    return this.#forwarding !== undefined && this.#forwarding.open.at(-1) === this.#provider;
  }

  /** The active span in this tracer's context, if any. */
  activeSpan(): Span | undefined {
    return trace.getSpan(this.#runner.active());
  }

  /** The context `startSpan` and `withSpan` start from by default (the active one). */
  activeContext(): Context {
    return this.#runner.active();
  }

  /**
   * Starts a span and returns it; it does not become active (use {@link Tracer.withSpan} for that). Its
   * parent is `options.parent` when that is a usable span, span context or context, else the active span.
   * End it with {@link Tracer.endSpan} (or `span.end()`).
   */
  startSpan(name: string, options?: StartSpanOptions): Span {
    return safeStart(this.#otel, name, options, this.#parentContext(options?.parent));
  }

  /** Ends `span`. Ending a span twice or passing nothing is harmless. */
  endSpan(span: Span | undefined, error?: unknown): void {
    if (span === undefined || span === null) return;
    try {
      if (error !== undefined) recordError(span, error);
      span.end();
    } catch {
      // Telemetry never throws into the caller.
    }
  }

  /** Sets an attribute on `span` (the seed's tag). Values that are not valid attribute values are dropped. */
  setTag(span: Span | undefined, key: string, value: AttributeValue): void {
    try {
      span?.setAttribute(key, value);
    } catch {
      // Telemetry never throws into the caller.
    }
  }

  /** Adds a timestamped event named `message` to `span` (the seed's log). */
  log(span: Span | undefined, message: string, attributes?: Record<string, AttributeValue>): void {
    try {
      span?.addEvent(message, attributes);
    } catch {
      // Telemetry never throws into the caller.
    }
  }

  /**
   * Runs `fn` in a new span that is active for all the work it starts (awaits, timers, `Promise.all`), so
   * spans started inside are its children. The span ends when `fn`'s promise settles; a thrown or
   * rejected error is recorded on it (exception event, ERROR status) and passed on unchanged.
   */
  withSpan<T>(name: string, fn: (span: Span) => T | Promise<T>, options?: StartSpanOptions): Promise<T> {
    try {
      return Promise.resolve(this.run(name, fn, options));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * Like {@link Tracer.withSpan}, but hands back `fn`'s result as it is: a synchronous `fn` stays
   * synchronous (its span ends when it returns or throws), a promise is returned with the span ending when
   * it settles.
   */
  run<T>(name: string, fn: (span: Span) => T, options?: StartSpanOptions): T {
    const parent =
      options?.parent === undefined ? this.#runner.active() : this.#parentContext(options.parent);
    return runInSpan(this.#otel, this.#runner, name, options, parent, fn);
  }

  /** Runs `fn` with this tracer's span context set to `ctx` (e.g. one extracted from request headers). */
  withContext<T>(ctx: Context, fn: () => T): T {
    return this.#runner.with(ctx, fn);
  }

  /** Spans ended so far, with the `'memory'` exporter (an empty array with any other); `close()` clears them. */
  getFinishedSpans(): ReadableSpan[] {
    return this.#memory?.getFinishedSpans() ?? [];
  }

  /** Forgets the spans {@link Tracer.getFinishedSpans} holds. */
  resetFinishedSpans(): void {
    this.#memory?.reset();
  }

  /** Counters; see {@link TracerStats}. */
  stats(): TracerStats {
    return { ...this.#counts };
  }

  /**
   * Exports every ended span now. Resolves even when the export fails (the failure is counted in
   * `spansExportFailed`); rejects with `ClosedError` after {@link Tracer.close}.
   */
  async flush(): Promise<void> {
    if (this.#closing !== undefined) throw new ClosedError('Tracer');
    try {
      await this.#provider.forceFlush();
    } catch {
      // Counted by the exporter wrapper.
    }
  }

  /**
   * Exports what is queued (bounded by `exportTimeoutMs`), shuts the SDK down and hands the global API
   * back to the previously registered tracer. Idempotent. Spans started afterwards are non-recording.
   */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  async #shutdown(): Promise<void> {
    this.#otel = NOOP_TRACER;
    const open = this.#forwarding?.open;
    const at = open?.indexOf(this.#provider) ?? -1;
    if (at >= 0) open!.splice(at, 1);
    try {
      await this.#provider.shutdown();
    } catch {
      // Counted by the exporter wrapper.
    }
  }

  #parentContext(parent: StartSpanOptions['parent']): Context {
    const active = this.#runner.active();
    if (parent === undefined || parent === null || typeof parent !== 'object') return active;
    try {
      if (typeof (parent as Span).spanContext === 'function') return trace.setSpan(active, parent as Span);
      if (isContext(parent)) return parent;
      if (isSpanContextValid(parent as SpanContext))
        return trace.setSpanContext(active, parent as SpanContext);
    } catch {
      // An object that only looks like a span: fall back to the active context.
    }
    return active;
  }
}
