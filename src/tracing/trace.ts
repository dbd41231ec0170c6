/**
 * `@Trace`: wraps a method in a span. Works as a standard (TC39, TypeScript 5) method decorator and as a
 * legacy `experimentalDecorators` one, for sync and async methods. Arguments are never recorded unless the
 * `attributes` option picks them.
 *
 * @module
 */
import {
  type Tracer as ApiTracer,
  type Attributes,
  type AttributeValue,
  context,
  type SpanKind,
  type SpanOptions,
  trace,
} from '@opentelemetry/api';
import { isAttributeValue } from '@opentelemetry/core';
import * as check from '../internal/options.ts';
import { runInSpan } from './run-in-span.ts';
import { TRACER_SCOPE, Tracer } from './tracer.ts';

/** Options of {@link Trace}. */
export interface TraceOptions<A extends unknown[] = never[]> {
  /**
   * Picks span attributes from the call's arguments, e.g. `(user) => ({ 'user.id': user.id })`. Only what
   * it returns is recorded, and only string, number and boolean values (or arrays of one of them); if it
   * throws, the span simply has no picked attributes. Without it no argument is recorded.
   */
  attributes?: (...args: A) => Record<string, AttributeValue | undefined> | undefined;
  /**
   * Where the spans go: a clawperf {@link Tracer} or any OpenTelemetry tracer. Without it, the global
   * OpenTelemetry tracer provider (the most recently constructed registered `Tracer`; a no-op before any).
   */
  tracer?: Tracer | ApiTracer;
  /** Span kind. @default SpanKind.INTERNAL */
  kind?: SpanKind;
}

type Method<This, Args extends unknown[], Return> = (this: This, ...args: Args) => Return;

/** The decorator {@link Trace} returns: standard (value, context) form and legacy (target, key, descriptor). */
export interface TraceDecorator {
  <This, Args extends unknown[], Return>(
    value: Method<This, Args, Return>,
    context: ClassMethodDecoratorContext<This, Method<This, Args, Return>>,
  ): Method<This, Args, Return>;
  <T>(
    target: object,
    propertyKey: string | symbol,
    descriptor: TypedPropertyDescriptor<T>,
  ): TypedPropertyDescriptor<T>;
}

function pickAttributes(pick: (...args: unknown[]) => unknown, args: unknown[]): Attributes | undefined {
  let picked: unknown;
  try {
    picked = pick(...args);
  } catch {
    return undefined;
  }
  if (picked === null || typeof picked !== 'object') return undefined;
  const attributes: Attributes = {};
  for (const key of Object.keys(picked)) {
    const value = (picked as Record<string, unknown>)[key];
    if (value !== undefined && isAttributeValue(value)) attributes[key] = value;
  }
  return attributes;
}

function ownerName(self: unknown): string {
  if (typeof self === 'function') return self.name || 'anonymous';
  if (self !== null && typeof self === 'object') return (self as object).constructor?.name || 'Object';
  return 'anonymous';
}

/**
 * Method decorator that runs each call in a span named `name` (default `Class.method`), active for the
 * work the method starts, so spans inside it (and decorated methods it calls) become its children. A
 * thrown or rejected error is recorded on the span (exception event, ERROR status, `error.type`) and passed
 * on unchanged; a synchronous method stays synchronous.
 *
 * Arguments are never recorded: they often hold API keys, prompts or personal data, and serialising them
 * costs the hot path. Pick what a span should carry with `attributes`.
 *
 * @example
 * ```ts
 * class Chat {
 *   @Trace('chat.complete', { attributes: (req: ChatRequest) => ({ 'gen_ai.request.model': req.model }) })
 *   async complete(req: ChatRequest) { ... }
 * }
 * ```
 */
export function Trace<A extends unknown[] = never[]>(
  name?: string,
  options?: TraceOptions<A>,
): TraceDecorator {
  if (name !== undefined) check.string('name', name);
  const o = check.object<TraceOptions<A>>('options', options);
  const pick =
    o.attributes === undefined
      ? undefined
      : check.fn<(...args: unknown[]) => unknown>('options.attributes', o.attributes as unknown);
  const target = o.tracer;
  if (target !== undefined && (target === null || typeof target !== 'object')) {
    check.invalid('options.tracer', 'a Tracer or an OpenTelemetry tracer', target);
  }
  const ours = target instanceof Tracer ? target : undefined;
  const otel: ApiTracer =
    ours === undefined
      ? ((target as ApiTracer | undefined) ?? trace.getTracer(TRACER_SCOPE))
      : ours.otelTracer;
  const fixed: SpanOptions | undefined = o.kind === undefined ? undefined : { kind: o.kind };

  const wrap = (
    original: (...args: unknown[]) => unknown,
    key: string | symbol,
  ): ((...args: unknown[]) => unknown) => {
    let spanName = name;
    const wrapped = function (this: unknown, ...args: unknown[]): unknown {
      spanName ??= `${ownerName(this)}.${String(key)}`;
      const spanOptions = pick === undefined ? fixed : { ...fixed, attributes: pickAttributes(pick, args) };
      const call = () => original.apply(this, args);
      if (ours !== undefined) return ours.run(spanName, call, spanOptions);
      return runInSpan(otel, context, spanName, spanOptions, context.active(), call);
    };
    Object.defineProperty(wrapped, 'name', { value: original.name, configurable: true });
    return wrapped;
  };

  return function decorate(value: unknown, keyOrContext: unknown, descriptor?: PropertyDescriptor): unknown {
    if (
      descriptor === undefined &&
      keyOrContext !== null &&
      typeof keyOrContext === 'object' &&
      'kind' in keyOrContext
    ) {
      const ctx = keyOrContext as DecoratorContext;
      if (ctx.kind !== 'method' || typeof value !== 'function') {
        throw new TypeError(`@Trace decorates methods, not a ${ctx.kind}`);
      }
      return wrap(value as (...args: unknown[]) => unknown, (ctx as ClassMethodDecoratorContext).name);
    }
    if (descriptor === undefined || typeof descriptor.value !== 'function') {
      throw new TypeError(`@Trace decorates methods, not ${String(keyOrContext)}`);
    }
    descriptor.value = wrap(
      descriptor.value as (...args: unknown[]) => unknown,
      keyOrContext as string | symbol,
    );
    return descriptor;
  } as TraceDecorator;
}
