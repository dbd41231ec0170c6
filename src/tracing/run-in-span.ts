/**
 * Running a function in a span: the span is active for everything the function starts, ends when its
 * result settles, and records what it threw. `Tracer`, the `@Trace` decorator, the GenAI helpers and the
 * request spans of `propagation.ts` all run their work through {@link runInSpan} and {@link recordError}.
 *
 * @module
 */
import {
  type Tracer as ApiTracer,
  type Context,
  INVALID_SPAN_CONTEXT,
  ROOT_CONTEXT,
  type Span,
  type SpanOptions,
  SpanStatusCode,
  trace,
} from '@opentelemetry/api';

/** `context` from `@opentelemetry/api` or a context manager of our own: what running in a span needs. */
export interface ContextRunner {
  active(): Context;
  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(
    context: Context,
    fn: F,
    thisArg?: ThisParameterType<F>,
    ...args: A
  ): ReturnType<F>;
}

/**
 * Marks `span` failed with `error`: an exception event, ERROR status and `error.type`. A thrown value that
 * is not an `Error` is described by its type only, since it may hold anything.
 */
export function recordError(span: Span, error: unknown): void {
  try {
    if (error instanceof Error) {
      span.recordException(error);
      span.setStatus({ code: SpanStatusCode.ERROR, message: error.message });
      span.setAttribute('error.type', error.name);
    } else {
      span.setStatus({ code: SpanStatusCode.ERROR });
      span.setAttribute('error.type', error === null ? 'null' : typeof error);
    }
  } catch {
    // A span implementation that throws must not replace the caller's error.
  }
}

/** Ends `span` when `result` settles (now, if it is not a promise) and hands `result` back unchanged. */
function settle<T>(span: Span, result: T): T {
  if (
    result !== null &&
    (typeof result === 'object' || typeof result === 'function') &&
    typeof (result as { then?: unknown }).then === 'function'
  ) {
    return (result as unknown as PromiseLike<unknown>).then(
      (value) => {
        span.end();
        return value;
      },
      (error: unknown) => {
        recordError(span, error);
        span.end();
        throw error;
      },
    ) as T;
  }
  span.end();
  return result;
}

function invokeWithSpan<T>(fn: (span: Span) => T, span: Span): T {
  let result: T;
  try {
    result = fn(span);
  } catch (error) {
    recordError(span, error);
    span.end();
    throw error;
  }
  return settle(span, result);
}

/** Starts a span, falling back to a non-recording one if the SDK throws: telemetry never breaks the call. */
export function safeStart(
  otel: ApiTracer,
  name: string,
  options: SpanOptions | undefined,
  ctx: Context,
): Span {
  try {
    return otel.startSpan(name, options, ctx);
  } catch {
    return trace.wrapSpanContext(INVALID_SPAN_CONTEXT);
  }
}

/**
 * Runs `fn` in a new span, child of `parent`, that is active for everything `fn` starts, sync or async;
 * the span ends when the result settles (at once for a plain value) and records a thrown or rejected
 * error. `Tracer`, the `@Trace` decorator and the GenAI helper share it.
 */
export function runInSpan<T>(
  otel: ApiTracer,
  runner: ContextRunner,
  name: string,
  options: SpanOptions | undefined,
  parent: Context,
  fn: (span: Span) => T,
): T {
  const span = safeStart(otel, name, options, parent);
  return runner.with(trace.setSpan(parent, span), invokeWithSpan<T>, undefined, fn, span);
}

/** The active context for the synchronous run of `with` only: no `AsyncLocalStorage`, no promise hooks. */
export class SyncContext implements ContextRunner {
  #current: Context = ROOT_CONTEXT;

  active(): Context {
    return this.#current;
  }

  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(
    ctx: Context,
    fn: F,
    thisArg?: ThisParameterType<F>,
    ...args: A
  ): ReturnType<F> {
    const previous = this.#current;
    this.#current = ctx;
    try {
      return fn.call(thisArg, ...args);
    } finally {
      this.#current = previous;
    }
  }
}
