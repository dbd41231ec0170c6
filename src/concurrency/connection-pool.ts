/**
 * A bounded pool of reusable resources (database connections, sockets, clients).
 *
 * @module
 */
import { EventEmitter } from 'node:events';
import { type Span, SpanStatusCode, type Tracer, trace } from '@opentelemetry/api';
import {
  AcquireTimeoutError,
  ClosedError,
  OverloadedError,
  PoolReleaseError,
  ResourceCreateError,
  TimeoutError,
} from '../errors.ts';
import { type Clock, type SchedulingClock, systemClock } from '../internal/clock.ts';
import * as check from '../internal/options.ts';

/** @default 0 */
export const DEFAULT_POOL_MIN = 0;
/** @default 10 */
export const DEFAULT_POOL_MAX = 10;
/** @default 30000 */
export const DEFAULT_POOL_ACQUIRE_TIMEOUT_MS = 30_000;
/** @default 30000 */
export const DEFAULT_POOL_CREATE_TIMEOUT_MS = 30_000;
/** @default 30000 */
export const DEFAULT_POOL_IDLE_TIMEOUT_MS = 30_000;
/** @default Infinity */
export const DEFAULT_POOL_MAX_LIFETIME_MS = Infinity;
/** @default Infinity */
export const DEFAULT_POOL_LEAK_WARNING_MS = Infinity;
/** @default Infinity */
export const DEFAULT_POOL_MAX_WAITING = Infinity;
/** @default 1000 */
export const DEFAULT_POOL_REAP_INTERVAL_MS = 1_000;
/** @default 50 */
export const DEFAULT_POOL_CREATE_RETRY_BASE_MS = 50;
/** @default 5000 */
export const DEFAULT_POOL_CREATE_RETRY_MAX_MS = 5_000;
/** @default 30000 */
export const DEFAULT_POOL_DRAIN_TIMEOUT_MS = 30_000;

export interface ConnectionPoolOptions<C> {
  /** Opens a new resource. A rejection (or a hang past `createTimeoutMs`) counts as a failed creation. */
  create: () => Promise<C> | C;
  /** Closes a resource. Errors are reported on the `'error'` event and otherwise ignored. */
  destroy: (connection: C) => Promise<void> | void;
  /**
   * Checks a resource before it is lent (and, with `validateOnIdle`, while idle). `false` (or a throw)
   * destroys it and the borrower gets another one. Off when not given.
   */
  validate?: (connection: C) => boolean | Promise<boolean>;
  /** Also validate idle resources at each reap. @default false */
  validateOnIdle?: boolean;
  /** Resources kept open even when idle; refilled in the background, with backoff on failure. @default 0 */
  min?: number;
  /** Most resources alive or being created at once. @default 10 */
  max?: number;
  /** How long `acquire` may wait before rejecting with `AcquireTimeoutError`, ms. @default 30000 */
  acquireTimeoutMs?: number;
  /** A `create` still pending after this long counts as failed; a late result is destroyed, ms. @default 30000 */
  createTimeoutMs?: number;
  /** An idle resource above `min` is closed after this long unused, ms. @default 30000 */
  idleTimeoutMs?: number;
  /** A resource is closed (and replaced) once this old, when next idle, ms. @default Infinity */
  maxLifetimeMs?: number;
  /** A resource borrowed longer than this is reported on the `'leak'` event with the stack of its acquire, ms. @default Infinity */
  leakWarningMs?: number;
  /** Most callers waiting in `acquire`; one more rejects at once with `OverloadedError`. @default Infinity */
  maxWaiting?: number;
  /** How often idle, lifetime, leak and `validateOnIdle` checks run, ms. @default 1000 */
  reapIntervalMs?: number;
  /** First delay before retrying a failed `create`, doubled per consecutive failure, ms. @default 50 */
  createRetryBaseMs?: number;
  /** Longest delay between `create` retries, ms. @default 5000 */
  createRetryMaxMs?: number;
  /**
   * Time source; a clock with `schedule(ms, fn)` (like `ManualClock`) also drives the pool's timers.
   * @default systemClock
   */
  clock?: Clock;
}

export interface PoolAcquireOptions {
  /** Aborting removes the caller from the queue; the acquire rejects with `signal.reason`. */
  signal?: AbortSignal;
}

export interface PoolDrainOptions {
  /** How long to wait for borrowed resources to come back before destroying them anyway, ms. @default 30000 */
  timeoutMs?: number;
}

/** Why a resource was destroyed, as given to the `'destroy'` event. */
export type DestroyReason = 'idle' | 'lifetime' | 'invalid' | 'destroyed' | 'drain';

/** The `'leak'` event's payload. */
export interface LeakReport {
  id: number;
  /** How long it has been borrowed, ms. */
  heldMs: number;
  /** Stack of the `acquire` call that borrowed it. */
  stack: string;
}

