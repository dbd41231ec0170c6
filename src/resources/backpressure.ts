import { ClosedError, OverloadedError, QueueTimeoutError } from '../errors.ts';
import { type Clock, type SchedulingClock, systemClock } from '../internal/clock.ts';

export type { SchedulingClock };

import * as check from '../internal/options.ts';
import { AdaptiveLimit, type AdaptiveLimitOptions } from './adaptive-limit.ts';

/** @default 10 */
export const DEFAULT_MAX_CONCURRENCY = 10;
/** @default 1000 */
export const DEFAULT_MAX_QUEUE_SIZE = 1_000;
/** @default 30000 */
export const DEFAULT_QUEUE_TIMEOUT_MS = 30_000;
/** @default 0 */
export const DEFAULT_PRIORITY = 0;

const INITIAL_CAPACITY = 16;
const NONE = -1;
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

type Resolve = (value: unknown) => void;
type Task = () => unknown;

/** One doubly linked list threaded through the slot arrays: a priority level's FIFO or the timeout lane. */
interface List {
  head: number;
  tail: number;
}

interface Level extends List {
  priority: number;
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
  readonly #schedule: SchedulingClock['schedule'] | undefined;
  readonly #adaptive: AdaptiveLimit | undefined;

  #limit: number;
  #processing = 0;
  #queued = 0;
  #closed = false;

  // Waiter slots: parallel arrays indexed by slot, grown by doubling, free slots chained through #next.
  #capacity = 0;
  #next = new Int32Array(0);
  #prev = new Int32Array(0);
  #laneNext = new Int32Array(0);
  #lanePrev = new Int32Array(0);
  #heapIndex = new Int32Array(0);
  #enqueuedAt = new Float64Array(0);
  #deadline = new Float64Array(0);
  #priority = new Float64Array(0);
  #resolvers: (Resolve | undefined)[] = [];
  #tasks: (Task | undefined)[] = [];
  #abortHooks: ((() => void) | undefined)[] = [];
  #signals: (AbortSignal | undefined)[] = [];
  #free = NONE;

  // Priority levels, highest first; the default level always exists.
  #levels: Level[] = [{ priority: DEFAULT_PRIORITY, head: NONE, tail: NONE }];
  // Waiters with the default timeout, oldest first: their deadlines are in order, so the head expires first.
  #lane: List = { head: NONE, tail: NONE };
  // Waiters with their own timeoutMs: a binary min-heap of slots by deadline.
  #heap: number[] = [];

  #timerAt = Number.POSITIVE_INFINITY;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerSeq = 0;
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

