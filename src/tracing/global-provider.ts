/**
 * The global registration of clawperf's tracing: the W3C propagators, the `AsyncLocalStorage` context
 * manager and one forwarding tracer provider, each installed once per process and only where the application
 * has not installed its own.
 *
 * @module
 */
import {
  type Tracer as ApiTracer,
  context,
  ProxyTracerProvider,
  propagation,
  type TracerProvider,
  trace,
} from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { CompositePropagator, W3CBaggagePropagator, W3CTraceContextPropagator } from '@opentelemetry/core';
import type { BasicTracerProvider } from '@opentelemetry/sdk-trace-base';
import { TRACER_NAME } from '../internal/telemetry.ts';

/** A tracer whose spans record nothing: what the forwarding provider serves while no `Tracer` is open. */
export const NOOP_TRACER: ApiTracer = new ProxyTracerProvider().getTracer(TRACER_NAME);

/**
 * The global tracer provider clawperf installs, once per process. It forwards every span to the most
 * recently constructed registered `Tracer` that is still open (a no-op when there is none), so a new
 * `Tracer` takes over the global API without `trace.disable()`, and closing one hands back to the previous.
 */
export class ForwardingProvider implements TracerProvider {
  readonly open: BasicTracerProvider[] = [];

  getTracer(name: string, version?: string, options?: { schemaUrl?: string }): ApiTracer {
    let target: BasicTracerProvider | undefined;
    let delegate = NOOP_TRACER;
    const resolve = (): ApiTracer => {
      const current = this.open.at(-1);
      if (current !== target) {
        target = current;
        delegate = current === undefined ? NOOP_TRACER : current.getTracer(name, version, options);
      }
      return delegate;
    };
    return {
      startSpan: (spanName, spanOptions, ctx) => resolve().startSpan(spanName, spanOptions, ctx),
      startActiveSpan: (...args: unknown[]) => {
        const t = resolve();
        return (t.startActiveSpan as (...a: unknown[]) => unknown).apply(t, args);
      },
    } as ApiTracer;
  }
}

let forwarding: ForwardingProvider | undefined;
let globalProviderInstalled = false;
let globalContextInstalled = false;
let globalPropagatorInstalled = false;

/**
 * Installs what is not installed yet (the context manager only when `asyncContext`), and returns the
 * forwarding provider when it is the global one (undefined when the application registered its own).
 */
export function installGlobals(asyncContext: boolean): ForwardingProvider | undefined {
  // Each set* returns false (and changes nothing) when the application installed its own first.
  if (asyncContext && !globalContextInstalled) {
    globalContextInstalled = true;
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  }
  if (!globalPropagatorInstalled) {
    globalPropagatorInstalled = true;
    propagation.setGlobalPropagator(
      new CompositePropagator({ propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()] }),
    );
  }
  if (forwarding === undefined) {
    forwarding = new ForwardingProvider();
    globalProviderInstalled = trace.setGlobalTracerProvider(forwarding);
  }
  return globalProviderInstalled ? forwarding : undefined;
}
