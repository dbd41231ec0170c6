/**
 * Watching real timers: for the tests that check a component's timer never holds the process open
 * (`hasRef()` is false) and that closing the component stops it, without waiting for the timer to fire.
 *
 * @example
 * const timers = watchTimers();
 * try {
 *   const limiter = new RateLimiter({ ... });
 *   assert.equal(timers.set[0]!.hasRef(), false);
 *   await limiter.close();
 *   assert.deepEqual(timers.cleared, timers.set);
 * } finally {
 *   timers.restore();
 * }
 */

export interface WatchedTimers {
  /** Every timer set (setTimeout and setInterval) since watching began, in order. */
  readonly set: NodeJS.Timeout[];
  /** Every timer cleared (clearTimeout and clearInterval) since watching began, in order. */
  readonly cleared: unknown[];
  /** Puts the real functions back. */
  restore(): void;
}

/** Records the timers set and cleared through the global timer functions until `restore()`. */
export function watchTimers(): WatchedTimers {
  const real = {
    setTimeout: globalThis.setTimeout,
    setInterval: globalThis.setInterval,
    clearTimeout: globalThis.clearTimeout,
    clearInterval: globalThis.clearInterval,
  };
  const set: NodeJS.Timeout[] = [];
  const cleared: unknown[] = [];
  globalThis.setTimeout = ((...args: Parameters<typeof setTimeout>) => {
    const timer = real.setTimeout(...args);
    set.push(timer);
    return timer;
  }) as typeof setTimeout;
  globalThis.setInterval = ((...args: Parameters<typeof setInterval>) => {
    const timer = real.setInterval(...args);
    set.push(timer);
    return timer;
  }) as typeof setInterval;
  globalThis.clearTimeout = ((timer: NodeJS.Timeout | undefined) => {
    cleared.push(timer);
    real.clearTimeout(timer);
  }) as typeof clearTimeout;
  globalThis.clearInterval = ((timer: NodeJS.Timeout | undefined) => {
    cleared.push(timer);
    real.clearInterval(timer);
  }) as typeof clearInterval;
  return { set, cleared, restore: () => Object.assign(globalThis, real) };
}
