/**
 * Admission control in front of a dependency. The controller (admission, the one timeout timer, stats) is
 * here; the index-linked waiter queue it admits from is in `waiter-queue.ts`, and the deadline heap of
 * waiters with their own timeout in `deadline-heap.ts`.
 *
 * @module
 */
import { ClosedError, OverloadedError, QueueTimeoutError } from '../errors.ts';
import {
  type Cancel,
  type Clock,
  type SchedulingClock,
  type SetTimer,
  systemClock,
  timerOn,
} from '../internal/clock.ts';
import * as check from '../internal/options.ts';
import { AdaptiveLimit, type AdaptiveLimitOptions } from './adaptive-limit.ts';
import { NONE, type Resolve, type Task, WaiterQueue } from './waiter-queue.ts';

export type { SchedulingClock };

/** @default 10 */
export const DEFAULT_MAX_CONCURRENCY = 10;
/** @default 1000 */
export const DEFAULT_MAX_QUEUE_SIZE = 1_000;
/** @default 30000 */
export const DEFAULT_QUEUE_TIMEOUT_MS = 30_000;
/** @default 0 */
export const DEFAULT_PRIORITY = 0;

// Weight of the newest queue wait in the average behind OverloadedError.retryAfterMs.
const WAIT_EWMA_WEIGHT = 0.1;
// Queue operations that may share one reading of the system clock within one callback.
const CLOCK_REUSE = 31;

/** Options of {@link BackpressureController}. */
export interface BackpressureOptions {
  /**
   * Calls allowed to run at once: a number, or `'adaptive'` (or an {@link AdaptiveLimitOptions} object) for a
   * limit that follows the latency of the calls.
   * @default 10
   */
  maxConcurrency?: number | 'adaptive' | AdaptiveLimitOptions;
  /**
   * Which failures are the protected dependency refusing for overload (a 503 under load): with an adaptive
   * limit, each halves it (at most once per update interval; see `AdaptiveLimit.onDrop`). Other failures
   * count as latency samples only when slow.
   */
  overloaded?: (error: unknown) => boolean;
  /** Callers allowed to wait for a slot; the next one is refused at once with `OverloadedError`. @default 1000 */
  maxQueueSize?: number;
  /** How long a caller may wait for a slot before it is refused with `QueueTimeoutError`, in ms. @default 30000 */
  queueTimeoutMs?: number;
  /**
   * Time source for queue timeouts, waits and latencies. When it also has `schedule(ms, fn)` (like
   * `ManualClock`), the queue-timeout timer runs on it too.
   * @default systemClock
   */
  clock?: Clock;
  /** Name used in error messages. @default 'backpressure' */
  name?: string;
}

/** Per-call options of {@link BackpressureController.acquire} and {@link BackpressureController.run}. */
export interface AcquireOptions {
  /** Aborting it removes the caller from the queue, which rejects with `signal.reason`. */
  signal?: AbortSignal;
  /** Higher is served first; equal priorities are served first-in first-out. @default 0 */
  priority?: number;
  /** Overrides `queueTimeoutMs` for this call, in ms. */
  timeoutMs?: number;
}

/** Gives a slot back. Calling it again does nothing. */
export type Release = () => void;

/** What {@link BackpressureController.stats} returns: numbers only. */
export interface BackpressureStats {
  /** Slots in use. */
  processing: number;
  /** Callers waiting for a slot. */
  queued: number;
  /** The concurrency limit now (it moves when adaptive). */
  limit: number;
  maxQueueSize: number;
  /** Callers given a slot, at once or after waiting. */
  admitted: number;
  /** Callers that joined the queue (whatever became of them). */
  queuedTotal: number;
  /** Callers given a slot after waiting in the queue. */
  admittedAfterWait: number;
  /** Callers refused because the queue was full. */
  rejected: number;
  /** Waiters removed by their queue timeout. */
  timedOut: number;
  /** Waiters removed by their abort signal (or refused because it had already fired). */
  aborted: number;
  /** Total time admitted waiters spent in the queue, in ms. */
  queueWaitMsTotal: number;
  /** Moving average of the queue wait of admitted waiters, in ms. */
  queueWaitMsAverage: number;
  /** Adaptive limit only: the measured no-load latency, in ms. */
  adaptive_baselineMs?: number;
  /** Adaptive limit only: the median latency of the last window, in ms. */
  adaptive_windowLatencyMs?: number;
  adaptive_updates?: number;
  adaptive_probes?: number;
}