  constructor(options?: BackpressureOptions) {
    const o = check.object<BackpressureOptions>('options', options);
    const max = o.maxConcurrency ?? DEFAULT_MAX_CONCURRENCY;
    if (typeof max === 'number') {
      this.#limit = check.integer('maxConcurrency', max, 1);
    } else if (max === 'adaptive' || (typeof max === 'object' && max !== null && !Array.isArray(max))) {
      this.#adaptive = new AdaptiveLimit(max === 'adaptive' ? {} : max);
      this.#limit = this.#adaptive.limit;
    } else {
      this.#limit = check.integer('maxConcurrency', max, 1);
    }
    this.#maxQueueSize = check.integer('maxQueueSize', o.maxQueueSize ?? DEFAULT_MAX_QUEUE_SIZE);
    this.#queueTimeoutMs = positive('queueTimeoutMs', o.queueTimeoutMs ?? DEFAULT_QUEUE_TIMEOUT_MS);
    this.#clock = o.clock === undefined ? systemClock : check.clock('clock', o.clock);
    const schedule = (this.#clock as Partial<SchedulingClock>).schedule;
    this.#schedule = typeof schedule === 'function' ? schedule.bind(this.#clock) : undefined;
    this.#name = o.name === undefined ? 'backpressure' : nonEmptyString('name', o.name);
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
    return this.#queued;
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
    if (options === undefined && !this.#closed && this.#processing < this.#limit && this.#queued === 0) {
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
    if (typeof fn !== 'function')
      return Promise.reject(new TypeError(`fn must be a function, got ${typeof fn}`));
    if (options === undefined && !this.#closed && this.#processing < this.#limit && this.#queued === 0) {
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
      queued: this.#queued,
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
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = Number.POSITIVE_INFINITY;
    this.#timerSeq++;
    const error = new ClosedError(this.#name);
    for (const level of [...this.#levels]) {
      while (level.head !== NONE) this.#fail(level.head, error);
    }
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
        if (o.priority !== undefined) priority = finite('priority', o.priority);
        if (o.timeoutMs !== undefined) timeoutMs = positive('timeoutMs', o.timeoutMs);
        if (o.signal !== undefined) signal = abortSignal(o.signal);
      } catch (error) {
        return Promise.reject(error);
      }
      if (signal?.aborted) {
        this.#aborted++;
        return Promise.reject(signal.reason);
      }
      if (this.#processing < this.#limit && this.#queued === 0) {
        this.#processing++;
        this.#admitted++;
        return task === undefined ? Promise.resolve(this.#releaser()) : this.#execute(task);
      }
    }
    if (this.#queued >= this.#maxQueueSize) {
      this.#rejected++;
      return Promise.reject(
        new OverloadedError({
          queueSize: this.#queued,
          maxQueueSize: this.#maxQueueSize,
          retryAfterMs: this.#retryAfterMs(),
          component: this.#name,
        }),
      );
    }
    const slot = this.#enqueue(task, priority, timeoutMs, signal);
    this.#pendingSlot = slot;
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
    const now = this.#clock.now();
    let earliest = this.#lane.head === NONE ? Number.POSITIVE_INFINITY : this.#deadline[this.#lane.head]!;
    if (this.#heap.length > 0) earliest = Math.min(earliest, this.#deadline[this.#heap[0]!]!);
    return Number.isFinite(earliest) ? Math.max(1, Math.ceil(earliest - now)) : 1;
  }

  // Preallocated executors: they read the slot from #pendingSlot, so a wait allocates no closure.
  readonly #executor = (resolve: Resolve): void => {
    this.#resolvers[this.#pendingSlot] = resolve;
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
        this.#sample(startedAt);
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

  #release(): void {
    this.#processing--;
    if (this.#queued > 0) this.#drain();
  }

  /** Hands free slots to waiters, highest priority first, oldest first. */
  #drain(): void {
    const now = this.#now();
    while (this.#queued > 0 && this.#processing < this.#limit) {
      const slot = this.#first();
      // A reused clock reading can trail one taken at enqueue by a few microseconds.
      const wait = Math.max(0, now - this.#enqueuedAt[slot]!);
      this.#queueWaitMsTotal += wait;
      this.#queueWaitMsAverage =
        this.#admittedAfterWait === 0
          ? wait
          : this.#queueWaitMsAverage + WAIT_EWMA_WEIGHT * (wait - this.#queueWaitMsAverage);
      this.#admittedAfterWait++;
      const resolve = this.#resolvers[slot]!;
      const task = this.#tasks[slot];
      this.#remove(slot);
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

  #first(): number {
    const levels = this.#levels;
    for (let i = 0; i < levels.length; i++) {
      const head = levels[i]!.head;
      if (head !== NONE) return head;
    }
    return NONE;
  }

  // --- the queue -------------------------------------------------------------------------------------

  #enqueue(
    task: Task | undefined,
    priority: number,
    timeoutMs: number,
    signal: AbortSignal | undefined,
  ): number {
    if (this.#free === NONE) this.#grow();
    const slot = this.#free;
    this.#free = this.#next[slot]!;
    const now = this.#now();
    const deadline = now + timeoutMs;
    this.#enqueuedAt[slot] = now;
    this.#deadline[slot] = deadline;
    this.#priority[slot] = priority;
    this.#tasks[slot] = task;
    append(this.#next, this.#prev, this.#levelFor(priority), slot);
    if (timeoutMs === this.#queueTimeoutMs) {
      this.#heapIndex[slot] = NONE;
      append(this.#laneNext, this.#lanePrev, this.#lane, slot);
    } else {
      this.#heapPush(slot);
    }
    if (signal !== undefined) {
      const onAbort = () => {
        this.#aborted++;
        this.#fail(slot, signal.reason);
      };
      this.#signals[slot] = signal;
      this.#abortHooks[slot] = onAbort;
      signal.addEventListener('abort', onAbort, { once: true });
    }
    this.#queued++;
    this.#queuedTotal++;
    if (deadline < this.#timerAt) this.#arm(deadline, now);
    return slot;
  }

  /** Takes a waiter out of every structure and frees its slot. */
  #remove(slot: number): void {
    const level = this.#levelOf(slot);
    unlink(this.#next, this.#prev, level, slot);
    if (level.head === NONE && level.priority !== DEFAULT_PRIORITY) {
      this.#levels.splice(this.#levels.indexOf(level), 1);
    }
    if (this.#heapIndex[slot] === NONE) unlink(this.#laneNext, this.#lanePrev, this.#lane, slot);
    else this.#heapRemove(slot);
    const signal = this.#signals[slot];
    if (signal !== undefined) {
      signal.removeEventListener('abort', this.#abortHooks[slot]!);
      this.#signals[slot] = undefined;
      this.#abortHooks[slot] = undefined;
    }
    this.#resolvers[slot] = undefined;
    this.#tasks[slot] = undefined;
    this.#next[slot] = this.#free;
    this.#free = slot;
    this.#queued--;
  }

  /** Removes a waiter and rejects it. */
  #fail(slot: number, reason: unknown): void {
    const resolve = this.#resolvers[slot]!;
    this.#remove(slot);
    resolve(rejected(reason));
  }

  #levelOf(slot: number): Level {
    const levels = this.#levels;
    if (levels.length === 1) return levels[0]!;
    return levels[this.#levelIndex(this.#priority[slot]!)]!;
  }

  #levelIndex(priority: number): number {
    const levels = this.#levels;
    let i = 0;
    while (levels[i]!.priority !== priority) i++;
    return i;
  }

  #levelFor(priority: number): Level {
    const levels = this.#levels;
    let i = 0;
    while (i < levels.length && levels[i]!.priority > priority) i++;
    const found = levels[i];
    if (found !== undefined && found.priority === priority) return found;
    const level: Level = { priority, head: NONE, tail: NONE };
    levels.splice(i, 0, level);
    return level;
  }

  #grow(): void {
    const old = this.#capacity;
    const capacity = old === 0 ? INITIAL_CAPACITY : old * 2;
    this.#next = resize(this.#next, capacity);
    this.#prev = resize(this.#prev, capacity);
    this.#laneNext = resize(this.#laneNext, capacity);
    this.#lanePrev = resize(this.#lanePrev, capacity);
    this.#heapIndex = resize(this.#heapIndex, capacity);
    this.#enqueuedAt = resize(this.#enqueuedAt, capacity);
    this.#deadline = resize(this.#deadline, capacity);
    this.#priority = resize(this.#priority, capacity);
    for (let i = old; i < capacity - 1; i++) this.#next[i] = i + 1;
    this.#next[capacity - 1] = this.#free;
    this.#free = old;
    this.#capacity = capacity;
  }

  // --- the one timeout timer -------------------------------------------------------------------------

  #arm(deadline: number, now: number): void {
    this.#timerAt = deadline;
    const delay = Math.max(0, deadline - now);
    const seq = ++this.#timerSeq;
    if (this.#schedule !== undefined) {
      this.#schedule(delay, () => {
        if (seq === this.#timerSeq) this.#expire();
      });
      return;
    }
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = setTimeout(this.#expire, Math.ceil(delay));
    this.#timer.unref();
  }

  /** Fails every waiter whose deadline has passed, then re-arms for the earliest one left. */
  readonly #expire = (): void => {
    this.#timer = undefined;
    this.#timerAt = Number.POSITIVE_INFINITY;
    const now = this.#clock.now();
    const lane = this.#lane;
    while (lane.head !== NONE && this.#deadline[lane.head]! <= now)
      this.#timeout(lane.head, this.#queueTimeoutMs);
    const heap = this.#heap;
    while (heap.length > 0 && this.#deadline[heap[0]!]! <= now) {
      const slot = heap[0]!;
      this.#timeout(slot, this.#deadline[slot]! - this.#enqueuedAt[slot]!);
    }
    let earliest = lane.head === NONE ? Number.POSITIVE_INFINITY : this.#deadline[lane.head]!;
    if (heap.length > 0) earliest = Math.min(earliest, this.#deadline[heap[0]!]!);
    if (earliest !== Number.POSITIVE_INFINITY) this.#arm(earliest, now);
  };

  #timeout(slot: number, timeoutMs: number): void {
    this.#timedOut++;
    this.#fail(slot, new QueueTimeoutError(timeoutMs));
  }

  // --- the heap of waiters with their own timeout ----------------------------------------------------

  #heapPush(slot: number): void {
    const heap = this.#heap;
    heap.push(slot);
    this.#siftUp(heap.length - 1, slot);
  }

  #heapRemove(slot: number): void {
    const heap = this.#heap;
    const i = this.#heapIndex[slot]!;
    const last = heap.pop()!;
    if (last !== slot) {
      heap[i] = last;
      this.#heapIndex[last] = i;
      if (i > 0 && this.#deadline[last]! < this.#deadline[heap[(i - 1) >> 1]!]!) this.#siftUp(i, last);
      else this.#siftDown(i, last);
    }
    this.#heapIndex[slot] = NONE;
  }

  #siftUp(i: number, slot: number): void {
    const heap = this.#heap;
    const deadline = this.#deadline[slot]!;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const p = heap[parent]!;
      if (this.#deadline[p]! <= deadline) break;
      heap[i] = p;
      this.#heapIndex[p] = i;
      i = parent;
    }
    heap[i] = slot;
    this.#heapIndex[slot] = i;
  }

  #siftDown(i: number, slot: number): void {
    const heap = this.#heap;
    const deadline = this.#deadline[slot]!;
    const n = heap.length;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= n) break;
      if (child + 1 < n && this.#deadline[heap[child + 1]!]! < this.#deadline[heap[child]!]!) child++;
      const c = heap[child]!;
      if (this.#deadline[c]! >= deadline) break;
      heap[i] = c;
      this.#heapIndex[c] = i;
      i = child;
    }
    heap[i] = slot;
    this.#heapIndex[slot] = i;
  }
}

function append(next: Int32Array, prev: Int32Array, list: List, slot: number): void {
  next[slot] = NONE;
  prev[slot] = list.tail;
  if (list.tail === NONE) list.head = slot;
  else next[list.tail] = slot;
  list.tail = slot;
}

function unlink(next: Int32Array, prev: Int32Array, list: List, slot: number): void {
  const p = prev[slot]!;
  const n = next[slot]!;
  if (p === NONE) list.head = n;
  else next[p] = n;
  if (n === NONE) list.tail = p;
  else prev[n] = p;
}

function resize<A extends Int32Array | Float64Array>(array: A, capacity: number): A {
  const bigger = new (array.constructor as new (n: number) => A)(capacity);
  bigger.set(array);
  return bigger;
}

/** A thenable that rejects: resolving a waiter's promise with it rejects the waiter without its reject fn. */
function rejected(reason: unknown): {
  then(onFulfilled: unknown, onRejected: (reason: unknown) => void): void;
} {
  // biome-ignore lint/suspicious/noThenProperty: a thenable is the point.
  return { then: (_, onRejected) => onRejected(reason) };
}

function positive(name: string, value: unknown): number {
  if (typeof value === 'number' && Number.isFinite(value) && value > 0) return value;
  throw new TypeError(`${name} must be a finite number > 0, got ${String(value)}`);
}

function finite(name: string, value: unknown): number {
  if (typeof value === 'number' && Number.isFinite(value)) return value;
  throw new TypeError(`${name} must be a finite number, got ${String(value)}`);
}

function abortSignal(value: unknown): AbortSignal {
  if (value instanceof AbortSignal) return value;
  throw new TypeError(`signal must be an AbortSignal, got ${value === null ? 'null' : typeof value}`);
}

function nonEmptyString(name: string, value: unknown): string {
  if (typeof value === 'string' && value.length > 0) return value;
  throw new TypeError(`${name} must be a non-empty string, got ${String(value)}`);
}