/** Events a {@link ConnectionPool} emits. A throwing listener is contained and never reaches the pool. */
export interface ConnectionPoolEvents {
  /** A resource was created. */
  create: [id: number];
  /** A resource was destroyed. */
  destroy: [id: number, reason: DestroyReason];
  /** `create` failed (or timed out); it is retried with backoff while resources are needed. */
  createError: [error: unknown];
  /** `destroy` or `validate` threw. Emitted only when someone listens. */
  error: [error: unknown];
  /** A resource has been borrowed for longer than `leakWarningMs`. Reported once per borrow. */
  leak: [report: LeakReport];
}

/** What {@link ConnectionPool.stats} returns. */
export interface ConnectionPoolStats {
  size: number;
  idle: number;
  borrowed: number;
  creating: number;
  validating: number;
  waiting: number;
  min: number;
  max: number;
  created: number;
  destroyed: number;
  createErrors: number;
  destroyErrors: number;
  acquired: number;
  released: number;
  timedOut: number;
  aborted: number;
  overloaded: number;
  invalid: number;
  leaks: number;
}

interface Slot<C> {
  readonly id: number;
  readonly connection: C;
  readonly createdAt: number;
  lastUsedAt: number;
  lease: PooledConnection<C> | null;
  borrowedAt: number;
  stack: string;
  leakReported: boolean;
  /** Destroyed while borrowed (drain timeout): its lease's release is then a no-op. */
  dead: boolean;
  readonly owner: object;
}

interface Waiter<C> {
  resolve: (lease: PooledConnection<C>) => void;
  reject: (error: unknown) => void;
  deadline: number;
  settled: boolean;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  stack: string;
  /** Covers the wait; a no-op span until an OpenTelemetry SDK is registered. */
  span: Span;
}

let slotOf: <C>(lease: PooledConnection<C>) => Slot<C>;

/** One borrow of a pooled resource: give it back with `pool.release(lease)` (once). */
export class PooledConnection<C> {
  /** The resource's id, stable across borrows. */
  readonly id: number;
  /** The resource itself. */
  readonly connection: C;
  readonly #slot: Slot<C>;

  static {
    slotOf = (lease) => lease.#slot;
  }

  /** @internal */
  constructor(slot: Slot<C>) {
    this.id = slot.id;
    this.connection = slot.connection;
    this.#slot = slot;
  }
}

/** A power-of-two ring buffer: O(1) push, shift and unshift, no `Array#shift()` copying. */
class Ring<T> {
  #items: (T | undefined)[] = new Array(16);
  #mask = 15;
  #head = 0;
  #length = 0;

  get length(): number {
    return this.#length;
  }

  peek(): T | undefined {
    return this.#items[this.#head];
  }