/**
 * Admission control in front of a dependency: at most `maxConcurrency` calls run at once, at most
 * `maxQueueSize` callers wait, and everyone else is refused at once with `OverloadedError`.
 *
 * - Waiters are served by priority (higher first), first-in first-out within a priority. A release hands
 *   its slot straight to the next waiter, so a newcomer never overtakes someone already waiting.
 * - A waiter leaves the queue when its `queueTimeoutMs` expires (`QueueTimeoutError`) or its signal aborts
 *   (`signal.reason`); its place is free at once. All timeouts share one timer, armed for the earliest
 *   deadline; nothing polls.
 * - Waiters live in preallocated arrays linked by index, so waiting allocates only the caller's promise.
 *
 * @example
 * const gate = new BackpressureController({ maxConcurrency: 10, maxQueueSize: 100, queueTimeoutMs: 5_000 });
 * const answer = await gate.run(() => callModel(prompt), { signal: request.signal });
 */
export class BackpressureController {
  /** The `stats()` fields that only grow. */
  readonly statsCounters: readonly string[] = [
    'admitted',
    'queuedTotal',
    'admittedAfterWait',
    'rejected',
    'timedOut',
    'aborted',
    'queueWaitMsTotal',
    'adaptive_updates',
    'adaptive_probes',
  ];

  readonly #name: string;
  readonly #maxQueueSize: number;
  readonly #queueTimeoutMs: number;
  readonly #clock: Clock;
  readonly #setTimer: SetTimer;
  readonly #adaptive: AdaptiveLimit | undefined;
  readonly #overloaded: ((error: unknown) => boolean) | undefined;
  readonly #queue = new WaiterQueue(DEFAULT_PRIORITY);

  #limit: number;
  #processing = 0;
  #closed = false;

  #timerAt = Number.POSITIVE_INFINITY;
  #cancelTimer: Cancel | undefined;
  #pendingSlot = NONE;
  #clockReading = 0;
  #clockReuses = 0;
  #forgetPending = false;

  #admitted = 0;
  #queuedTotal = 0;
  #rejected = 0;
  #timedOut = 0;
  #aborted = 0;
  #queueWaitMsTotal = 0;
  #queueWaitMsAverage = 0;
  #admittedAfterWait = 0;

