/**
 * What the outbound limiters (one process's and the one shared on Redis) have in common: a caller waiting
 * for budget, how its wait ends, and running a call under a permit.
 *
 * @module
 */
import type { HeadersLike, OutboundPermit, ProviderLimits } from './provider-limits.ts';

/**
 * How long a 429 holds calls, ms: the provider's stated wait (`retry-after`, else the requests quota's
 * reset, else `defaultResetMs`), never less, plus up to `jitterRatio` of it at random, so limiters (keys,
 * nodes) told the same time do not all call again at the same instant.
 */
export function cooldownMs(
  limits: ProviderLimits,
  defaultResetMs: number,
  jitterRatio: number,
  random: () => number,
): number {
  const stated = limits.retryAfterMs ?? limits.requests?.resetMs ?? defaultResetMs;
  return stated * (1 + jitterRatio * random());
}

/** A caller waiting for budget. */
export interface OutboundWaiter {
  tokens: number;
  /** Served, timed out, aborted or closed: no longer waiting (it may still sit in a queue until its front). */
  done: boolean;
  resolve: (permit: OutboundPermit) => void;
  reject: (error: unknown) => void;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  timer: NodeJS.Timeout | undefined;
}

/**
 * A waiter for `tokens` that gives up after `maxWaitMs` (`onTimeout` says with what) or when `signal`
 * aborts (with its reason); `leave` runs first either way, to take it out of the limiter's count.
 */
export function outboundWaiter(
  tokens: number,
  signal: AbortSignal | undefined,
  maxWaitMs: number,
  leave: (waiter: OutboundWaiter) => void,
  onTimeout: () => unknown,
  resolve: (permit: OutboundPermit) => void,
  reject: (error: unknown) => void,
): OutboundWaiter {
  const waiter: OutboundWaiter = {
    tokens,
    done: false,
    resolve,
    reject,
    signal,
    onAbort: undefined,
    timer: undefined,
  };
  waiter.timer = setTimeout(() => {
    leave(waiter);
    reject(onTimeout());
  }, maxWaitMs);
  if (signal !== undefined) {
    waiter.onAbort = () => {
      leave(waiter);
      reject(signal.reason);
    };
    signal.addEventListener('abort', waiter.onAbort, { once: true });
  }
  return waiter;
}

/** Ends a wait: marks it done and drops its timer and abort listener. False if it had already ended. */
export function endWait(waiter: OutboundWaiter): boolean {
  if (waiter.done) return false;
  waiter.done = true;
  if (waiter.timer !== undefined) clearTimeout(waiter.timer);
  if (waiter.onAbort !== undefined) waiter.signal?.removeEventListener('abort', waiter.onAbort);
  return true;
}

/**
 * Runs `call` under the permit `acquired` resolves with and reports its response (anything with `status`
 * and `headers`, like a fetch `Response`); a call that throws releases the permit and rethrows.
 */
export async function runUnderPermit<R extends { status?: number; headers?: HeadersLike }>(
  acquired: Promise<OutboundPermit>,
  call: () => Promise<R>,
): Promise<R> {
  const permit = await acquired;
  let response: R;
  try {
    response = await call();
  } catch (error) {
    permit.done();
    throw error;
  }
  permit.done(response);
  return response;
}
