/**
 * Time for every time-dependent component. Components take `clock?: Clock` and read `clock.now()`
 * instead of `Date.now()`, so tests and the simulator can drive time without sleeping.
 */

/** A source of time in milliseconds. Only differences between readings are meaningful. */
export interface Clock {
  now(): number;
}

/**
 * A clock that can also run a callback later, as {@link ManualClock} can. Components whose clock has
 * `schedule` run their timers on it, so tests and simulations drive them without sleeping.
 */
export interface SchedulingClock extends Clock {
  schedule(ms: number, fn: () => void): void;
}

/** The default clock: monotonic (never jumps with NTP or DST), sub-millisecond resolution. */
export const systemClock: Clock = { now: () => performance.now() };

/**
 * lru-cache's time options for entries with a TTL on `clock`. The default clock may be read once per
 * millisecond (lru-cache's `ttlResolution`); an injected one is read every time, so moving it expires entries
 * at once, and it is read one ms ahead, because lru-cache treats a start time of 0 as "no TTL" and an injected
 * clock may well start at 0.
 */
export function lruTime(clock: Clock): { perf: Clock; ttlResolution: number } {
  if (clock === systemClock) return { perf: clock, ttlResolution: 1 };
  return { perf: { now: () => clock.now() + 1 }, ttlResolution: 0 };
}

/** Stops a timer from {@link timerOn}; calling it after the timer fired, or twice, does nothing. */
export type Cancel = () => void;

/**
 * Runs `fn` once, `ms` from now. A background timer is `unref()`ed; an `awaited` one is not, because a
 * caller is waiting on it and the process must not exit under that caller.
 */
export type SetTimer = (ms: number, fn: () => void, awaited?: boolean) => Cancel;

/**
 * Timers that run on `clock`: on its `schedule` when it has one (a {@link ManualClock} then drives them, and
 * nothing runs on the real clock), else on `setTimeout`.
 */
export function timerOn(clock: Clock): SetTimer {
  const schedule = (clock as Partial<SchedulingClock>).schedule;
  if (typeof schedule !== 'function') return realTimer;
  return (ms, fn) => {
    let live = true;
    schedule.call(clock, ms, () => {
      if (live) fn();
    });
    return () => {
      live = false;
    };
  };
}

function realTimer(ms: number, fn: () => void, awaited = false): Cancel {
  const t = setTimeout(fn, ms);
  if (!awaited) t.unref();
  return () => clearTimeout(t);
}

interface Timer {
  at: number;
  seq: number;
  fn: () => void;
}

/**
 * A clock that moves only when told to. `sleep(ms)` resolves when `advance` moves time past it, so
 * simulated work can "take" time; timers fire in time order, and each callback's microtasks run before
 * the next timer fires.
 *
 * @example
 * const clock = new ManualClock();
 * const done = clock.sleep(100);
 * await clock.advance(100); // `done` has resolved, clock.now() === 100
 */
export class ManualClock implements SchedulingClock {
  #now: number;
  #seq = 0;
  #timers: Timer[] = [];

  constructor(start = 0) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  /** A promise that resolves once the clock has advanced `ms` past now. */
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.schedule(ms, resolve));
  }

  /** Runs `fn` once the clock has advanced `ms` past now. */
  schedule(ms: number, fn: () => void): void {
    const timer = { at: this.#now + Math.max(0, ms), seq: this.#seq++, fn };
    // Insert keeping (at, seq) order; timers are few in the tests that use this.
    let i = this.#timers.length;
    while (i > 0 && this.#timers[i - 1]!.at > timer.at) i--;
    this.#timers.splice(i, 0, timer);
  }

  /** Timers not yet fired. */
  get pending(): number {
    return this.#timers.length;
  }

  /**
   * Moves time forward by `ms`, firing due timers in order; after each, lets promise callbacks settle so
   * work that a timer resumes can schedule its own timers within the same advance.
   */
  async advance(ms: number): Promise<void> {
    const target = this.#now + ms;
    await settle();
    for (;;) {
      const next = this.#timers[0];
      if (next === undefined || next.at > target) break;
      this.#timers.shift();
      this.#now = Math.max(this.#now, next.at);
      next.fn();
      await settle();
    }
    this.#now = target;
  }
}

/** Lets pending promise callbacks (several hops deep) run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 8; i++) await Promise.resolve();
}