  /** @throws {TypeError} naming the option, its allowed range and the value, when an option is invalid. */
  constructor(options?: BackpressureOptions) {
    const o = check.object<BackpressureOptions>('options', options);
    const max = o.maxConcurrency ?? DEFAULT_MAX_CONCURRENCY;
    if (max === 'adaptive' || (typeof max === 'object' && max !== null && !Array.isArray(max))) {
      this.#adaptive = new AdaptiveLimit(max === 'adaptive' ? {} : max, 'options.maxConcurrency');
      this.#limit = this.#adaptive.limit;
    } else {
      this.#limit = check.integer('options.maxConcurrency', max, 1);
    }
    this.#maxQueueSize = check.integer('options.maxQueueSize', o.maxQueueSize ?? DEFAULT_MAX_QUEUE_SIZE);
    this.#queueTimeoutMs = check.positive(
      'options.queueTimeoutMs',
      o.queueTimeoutMs ?? DEFAULT_QUEUE_TIMEOUT_MS,
    );
    this.#clock = o.clock === undefined ? systemClock : check.clock('options.clock', o.clock);
    this.#setTimer = timerOn(this.#clock);
    this.#name = o.name === undefined ? 'backpressure' : check.string('options.name', o.name);
    this.#overloaded =
      o.overloaded === undefined
        ? undefined
        : check.fn<(error: unknown) => boolean>('options.overloaded', o.overloaded);
  }

  /** The concurrency limit now. */
  get limit(): number {
    return this.#limit;
  }

  /** Slots in use. */
  get processing(): number {
    return this.#processing;
  }

  /** Callers waiting for a slot. */
  get queued(): number {
    return this.#queue.size;
  }

  /**
   * Waits for a slot and resolves with the function that gives it back; call it exactly once when done
   * (calling it again does nothing).
   *
   * @throws {OverloadedError} at once when `maxQueueSize` callers are already waiting.
   * @throws {QueueTimeoutError} when the wait exceeds `timeoutMs` (default `queueTimeoutMs`).
   * @throws `signal.reason` when the signal aborts before a slot is given.
   * @throws {ClosedError} after `close()`.
   */
  acquire(options?: AcquireOptions): Promise<Release> {
    if (options === undefined && !this.#closed && this.#processing < this.#limit && this.#queue.size === 0) {
      this.#processing++;
      this.#admitted++;
      return Promise.resolve(this.#releaser());
    }
    return this.#wait(undefined, options) as Promise<Release>;
  }

  /**
   * Runs `fn` when a slot is free and gives the slot back when it settles, whether it resolves, rejects or
   * throws. Fails like {@link BackpressureController.acquire} when no slot can be had.
   */
  run<T>(fn: () => T | PromiseLike<T>, options?: AcquireOptions): Promise<Awaited<T>> {
    if (typeof fn !== 'function') {
      return Promise.reject(new TypeError(`fn must be a function, got ${typeof fn}`));
    }
    if (options === undefined && !this.#closed && this.#processing < this.#limit && this.#queue.size === 0) {
      this.#processing++;
      this.#admitted++;
      return this.#execute(fn) as Promise<Awaited<T>>;
    }
    return this.#wait(fn, options) as Promise<Awaited<T>>;
  }

  /** Counters and gauges, numbers only; the fields listed in `statsCounters` only grow. */
  stats(): BackpressureStats {
    const s: BackpressureStats = {
      processing: this.#processing,
      queued: this.#queue.size,
      limit: this.#limit,
      maxQueueSize: this.#maxQueueSize,
      admitted: this.#admitted,
      queuedTotal: this.#queuedTotal,
      admittedAfterWait: this.#admittedAfterWait,
      rejected: this.#rejected,
      timedOut: this.#timedOut,
      aborted: this.#aborted,
      queueWaitMsTotal: this.#queueWaitMsTotal,
      queueWaitMsAverage: this.#queueWaitMsAverage,
    };
    if (this.#adaptive !== undefined) {
      const a = this.#adaptive.stats();
      s.adaptive_baselineMs = a.baselineMs;
      s.adaptive_windowLatencyMs = a.windowLatencyMs;
      s.adaptive_updates = a.updates;
      s.adaptive_probes = a.probes;
    }
    return s;
  }

  /**
   * Refuses every waiter and every later call with `ClosedError` and stops the timeout timer. Calls already
   * running keep their slots until they finish. Idempotent.
   */
  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    this.#cancelTimer?.();
    this.#cancelTimer = undefined;
    this.#timerAt = Number.POSITIVE_INFINITY;
    const error = new ClosedError(this.#name);
    for (let slot = this.#queue.first(); slot !== NONE; slot = this.#queue.first()) this.#fail(slot, error);
    return Promise.resolve();
  }

  // --- admission -------------------------------------------------------------------------------------

  #wait(task: Task | undefined, options: AcquireOptions | undefined): Promise<unknown> {
    if (this.#closed) return Promise.reject(new ClosedError(this.#name));
    let priority = DEFAULT_PRIORITY;
    let timeoutMs = this.#queueTimeoutMs;
    let signal: AbortSignal | undefined;
    if (options !== undefined) {
      try {
        const o = check.object<AcquireOptions>('options', options);
        if (o.priority !== undefined) priority = check.finite('options.priority', o.priority);
        if (o.timeoutMs !== undefined) timeoutMs = check.positive('options.timeoutMs', o.timeoutMs);
        if (o.signal !== undefined) signal = check.signal('options.signal', o.signal);
      } catch (error) {
        return Promise.reject(error);
      }
      if (signal?.aborted) {
        this.#aborted++;
        return Promise.reject(signal.reason);
      }
      if (this.#processing < this.#limit && this.#queue.size === 0) {
        this.#processing++;
        this.#admitted++;
        return task === undefined ? Promise.resolve(this.#releaser()) : this.#execute(task);
      }
    }
    if (this.#queue.size >= this.#maxQueueSize) {
      this.#rejected++;
      return Promise.reject(
        new OverloadedError({
          queueSize: this.#queue.size,
          maxQueueSize: this.#maxQueueSize,
          retryAfterMs: this.#retryAfterMs(),
          component: this.#name,
        }),
      );
    }
    this.#pendingSlot = this.#enqueue(task, priority, timeoutMs, signal);
    return new Promise(this.#executor);
  }

  /**
   * About as long as the callers before this one have waited; before any has been admitted from the queue,
   * the time until the oldest waiter's timeout, by which a place is sure to be free.
   */
  #retryAfterMs(): number {
    if (this.#admittedAfterWait > 0) {
      return Math.max(1, Math.ceil(this.#queueWaitMsAverage));
    }
    const earliest = this.#queue.earliestDeadline();
    return Number.isFinite(earliest) ? Math.max(1, Math.ceil(earliest - this.#clock.now())) : 1;
  }

  // Preallocated executor: it reads the slot from #pendingSlot, so a wait allocates no closure.
  readonly #executor = (resolve: Resolve): void => {
    this.#queue.setResolver(this.#pendingSlot, resolve);
  };

  /**
   * Time for queue bookkeeping. performance.now() costs about 100 ns on Node 20, a quarter of a queued
   * admission, so a reading of the system clock is reused for up to CLOCK_REUSE operations, and never past
   * the end of the current callback (a nextTick forgets it, so no wait for I/O or timers falls in between);
   * an injected clock is read every time.
   */
  #now(): number {
    if (this.#clockReuses > 0) {
      this.#clockReuses--;
      return this.#clockReading;
    }
    const now = this.#clock.now();
    if (this.#clock === systemClock) {
      this.#clockReading = now;
      this.#clockReuses = CLOCK_REUSE;
      if (!this.#forgetPending) {
        this.#forgetPending = true;
        process.nextTick(this.#forgetReading);
      }
    }
    return now;
  }

  readonly #forgetReading = (): void => {
    this.#forgetPending = false;
    this.#clockReuses = 0;
  };

  #releaser(): Release {
    let released = false;
    if (this.#adaptive === undefined) {
      return () => {
        if (released) return;
        released = true;
        this.#release();
      };
    }
    const startedAt = this.#clock.now();
    return () => {
      if (released) return;
      released = true;
      this.#sample(startedAt);
    };
  }

  #execute(task: Task): Promise<unknown> {
    const startedAt = this.#adaptive === undefined ? 0 : this.#clock.now();
    let result: unknown;
    try {
      result = task();
    } catch (error) {
      this.#release();
      return Promise.reject(error);
    }
    return this.#settle(Promise.resolve(result), startedAt);
  }

  #settle(promise: Promise<unknown>, startedAt: number): Promise<unknown> {
    if (this.#adaptive === undefined) return promise.then(this.#onFulfilled, this.#onRejected);
    return promise.then(
      (value) => {
        this.#sample(startedAt);
        return value;
      },
      (error) => {
        this.#sampleFailure(startedAt, error);
        throw error;
      },
    );
  }

  readonly #onFulfilled = (value: unknown): unknown => {
    this.#release();
    return value;
  };

  readonly #onRejected = (error: unknown): never => {
    this.#release();
    throw error;
  };

  #finish(startedAt: number): void {
    if (this.#adaptive === undefined) this.#release();
    else this.#sample(startedAt);
  }

  #sample(startedAt: number): void {
    const now = this.#clock.now();
    this.#limit = this.#closed ? this.#limit : this.#adaptive!.onSample(startedAt, now, this.#processing);
    this.#release();
  }

  /**
   * A failed call: a refusal for overload lowers the limit; any other failure is a latency sample only when
   * it was slow (see `AdaptiveLimit.onDrop` and `onFailure`).
   */
  #sampleFailure(startedAt: number, error: unknown): void {
    const now = this.#clock.now();
    const adaptive = this.#adaptive!;
    if (!this.#closed) {
      this.#limit =
        this.#overloaded?.(error) === true
          ? adaptive.onDrop(now)
          : adaptive.onFailure(startedAt, now, this.#processing);
    }
    this.#release();
  }

  #release(): void {
    this.#processing--;
    if (this.#queue.size > 0) this.#drain();
  }

  /** Hands free slots to waiters, highest priority first, oldest first. */
  #drain(): void {
    const queue = this.#queue;
    const now = this.#now();
    while (queue.size > 0 && this.#processing < this.#limit) {
      const slot = queue.first();
      // A reused clock reading can trail one taken at enqueue by a few microseconds.
      const wait = Math.max(0, now - queue.enqueuedAt(slot));
      this.#queueWaitMsTotal += wait;
      this.#queueWaitMsAverage =
        this.#admittedAfterWait === 0
          ? wait
          : this.#queueWaitMsAverage + WAIT_EWMA_WEIGHT * (wait - this.#queueWaitMsAverage);
      this.#admittedAfterWait++;
      const task = queue.task(slot);
      const resolve = queue.remove(slot);
      this.#processing++;
      this.#admitted++;
      if (task === undefined) {
        resolve(this.#releaser());
        continue;
      }
      const startedAt = this.#adaptive === undefined ? 0 : now;
      let result: unknown;
      try {
        result = task();
      } catch (error) {
        // A task that throws before it starts says nothing about latency: no sample, just the slot back.
        resolve(rejected(error));
        this.#processing--;
        continue;
      }
      // One reaction both frees the slot and settles the caller: the caller is one hop behind the task.
      Promise.resolve(result).then(
        (value) => {
          this.#finish(startedAt);
          resolve(value);
        },
        (error) => {
          this.#finish(startedAt);
          resolve(rejected(error));
        },
      );
    }
  }

  #enqueue(
    task: Task | undefined,
    priority: number,
    timeoutMs: number,
    signal: AbortSignal | undefined,
  ): number {
    const now = this.#now();
    const deadline = now + timeoutMs;
    const slot = this.#queue.add(task, priority, now, deadline, timeoutMs !== this.#queueTimeoutMs);
    if (signal !== undefined) {
      this.#queue.watch(slot, signal, () => {
        this.#aborted++;
        this.#fail(slot, signal.reason);
      });
    }
    this.#queuedTotal++;
    if (deadline < this.#timerAt) this.#arm(deadline, now);
    return slot;
  }

  /** Removes a waiter and rejects it. */
  #fail(slot: number, reason: unknown): void {
    const resolve = this.#queue.remove(slot);
    resolve(rejected(reason));
  }

  // --- the one timeout timer -------------------------------------------------------------------------

  #arm(deadline: number, now: number): void {
    this.#timerAt = deadline;
    this.#cancelTimer?.();
    this.#cancelTimer = this.#setTimer(Math.ceil(Math.max(0, deadline - now)), this.#expire);
  }

  /** Fails every waiter whose deadline has passed, then re-arms for the earliest one left. */
  readonly #expire = (): void => {
    this.#cancelTimer = undefined;
    this.#timerAt = Number.POSITIVE_INFINITY;
    const queue = this.#queue;
    const now = this.#clock.now();
    for (let slot = queue.expired(now); slot !== NONE; slot = queue.expired(now)) {
      const timeoutMs = queue.ownTimeoutMs(slot) ?? this.#queueTimeoutMs;
      this.#timedOut++;
      this.#fail(slot, new QueueTimeoutError(timeoutMs));
    }
    const earliest = queue.earliestDeadline();
    if (earliest !== Number.POSITIVE_INFINITY) this.#arm(earliest, now);
  };
}

/** A thenable that rejects: resolving a waiter's promise with it rejects the waiter without its reject fn. */
function rejected(reason: unknown): {
  then(onFulfilled: unknown, onRejected: (reason: unknown) => void): void;
} {
  // biome-ignore lint/suspicious/noThenProperty: a thenable is the point.
  return { then: (_, onRejected) => onRejected(reason) };
}