  push(item: T): void {
    if (this.#length > this.#mask) this.#grow();
    this.#items[(this.#head + this.#length) & this.#mask] = item;
    this.#length++;
  }

  unshift(item: T): void {
    if (this.#length > this.#mask) this.#grow();
    this.#head = (this.#head - 1) & this.#mask;
    this.#items[this.#head] = item;
    this.#length++;
  }

  shift(): T | undefined {
    if (this.#length === 0) return undefined;
    const item = this.#items[this.#head];
    this.#items[this.#head] = undefined;
    this.#head = (this.#head + 1) & this.#mask;
    this.#length--;
    return item;
  }

  #grow(): void {
    const next: (T | undefined)[] = new Array((this.#mask + 1) * 2);
    for (let i = 0; i < this.#length; i++) next[i] = this.#items[(this.#head + i) & this.#mask];
    this.#items = next;
    this.#mask = next.length - 1;
    this.#head = 0;
  }
}

type Cancel = () => void;
const noop: Cancel = () => {};

/**
 * A bounded pool of resources. Never more than `max` alive or being created; callers wait in FIFO order,
 * each wait bounded by `acquireTimeoutMs` and cancellable; `validate` keeps broken resources from being
 * lent; a failing `create` is retried with exponential backoff (one attempt at a time while it fails), so
 * an outage never turns into a busy loop, and the pool refills by itself when the resource returns.
 *
 * @example
 * const pool = new ConnectionPool({
 *   create: async () => { const c = new pg.Client(url); c.on('error', () => {}); await c.connect(); return c; },
 *   destroy: (c) => c.end(),
 *   validate: (c) => c.query('SELECT 1').then(() => true, () => false),
 *   max: 10,
 *   acquireTimeoutMs: 5_000,
 * });
 * const rows = await pool.use((c) => c.query('SELECT now()'));
 * await pool.drain();
 */
export class ConnectionPool<C> extends EventEmitter<ConnectionPoolEvents> {
  /** Fields of {@link stats} that only grow. */
  readonly statsCounters: readonly string[] = [
    'created',
    'destroyed',
    'createErrors',
    'destroyErrors',
    'acquired',
    'released',
    'timedOut',
    'aborted',
    'overloaded',
    'invalid',
    'leaks',
  ];

  readonly #create: () => Promise<C> | C;
  readonly #destroy: (connection: C) => Promise<void> | void;
  readonly #validate: ((connection: C) => boolean | Promise<boolean>) | undefined;
  readonly #validateOnIdle: boolean;
  readonly #min: number;
  readonly #max: number;
  readonly #acquireTimeoutMs: number;
  readonly #createTimeoutMs: number;
  readonly #idleTimeoutMs: number;
  readonly #maxLifetimeMs: number;
  readonly #leakWarningMs: number;
  readonly #maxWaiting: number;
  readonly #reapIntervalMs: number;
  readonly #retryBaseMs: number;
  readonly #retryMaxMs: number;
  readonly #clock: Clock;
  readonly #schedule: ((ms: number, fn: () => void) => Cancel) | undefined;
  readonly #trackLeaks: boolean;

  /** Idle resources, most recently used last (LIFO keeps a warm set and lets the cold rest expire). */
  readonly #idle: Slot<C>[] = [];
  readonly #slots = new Set<Slot<C>>();
  readonly #queue = new Ring<Waiter<C>>();
  /** Waiters taken off the queue while an async `validate` decides on their resource. */
  readonly #serving = new Set<Waiter<C>>();
  readonly #destroying = new Set<Promise<void>>();
  #waiting = 0;
  #live = 0;
  #borrowed = 0;
  #creating = 0;
  #validating = 0;
  #nextId = 1;

  #consecutiveCreateFailures = 0;
  #lastCreateError: unknown;
  #retryAt = 0;
  #cancelRetry: Cancel | undefined;
  #cancelDeadline: Cancel | undefined;
  #cancelReap: Cancel = noop;
  #closing = false;
  #drained: Promise<void> | undefined;
  #onSettled: (() => void) | undefined;
  #readyWaiters: (() => void)[] = [];

  #created = 0;
  #destroyed = 0;
  #createErrors = 0;
  #destroyErrors = 0;
  #acquired = 0;
  #released = 0;
  #timedOut = 0;
  #aborted = 0;
  #overloaded = 0;
  #invalid = 0;
  #leaks = 0;

  /** @throws {TypeError} naming the option, when an option is invalid. */
  constructor(options: ConnectionPoolOptions<C>) {
    super();
    const o = check.object<ConnectionPoolOptions<C>>('options', options);
    this.#create = check.fn('options.create', o.create);
    this.#destroy = check.fn('options.destroy', o.destroy);
    this.#validate =
      o.validate === undefined
        ? undefined
        : check.fn<(connection: C) => boolean | Promise<boolean>>('options.validate', o.validate);
    this.#validateOnIdle = boolean('options.validateOnIdle', o.validateOnIdle ?? false);
    this.#max = check.integer('options.max', o.max ?? DEFAULT_POOL_MAX, 1);
    this.#min = check.integer('options.min', o.min ?? DEFAULT_POOL_MIN, 0);
    if (this.#min > this.#max) {
      throw new TypeError(`options.min must be <= options.max (${this.#max}), got ${this.#min}`);
    }
    this.#acquireTimeoutMs = check.number(
      'options.acquireTimeoutMs',
      o.acquireTimeoutMs ?? DEFAULT_POOL_ACQUIRE_TIMEOUT_MS,
    );
    this.#createTimeoutMs = check.number(
      'options.createTimeoutMs',
      o.createTimeoutMs ?? DEFAULT_POOL_CREATE_TIMEOUT_MS,
      1,
    );
    this.#idleTimeoutMs = positiveOrInfinity(
      'options.idleTimeoutMs',
      o.idleTimeoutMs,
      DEFAULT_POOL_IDLE_TIMEOUT_MS,
    );
    this.#maxLifetimeMs = positiveOrInfinity(
      'options.maxLifetimeMs',
      o.maxLifetimeMs,
      DEFAULT_POOL_MAX_LIFETIME_MS,
    );
    this.#leakWarningMs = positiveOrInfinity(
      'options.leakWarningMs',
      o.leakWarningMs,
      DEFAULT_POOL_LEAK_WARNING_MS,
    );
    this.#maxWaiting = check.integer('options.maxWaiting', o.maxWaiting ?? DEFAULT_POOL_MAX_WAITING, 0, true);
    this.#reapIntervalMs = check.number(
      'options.reapIntervalMs',
      o.reapIntervalMs ?? DEFAULT_POOL_REAP_INTERVAL_MS,
      1,
    );
    this.#retryBaseMs = check.number(
      'options.createRetryBaseMs',
      o.createRetryBaseMs ?? DEFAULT_POOL_CREATE_RETRY_BASE_MS,
      1,
    );
    this.#retryMaxMs = check.number(
      'options.createRetryMaxMs',
      o.createRetryMaxMs ?? DEFAULT_POOL_CREATE_RETRY_MAX_MS,
      this.#retryBaseMs,
    );
    this.#clock = o.clock === undefined ? systemClock : check.clock('options.clock', o.clock);
    const scheduler = this.#clock as Partial<SchedulingClock>;
    if (typeof scheduler.schedule === 'function') {
      const schedule = scheduler.schedule.bind(scheduler);
      this.#schedule = (ms, fn) => {
        let live = true;
        schedule(ms, () => {
          if (live) fn();
        });
        return () => {
          live = false;
        };
      };
    }
    this.#trackLeaks = this.#leakWarningMs !== Infinity;
    if (
      this.#idleTimeoutMs !== Infinity ||
      this.#maxLifetimeMs !== Infinity ||
      this.#trackLeaks ||
      (this.#validateOnIdle && this.#validate !== undefined)
    ) {
      this.#armReap();
    }
    this.#grow();
  }

  /**
   * Borrows a resource: an idle one (validated first when `validate` is set), a new one while fewer than
   * `max` exist, or the next one released, in FIFO order.
   *
   * @throws {ResourceCreateError} when the `create` started for this caller fails (`cause`: its error).
   * @throws {AcquireTimeoutError} after `acquireTimeoutMs` (its `cause` is the last `create` error while
   *   creation is failing).
   * @throws {OverloadedError} when `maxWaiting` callers already wait.
   * @throws {ClosedError} once `drain()`/`close()` has begun.
   * Aborting `signal` rejects with `signal.reason` and removes the caller from the queue.
   */
  acquire(options?: PoolAcquireOptions): Promise<PooledConnection<C>> {
    if (this.#closing) return Promise.reject(new ClosedError('ConnectionPool'));
    const signal = options?.signal;
    if (signal?.aborted) {
      this.#aborted++;
      return Promise.reject(signal.reason);
    }
    if (this.#waiting === 0 && this.#validate === undefined && this.#idle.length > 0) {
      const slot = this.#idle.pop()!;
      this.#acquired++;
      return Promise.resolve(this.#lendSlot(slot, this.#trackLeaks ? captureStack() : ''));
    }
    if (this.#waiting >= this.#maxWaiting) {
      this.#overloaded++;
      return Promise.reject(
        new OverloadedError({
          component: 'ConnectionPool',
          queueSize: this.#waiting,
          maxQueueSize: this.#maxWaiting,
          retryAfterMs: Math.ceil(this.#acquireTimeoutMs / 10),
        }),
      );
    }
    let resolve!: (lease: PooledConnection<C>) => void;
    let reject!: (error: unknown) => void;
    const promise = new Promise<PooledConnection<C>>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const waiter: Waiter<C> = {
      resolve,
      reject,
      deadline: this.#clock.now() + this.#acquireTimeoutMs,
      settled: false,
      signal,
      onAbort: undefined,
      stack: this.#trackLeaks ? captureStack() : '',
      span: tracer().startSpan('clawperf.pool.acquire', {
        attributes: { 'clawperf.pool.waiting': this.#waiting, 'clawperf.pool.size': this.#live },
      }),
    };
    if (signal !== undefined) {
      waiter.onAbort = () => {
        if (waiter.settled) return;
        this.#aborted++;
        this.#fail(waiter, signal.reason);
        // Still queued: it counted as waiting. Being validated: the validation puts its resource back.
        if (!this.#serving.delete(waiter)) this.#waiting--;
        this.#stopDeadlineWhenIdle();
      };
      signal.addEventListener('abort', waiter.onAbort, { once: true });
    }
    this.#queue.push(waiter);
    this.#waiting++;
    if (this.#cancelDeadline === undefined) this.#armDeadline(this.#acquireTimeoutMs);
    this.#dispatch();
    return promise;
  }

  /**
   * Returns a borrowed resource to the pool (or hands it to the next waiter).
   *
   * @throws {PoolReleaseError} when `lease` was already released or destroyed, or was not lent by this pool;
   *   the pool's state is unchanged then.
   */
  release(lease: PooledConnection<C>): void {
    const slot = this.#claim(lease);
    if (slot === undefined) return;
    this.#released++;
    if (this.#closing) {
      this.#destroySlot(slot, 'drain');
      this.#checkSettled();
      return;
    }
    if (this.#maxLifetimeMs !== Infinity && this.#clock.now() - slot.createdAt >= this.#maxLifetimeMs) {
      this.#destroySlot(slot, 'lifetime');
      this.#dispatch();
      return;
    }
    this.#putBack(slot);
  }

  /**
   * Destroys a borrowed resource instead of returning it (e.g. after an error that broke it); the pool
   * creates a replacement when one is needed.
   *
   * @throws {PoolReleaseError} as {@link release} does.
   */
  destroy(lease: PooledConnection<C>): Promise<void> {
    const slot = this.#claim(lease);
    if (slot === undefined) return Promise.resolve();
    this.#released++;
    const done = this.#destroySlot(slot, this.#closing ? 'drain' : 'destroyed');
    if (this.#closing) this.#checkSettled();
    else this.#dispatch();
    return done;
  }

  /** Runs `fn` with a borrowed resource and always gives it back, whether `fn` resolves or throws. */
  async use<R>(fn: (connection: C) => Promise<R> | R, options?: PoolAcquireOptions): Promise<R> {
    const lease = await this.acquire(options);
    try {
      return await fn(lease.connection);
    } finally {
      this.release(lease);
    }
  }

  /**
   * Resolves once `min` resources exist (at once when `min` is 0).
   *
   * @throws {AcquireTimeoutError} when they do not within `timeoutMs` (default `acquireTimeoutMs`), with the
   *   last `create` error as `cause`.
   * @throws {ClosedError} when the pool is drained meanwhile.
   */
  ready(options: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<void> {
    if (this.#closing) return Promise.reject(new ClosedError('ConnectionPool'));
    if (this.#live >= this.#min) return Promise.resolve();
    const timeoutMs = check.number('timeoutMs', options.timeoutMs ?? this.#acquireTimeoutMs);
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise<void>((resolve, reject) => {
      let cancel: Cancel = noop;
      const finish = (error?: unknown) => {
        cancel();
        signal?.removeEventListener('abort', onAbort);
        const i = this.#readyWaiters.indexOf(probe);
        if (i >= 0) this.#readyWaiters.splice(i, 1);
        if (error === undefined) resolve();
        else reject(error);
      };
      const probe = () => {
        if (this.#closing) finish(new ClosedError('ConnectionPool'));
        else if (this.#live >= this.#min) finish();
      };
      const onAbort = () => finish(signal?.reason);
      signal?.addEventListener('abort', onAbort, { once: true });
      cancel = this.#timer(
        timeoutMs,
        () => finish(new AcquireTimeoutError(timeoutMs, { cause: this.#lastCreateError })),
        true,
      );
      this.#readyWaiters.push(probe);
    });
  }

  /**
   * Stops the pool: waiting and later acquires reject with `ClosedError` at once, nothing new is created,
   * idle resources are destroyed now and borrowed ones when released. Resolves when every resource is
   * destroyed; resources still borrowed after `timeoutMs` are destroyed anyway (their later release is
   * ignored). Idempotent: later calls return the same promise.
   */
  drain(options: PoolDrainOptions = {}): Promise<void> {
    if (this.#drained !== undefined) return this.#drained;
    const timeoutMs = check.number('timeoutMs', options.timeoutMs ?? DEFAULT_POOL_DRAIN_TIMEOUT_MS);
    this.#closing = true;
    this.#cancelReap();
    this.#cancelRetry?.();
    this.#cancelRetry = undefined;
    this.#cancelDeadline?.();
    this.#cancelDeadline = undefined;
    const closed = new ClosedError('ConnectionPool');
    for (let w = this.#queue.shift(); w !== undefined; w = this.#queue.shift()) this.#fail(w, closed);
    for (const w of this.#serving) this.#fail(w, closed);
    this.#serving.clear();
    this.#waiting = 0;
    for (const ready of this.#readyWaiters.slice()) ready();
    for (let slot = this.#idle.pop(); slot !== undefined; slot = this.#idle.pop())
      this.#destroySlot(slot, 'drain');
    this.#drained = this.#finishDrain(timeoutMs);
    return this.#drained;
  }

  /** Same as {@link drain} with its default timeout. */
  close(): Promise<void> {
    return this.drain();
  }

  /** Counts and gauges, numbers only. Fields listed in {@link statsCounters} only grow. */
  stats(): ConnectionPoolStats {
    return {
      size: this.#live,
      idle: this.#idle.length,
      borrowed: this.#borrowed,
      creating: this.#creating,
      validating: this.#validating,
      waiting: this.#waiting,
      min: this.#min,
      max: this.#max,
      created: this.#created,
      destroyed: this.#destroyed,
      createErrors: this.#createErrors,
      destroyErrors: this.#destroyErrors,
      acquired: this.#acquired,
      released: this.#released,
      timedOut: this.#timedOut,
      aborted: this.#aborted,
      overloaded: this.#overloaded,
      invalid: this.#invalid,
      leaks: this.#leaks,
    };
  }

  // --- lending -------------------------------------------------------------------------------------

  #lendSlot(slot: Slot<C>, stack: string): PooledConnection<C> {
    const lease = new PooledConnection(slot);
    slot.lease = lease;
    this.#borrowed++;
    if (this.#trackLeaks) {
      slot.borrowedAt = this.#clock.now();
      slot.stack = stack;
      slot.leakReported = false;
    }
    return lease;
  }

  #lend(waiter: Waiter<C>, slot: Slot<C>): void {
    waiter.settled = true;
    if (waiter.onAbort !== undefined) waiter.signal!.removeEventListener('abort', waiter.onAbort);
    this.#acquired++;
    waiter.span.end();
    waiter.resolve(this.#lendSlot(slot, waiter.stack));
  }

  #fail(waiter: Waiter<C>, error: unknown): void {
    waiter.settled = true;
    if (waiter.onAbort !== undefined) waiter.signal!.removeEventListener('abort', waiter.onAbort);
    if (waiter.span.isRecording()) {
      waiter.span.setStatus({ code: SpanStatusCode.ERROR, message: String(error) });
      waiter.span.end();
    }
    waiter.reject(error);
  }

  /** Checks a lease and ends its borrow; undefined when its resource was already destroyed by a drain. */
  #claim(lease: PooledConnection<C>): Slot<C> | undefined {
    if (!(lease instanceof PooledConnection)) {
      throw new PoolReleaseError('release() was given something this pool did not lend');
    }
    const slot = slotOf(lease);
    if (slot.lease !== lease) {
      if (slot.dead) return undefined;
      throw new PoolReleaseError(`resource ${slot.id} was already released (or destroyed)`);
    }
    if (slot.owner !== this) {
      throw new PoolReleaseError(`resource ${slot.id} was not lent by this pool`);
    }
    slot.lease = null;
    this.#borrowed--;
    return slot;
  }

  /** A resource that is free again: to the first live waiter, else idle. */
  #putBack(slot: Slot<C>): void {
    slot.lastUsedAt = this.#clock.now();
    this.#idle.push(slot);
    if (this.#waiting > 0) this.#dispatch();
  }

  /** Matches waiters with idle resources, then starts the creations still needed. */
  #dispatch(): void {
    while (this.#waiting > 0) {
      const waiter = this.#queue.peek()!;
      if (waiter.settled) {
        this.#queue.shift();
        continue;
      }
      const slot = this.#idle.pop();
      if (slot === undefined) break;
      this.#queue.shift();
      this.#waiting--;
      this.#serve(waiter, slot);
    }
    this.#stopDeadlineWhenIdle();
    this.#grow();
  }

  /** Nobody waits any more: the deadline timer (which holds the process open) goes too. */
  #stopDeadlineWhenIdle(): void {
    if (this.#waiting === 0 && this.#serving.size === 0 && this.#cancelDeadline !== undefined) {
      this.#cancelDeadline();
      this.#cancelDeadline = undefined;
    }
  }

  #serve(waiter: Waiter<C>, slot: Slot<C>): void {
    const validate = this.#validate;
    if (validate === undefined) {
      this.#lend(waiter, slot);
      return;
    }
    let verdict: boolean | Promise<boolean>;
    try {
      verdict = validate(slot.connection);
    } catch (error) {
      this.#report(error);
      verdict = false;
    }
    if (verdict === true) {
      this.#lend(waiter, slot);
    } else if (typeof verdict !== 'object' || verdict === null || typeof verdict.then !== 'function') {
      this.#rejectSlot(slot);
      this.#queue.unshift(waiter);
      this.#waiting++;
    } else {
      this.#validating++;
      this.#serving.add(waiter);
      verdict.then(
        (ok) => this.#validated(waiter, slot, ok === true),
        (error) => {
          this.#report(error);
          this.#validated(waiter, slot, false);
        },
      );
    }
  }

  #validated(waiter: Waiter<C>, slot: Slot<C>, ok: boolean): void {
    this.#validating--;
    const stillWaiting = this.#serving.delete(waiter);
    if (!ok) {
      this.#rejectSlot(slot);
      if (stillWaiting) {
        this.#queue.unshift(waiter);
        this.#waiting++;
      }
    } else if (this.#closing) {
      this.#destroySlot(slot, 'drain');
    } else if (stillWaiting) {
      this.#lend(waiter, slot);
    } else {
      // Its waiter timed out or aborted meanwhile: the resource goes back, nothing leaks.
      this.#idle.push(slot);
    }
    if (this.#closing) this.#checkSettled();
    else this.#dispatch();
  }

  #rejectSlot(slot: Slot<C>): void {
    this.#invalid++;
    this.#destroySlot(slot, 'invalid');
  }

  // --- creating and destroying ---------------------------------------------------------------------

  /** Starts the creations waiters and `min` need, within `max`; while `create` fails, one at a time after a backoff. */
  #grow(): void {
    const room = this.#max - this.#live - this.#creating;
    if (room <= 0 || this.#closing || this.#cancelRetry !== undefined) return;
    let want = Math.min(room, Math.max(this.#waiting, this.#min - this.#live) - this.#creating);
    if (want <= 0) return;
    if (this.#consecutiveCreateFailures > 0) {
      if (this.#creating > 0) return;
      const delay = this.#retryAt - this.#clock.now();
      if (delay > 0) {
        this.#cancelRetry = this.#timer(
          delay,
          () => {
            this.#cancelRetry = undefined;
            this.#grow();
          },
          this.#waiting > 0,
        );
        return;
      }
      want = Math.min(want, 1);
    }
    for (let i = 0; i < want; i++) this.#startCreate();
  }

  #startCreate(): void {
    this.#creating++;
    const span = tracer().startSpan('clawperf.pool.create');
    let done = false;
    let cancelTimeout: Cancel = noop;
    const settle = (connection: C | undefined, error: unknown, failed: boolean) => {
      if (done) {
        // A creation that resolves after its timeout: nobody counts on it any more.
        if (!failed) this.#safeDestroy(connection as C);
        return;
      }
      done = true;
      cancelTimeout();
      if (failed) span.setStatus({ code: SpanStatusCode.ERROR, message: String(error) });
      span.end();
      this.#creating--;
      if (failed) this.#onCreateFailed(error);
      else this.#onCreated(connection as C);
    };
    let pending: Promise<C>;
    try {
      pending = Promise.resolve(this.#create());
    } catch (error) {
      pending = Promise.reject(error);
    }
    cancelTimeout = this.#timer(this.#createTimeoutMs, () =>
      settle(undefined, new TimeoutError('create', this.#createTimeoutMs), true),
    );
    pending.then(
      (connection) => settle(connection, undefined, false),
      (error) => settle(undefined, error, true),
    );
  }

  #onCreated(connection: C): void {
    this.#consecutiveCreateFailures = 0;
    this.#lastCreateError = undefined;
    if (this.#closing) {
      this.#safeDestroy(connection);
      this.#checkSettled();
      return;
    }
    const now = this.#clock.now();
    const slot: Slot<C> = {
      id: this.#nextId++,
      connection,
      createdAt: now,
      lastUsedAt: now,
      lease: null,
      borrowedAt: 0,
      stack: '',
      leakReported: false,
      dead: false,
      owner: this,
    };
    this.#slots.add(slot);
    this.#live++;
    this.#created++;
    this.#emit('create', slot.id);
    this.#idle.push(slot);
    this.#dispatch();
    if (this.#readyWaiters.length > 0 && this.#live >= this.#min) {
      for (const ready of this.#readyWaiters.slice()) ready();
    }
  }

  #onCreateFailed(error: unknown): void {
    this.#createErrors++;
    this.#lastCreateError = error;
    const failures = ++this.#consecutiveCreateFailures;
    const backoff = Math.min(this.#retryMaxMs, this.#retryBaseMs * 2 ** Math.min(failures - 1, 30));
    // Jitter (between half and all of the backoff) keeps many processes from retrying in step.
    this.#retryAt = this.#clock.now() + backoff * (0.5 + Math.random() / 2);
    this.#emit('createError', error);
    if (this.#closing) {
      this.#checkSettled();
      return;
    }
    // The creation was started for the oldest waiter: it learns of the failure now, not at its deadline.
    // The others keep waiting while `create` is retried with backoff (one attempt, one rejection at most).
    for (let waiter = this.#queue.shift(); waiter !== undefined; waiter = this.#queue.shift()) {
      if (waiter.settled) continue;
      this.#waiting--;
      this.#fail(waiter, new ResourceCreateError({ cause: error }));
      break;
    }
    this.#stopDeadlineWhenIdle();
    this.#grow();
  }

  #destroySlot(slot: Slot<C>, reason: DestroyReason): Promise<void> {
    // A drain that timed out destroys resources still being validated; their verdict arrives later.
    if (!this.#slots.delete(slot)) return Promise.resolve();
    this.#live--;
    this.#destroyed++;
    this.#emit('destroy', slot.id, reason);
    return this.#safeDestroy(slot.connection);
  }

  #safeDestroy(connection: C): Promise<void> {
    let done: Promise<void>;
    try {
      done = Promise.resolve(this.#destroy(connection));
    } catch (error) {
      done = Promise.reject(error);
    }
    const tracked = done.then(
      () => {
        this.#destroying.delete(tracked);
      },
      (error) => {
        this.#destroying.delete(tracked);
        this.#destroyErrors++;
        this.#report(error);
      },
    );
    this.#destroying.add(tracked);
    return tracked;
  }

  // --- timers --------------------------------------------------------------------------------------

  /**
   * Background timers are unref()ed. `awaited` ones are not: a caller is waiting on them (an acquire's
   * deadline, the retry that will serve it, `ready()`, `drain()`), and the process must not exit under it.
   */
  #timer(ms: number, fn: () => void, awaited = false): Cancel {
    if (this.#schedule !== undefined) return this.#schedule(ms, fn);
    const t = setTimeout(fn, ms);
    if (!awaited) t.unref();
    return () => clearTimeout(t);
  }

  /**
   * One timer serves every acquire deadline: deadlines are enqueue time plus one constant, so the queue
   * is also in deadline order, and the timer only ever needs the head's. (A timer per acquire, as
   * generic-pool sets, cost it 2.7x in throughput: 1.27M/s without a timeout, 470k/s with.)
   */
  #armDeadline(ms: number): void {
    this.#cancelDeadline = this.#timer(
      Math.max(1, Math.ceil(ms)),
      () => {
        this.#cancelDeadline = undefined;
        this.#expire();
      },
      true,
    );
  }

  #expire(): void {
    if (this.#closing) return;
    const now = this.#clock.now();
    let next = Infinity;
    for (const waiter of this.#serving) {
      if (waiter.deadline <= now) {
        this.#serving.delete(waiter);
        this.#timeout(waiter);
      } else {
        next = Math.min(next, waiter.deadline);
      }
    }
    for (let waiter = this.#queue.peek(); waiter !== undefined; waiter = this.#queue.peek()) {
      if (!waiter.settled) {
        if (waiter.deadline > now) {
          next = Math.min(next, waiter.deadline);
          break;
        }
        this.#waiting--;
        this.#timeout(waiter);
      }
      this.#queue.shift();
    }
    if (next !== Infinity) this.#armDeadline(next - now);
  }

  #timeout(waiter: Waiter<C>): void {
    this.#timedOut++;
    this.#fail(
      waiter,
      new AcquireTimeoutError(
        this.#acquireTimeoutMs,
        this.#consecutiveCreateFailures > 0 ? { cause: this.#lastCreateError } : undefined,
      ),
    );
  }

  #armReap(): void {
    this.#cancelReap = this.#timer(this.#reapIntervalMs, () => {
      this.#reap();
      if (!this.#closing) this.#armReap();
    });
  }

  /** Closes idle resources past `idleTimeoutMs` (above `min`) or `maxLifetimeMs`, reports leaks, validates idle ones. */
  #reap(): void {
    const now = this.#clock.now();
    const idle = this.#idle;
    let removed = false;
    for (let i = 0; i < idle.length; ) {
      const slot = idle[i]!;
      let reason: DestroyReason | undefined;
      if (now - slot.createdAt >= this.#maxLifetimeMs) reason = 'lifetime';
      else if (now - slot.lastUsedAt >= this.#idleTimeoutMs && this.#live > this.#min) reason = 'idle';
      if (reason === undefined) {
        i++;
        continue;
      }
      idle.splice(i, 1);
      this.#destroySlot(slot, reason);
      removed = true;
    }
    if (this.#trackLeaks) {
      for (const slot of this.#slots) {
        if (slot.lease !== null && !slot.leakReported && now - slot.borrowedAt >= this.#leakWarningMs) {
          slot.leakReported = true;
          this.#leaks++;
          this.#emit('leak', { id: slot.id, heldMs: now - slot.borrowedAt, stack: slot.stack });
        }
      }
    }
    if (this.#validateOnIdle && this.#validate !== undefined) {
      for (const slot of idle.splice(0, idle.length)) this.#checkIdle(slot);
    }
    if (removed) this.#dispatch();
  }

  #checkIdle(slot: Slot<C>): void {
    this.#validating++;
    const decide = (ok: boolean) => {
      this.#validating--;
      if (!ok) this.#rejectSlot(slot);
      else if (this.#closing) this.#destroySlot(slot, 'drain');
      else {
        this.#idle.push(slot);
        if (this.#waiting > 0) this.#dispatch();
        return;
      }
      if (this.#closing) this.#checkSettled();
      else this.#dispatch();
    };
    let verdict: boolean | Promise<boolean>;
    try {
      verdict = this.#validate!(slot.connection);
    } catch (error) {
      this.#report(error);
      verdict = false;
    }
    if (typeof verdict === 'boolean') decide(verdict);
    else
      Promise.resolve(verdict).then(
        (ok) => decide(ok === true),
        (error) => {
          this.#report(error);
          decide(false);
        },
      );
  }

  // --- draining ------------------------------------------------------------------------------------

  async #finishDrain(timeoutMs: number): Promise<void> {
    if (!this.#settledForDrain()) {
      await new Promise<void>((resolve) => {
        const cancel = this.#timer(
          timeoutMs,
          () => {
            this.#onSettled = undefined;
            resolve();
          },
          true,
        );
        this.#onSettled = () => {
          cancel();
          this.#onSettled = undefined;
          resolve();
        };
      });
    }
    for (const slot of [...this.#slots]) {
      slot.dead = true;
      if (slot.lease !== null) this.#borrowed--;
      slot.lease = null;
      this.#destroySlot(slot, 'drain');
    }
    await Promise.all(this.#destroying);
  }

  #settledForDrain(): boolean {
    return this.#borrowed === 0 && this.#creating === 0 && this.#validating === 0;
  }

  #checkSettled(): void {
    if (this.#onSettled !== undefined && this.#settledForDrain()) this.#onSettled();
  }

  // --- events --------------------------------------------------------------------------------------

  #report(error: unknown): void {
    if (this.listenerCount('error') > 0) this.#emit('error', error);
  }

  #emit<K extends keyof ConnectionPoolEvents>(event: K, ...args: ConnectionPoolEvents[K]): void {
    if (this.listenerCount(event) === 0) return;
    try {
      (this.emit as (event: K, ...args: ConnectionPoolEvents[K]) => boolean)(event, ...args);
    } catch {
      // A listener must not break the pool.
    }
  }
}

let cachedTracer: Tracer | undefined;
/** Looked up on first use, so importing this module registers nothing. */
function tracer(): Tracer {
  cachedTracer ??= trace.getTracer('clawperf');
  return cachedTracer;
}

function boolean(name: string, value: unknown): boolean {
  if (typeof value === 'boolean') return value;
  throw new TypeError(`${name} must be a boolean, got ${String(value)}`);
}

function positiveOrInfinity(name: string, value: unknown, fallback: number): number {
  return check.integer(name, value ?? fallback, 1, true);
}

function captureStack(): string {
  const holder: { stack?: string } = {};
  Error.captureStackTrace(holder, ConnectionPool.prototype.acquire);
  return `acquired at${holder.stack?.slice(holder.stack.indexOf('\n')) ?? ''}`;
}
