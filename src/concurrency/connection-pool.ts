/**
 * A bounded pool of reusable resources (database connections, sockets, clients).
 *
 * The pool is here; its parts are in `./pool/`: the options and their validation (`options.ts`), the slots
 * and leases (`slot.ts`), the callers waiting to borrow (`waiters.ts`), creating and destroying with backoff
 * (`resource-factory.ts`), reaping idle resources (`reaping.ts`) and draining (`draining.ts`).
 *
 * This file is over 600 lines on purpose: what is left is the loop that matches waiters with resources,
 * and its steps (lend, validate, create, destroy, reap, drain) all move the same idle list, slot set,
 * counts and events; a step moved out would take them all as parameters. About 300 of the lines are the
 * public events, stats and methods with their TSDoc.
 *
 * @module
 */
import { EventEmitter } from 'node:events';
import { AcquireTimeoutError, ClosedError, OverloadedError, ResourceCreateError } from '../errors.ts';
import { type Cancel, type Clock, type SetTimer, timerOn } from '../internal/clock.ts';
import * as check from '../internal/options.ts';
import { startSpan } from '../internal/telemetry.ts';
import { DrainWait } from './pool/draining.ts';
import {
  type ConnectionPoolOptions,
  DEFAULT_POOL_DRAIN_TIMEOUT_MS,
  type PoolSettings,
  poolSettings,
} from './pool/options.ts';
import { type LeakReport, reaps, takeExpired, takeLeaks } from './pool/reaping.ts';
import { ResourceFactory } from './pool/resource-factory.ts';
import { type DestroyReason, judge, newSlot, PooledConnection, reclaim, type Slot } from './pool/slot.ts';
import { grant, refuse, type Waiter, WaitQueue } from './pool/waiters.ts';

export {
  type ConnectionPoolOptions,
  DEFAULT_POOL_ACQUIRE_TIMEOUT_MS,
  DEFAULT_POOL_CREATE_RETRY_BASE_MS,
  DEFAULT_POOL_CREATE_RETRY_MAX_MS,
  DEFAULT_POOL_CREATE_TIMEOUT_MS,
  DEFAULT_POOL_DRAIN_TIMEOUT_MS,
  DEFAULT_POOL_IDLE_TIMEOUT_MS,
  DEFAULT_POOL_LEAK_WARNING_MS,
  DEFAULT_POOL_MAX,
  DEFAULT_POOL_MAX_LIFETIME_MS,
  DEFAULT_POOL_MAX_WAITING,
  DEFAULT_POOL_MIN,
  DEFAULT_POOL_REAP_INTERVAL_MS,
} from './pool/options.ts';
export type { LeakReport } from './pool/reaping.ts';
export { type DestroyReason, PooledConnection } from './pool/slot.ts';

export interface PoolAcquireOptions {
  /** Aborting removes the caller from the queue; the acquire rejects with `signal.reason`. */
  signal?: AbortSignal;
}

export interface PoolDrainOptions {
  /** How long to wait for borrowed resources to come back before destroying them anyway, ms. @default 30000 */
  timeoutMs?: number;
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

  readonly #s: PoolSettings<C>;
  readonly #validate: ((connection: C) => boolean | Promise<boolean>) | undefined;
  readonly #clock: Clock;
  readonly #setTimer: SetTimer;
  readonly #trackLeaks: boolean;
  readonly #factory: ResourceFactory<C>;
  readonly #waiters: WaitQueue<C>;
  readonly #drainWait: DrainWait;

  /** Idle resources, most recently used last (LIFO keeps a warm set and lets the cold rest expire). */
  readonly #idle: Slot<C>[] = [];
  readonly #slots = new Set<Slot<C>>();
  #live = 0;
  #borrowed = 0;
  #validating = 0;
  #nextId = 1;
  #cancelReap: Cancel = noop;
  #closing = false;
  #drained: Promise<void> | undefined;
  #readyWaiters: (() => void)[] = [];

  #created = 0;
  #destroyed = 0;
  #acquired = 0;
  #released = 0;
  #timedOut = 0;
  #aborted = 0;
  #overloaded = 0;
  #invalid = 0;
  #leaks = 0;

  /** @throws {TypeError} naming the option, its allowed range and the value, when an option is invalid. */
  constructor(options: ConnectionPoolOptions<C>) {
    super();
    const s = poolSettings(options);
    this.#s = s;
    this.#validate = s.validate;
    this.#clock = s.clock;
    this.#setTimer = timerOn(s.clock);
    this.#trackLeaks = s.leakWarningMs !== Infinity;
    this.#waiters = new WaitQueue(s.clock, this.#setTimer, s.acquireTimeoutMs, (waiter) =>
      this.#timeout(waiter),
    );
    this.#factory = new ResourceFactory(s, this.#setTimer, {
      onCreate: (connection) => this.#onCreate(connection),
      onCreateError: (error) => this.#onCreateError(error),
      onRetry: () => this.#grow(),
      onDestroyError: this.#report,
    });
    this.#drainWait = new DrainWait(
      () => this.#borrowed === 0 && this.#factory.creating === 0 && this.#validating === 0,
    );
    if (reaps(s, s.validateOnIdle && s.validate !== undefined)) this.#armReap();
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
    const waiters = this.#waiters;
    if (waiters.waiting === 0 && this.#validate === undefined && this.#idle.length > 0) {
      this.#acquired++;
      return Promise.resolve(this.#lend(this.#idle.pop()!, this.#trackLeaks ? captureStack() : ''));
    }
    if (waiters.waiting >= this.#s.maxWaiting) {
      this.#overloaded++;
      return Promise.reject(
        new OverloadedError({
          component: 'ConnectionPool',
          queueSize: waiters.waiting,
          maxQueueSize: this.#s.maxWaiting,
          retryAfterMs: Math.ceil(this.#s.acquireTimeoutMs / 10),
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
      deadline: this.#clock.now() + this.#s.acquireTimeoutMs,
      settled: false,
      signal,
      onAbort: undefined,
      stack: this.#trackLeaks ? captureStack() : '',
      span: startSpan('clawperf.pool.acquire', {
        attributes: { 'clawperf.pool.waiting': waiters.waiting, 'clawperf.pool.size': this.#live },
      }),
    };
    if (signal !== undefined) {
      waiter.onAbort = () => {
        if (waiter.settled) return;
        this.#aborted++;
        refuse(waiter, signal.reason);
        waiters.leave(waiter);
      };
      signal.addEventListener('abort', waiter.onAbort, { once: true });
    }
    waiters.push(waiter);
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
      this.#drainWait.check();
      return;
    }
    if (this.#s.maxLifetimeMs !== Infinity && this.#clock.now() - slot.createdAt >= this.#s.maxLifetimeMs) {
      this.#destroySlot(slot, 'lifetime');
      this.#dispatch();
      return;
    }
    slot.lastUsedAt = this.#clock.now();
    this.#idle.push(slot);
    if (this.#waiters.waiting > 0) this.#dispatch();
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
    this.#resume();
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
    if (this.#live >= this.#s.min) return Promise.resolve();
    const timeoutMs = check.number('options.timeoutMs', options.timeoutMs ?? this.#s.acquireTimeoutMs);
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
        else if (this.#live >= this.#s.min) finish();
      };
      const onAbort = () => finish(signal?.reason);
      signal?.addEventListener('abort', onAbort, { once: true });
      cancel = this.#setTimer(
        timeoutMs,
        () => finish(new AcquireTimeoutError(timeoutMs, { cause: this.#factory.lastError })),
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
    const timeoutMs = check.number('options.timeoutMs', options.timeoutMs ?? DEFAULT_POOL_DRAIN_TIMEOUT_MS);
    this.#closing = true;
    this.#cancelReap();
    this.#factory.stop();
    this.#waiters.refuseAll(new ClosedError('ConnectionPool'));
    for (const ready of this.#readyWaiters.slice()) ready();
    for (let slot = this.#idle.pop(); slot !== undefined; slot = this.#idle.pop()) {
      this.#destroySlot(slot, 'drain');
    }
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
      creating: this.#factory.creating,
      validating: this.#validating,
      waiting: this.#waiters.waiting,
      min: this.#s.min,
      max: this.#s.max,
      created: this.#created,
      destroyed: this.#destroyed,
      createErrors: this.#factory.createErrors,
      destroyErrors: this.#factory.destroyErrors,
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

  #lend(slot: Slot<C>, stack: string): PooledConnection<C> {
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

  #grant(waiter: Waiter<C>, slot: Slot<C>): void {
    this.#acquired++;
    grant(waiter, this.#lend(slot, waiter.stack));
  }

  /** Ends the borrow of a lease being given back; undefined when a drain already destroyed its resource. */
  #claim(lease: PooledConnection<C>): Slot<C> | undefined {
    const slot = reclaim(lease, this);
    if (slot !== undefined) this.#borrowed--;
    return slot;
  }

  /** Matches waiters with idle resources, then starts the creations still needed. */
  #dispatch(): void {
    const waiters = this.#waiters;
    while (waiters.waiting > 0 && this.#idle.length > 0) this.#serve(waiters.shift()!, this.#idle.pop()!);
    waiters.stopWhenIdle();
    this.#grow();
  }

  /** Something a closing pool waits for may have ended; an open pool serves whoever can be served now. */
  #resume(): void {
    if (this.#closing) this.#drainWait.check();
    else this.#dispatch();
  }

  #serve(waiter: Waiter<C>, slot: Slot<C>): void {
    const validate = this.#validate;
    if (validate === undefined) {
      this.#grant(waiter, slot);
      return;
    }
    const verdict = judge(validate, slot.connection, this.#report);
    if (verdict === true) {
      this.#grant(waiter, slot);
    } else if (verdict === false) {
      this.#reject(slot);
      this.#waiters.unshift(waiter);
    } else {
      this.#validating++;
      this.#waiters.hold(waiter);
      verdict.then((ok) => this.#validated(waiter, slot, ok));
    }
  }

  #validated(waiter: Waiter<C>, slot: Slot<C>, ok: boolean): void {
    this.#validating--;
    const stillWaiting = this.#waiters.unhold(waiter);
    if (!ok) {
      this.#reject(slot);
      if (stillWaiting) this.#waiters.unshift(waiter);
    } else if (this.#closing) {
      this.#destroySlot(slot, 'drain');
    } else if (stillWaiting) {
      this.#grant(waiter, slot);
    } else {
      // Its waiter timed out or aborted meanwhile: the resource goes back, nothing leaks.
      this.#idle.push(slot);
    }
    this.#resume();
  }

  #reject(slot: Slot<C>): void {
    this.#invalid++;
    this.#destroySlot(slot, 'invalid');
  }

  #timeout(waiter: Waiter<C>): void {
    this.#timedOut++;
    const factory = this.#factory;
    refuse(
      waiter,
      new AcquireTimeoutError(
        this.#s.acquireTimeoutMs,
        factory.failing ? { cause: factory.lastError } : undefined,
      ),
    );
  }

  // --- creating and destroying ---------------------------------------------------------------------

  /** Starts the creations waiters and `min` need, within `max`. */
  #grow(): void {
    if (this.#closing) return;
    const waiting = this.#waiters.waiting;
    const want =
      Math.min(this.#s.max - this.#live, Math.max(waiting, this.#s.min - this.#live)) -
      this.#factory.creating;
    if (want > 0) this.#factory.start(want, waiting > 0);
  }

  #onCreate(connection: C): void {
    if (this.#closing) {
      this.#factory.destroy(connection);
      this.#drainWait.check();
      return;
    }
    const slot = newSlot(this.#nextId++, connection, this.#clock.now(), this);
    this.#slots.add(slot);
    this.#live++;
    this.#created++;
    this.#emit('create', slot.id);
    this.#idle.push(slot);
    this.#dispatch();
    if (this.#readyWaiters.length > 0 && this.#live >= this.#s.min) {
      for (const ready of this.#readyWaiters.slice()) ready();
    }
  }

  #onCreateError(error: unknown): void {
    this.#emit('createError', error);
    if (this.#closing) {
      this.#drainWait.check();
      return;
    }
    // The creation was started for the oldest waiter: it learns of the failure now, not at its deadline.
    // The others keep waiting while `create` is retried with backoff (one attempt, one rejection at most).
    const waiter = this.#waiters.shift();
    if (waiter !== undefined) refuse(waiter, new ResourceCreateError({ cause: error }));
    this.#waiters.stopWhenIdle();
    this.#grow();
  }

  #destroySlot(slot: Slot<C>, reason: DestroyReason): Promise<void> {
    // A drain that timed out destroys resources still being validated; their verdict arrives later.
    if (!this.#slots.delete(slot)) return Promise.resolve();
    this.#live--;
    this.#destroyed++;
    this.#emit('destroy', slot.id, reason);
    return this.#factory.destroy(slot.connection);
  }

  // --- reaping -------------------------------------------------------------------------------------

  #armReap(): void {
    this.#cancelReap = this.#setTimer(this.#s.reapIntervalMs, () => {
      this.#reap();
      if (!this.#closing) this.#armReap();
    });
  }

  /** Closes idle resources past `idleTimeoutMs` (above `min`) or `maxLifetimeMs`, reports leaks, validates idle ones. */
  #reap(): void {
    const now = this.#clock.now();
    const expired = takeExpired(this.#idle, this.#live, now, this.#s);
    for (const [slot, reason] of expired) this.#destroySlot(slot, reason);
    if (this.#trackLeaks) {
      for (const report of takeLeaks(this.#slots, now, this.#s.leakWarningMs)) {
        this.#leaks++;
        this.#emit('leak', report);
      }
    }
    if (this.#s.validateOnIdle && this.#validate !== undefined) {
      for (const slot of this.#idle.splice(0)) this.#checkIdle(slot, this.#validate);
    }
    if (expired.length > 0) this.#dispatch();
  }

  #checkIdle(slot: Slot<C>, validate: (connection: C) => boolean | Promise<boolean>): void {
    this.#validating++;
    const verdict = judge(validate, slot.connection, this.#report);
    if (typeof verdict === 'boolean') this.#checkedIdle(slot, verdict);
    else verdict.then((ok) => this.#checkedIdle(slot, ok));
  }

  #checkedIdle(slot: Slot<C>, ok: boolean): void {
    this.#validating--;
    if (ok && !this.#closing) {
      this.#idle.push(slot);
      if (this.#waiters.waiting > 0) this.#dispatch();
      return;
    }
    if (ok) this.#destroySlot(slot, 'drain');
    else this.#reject(slot);
    this.#resume();
  }

  // --- draining ------------------------------------------------------------------------------------

  async #finishDrain(timeoutMs: number): Promise<void> {
    await this.#drainWait.wait(timeoutMs, this.#setTimer);
    for (const slot of [...this.#slots]) {
      slot.dead = true;
      if (slot.lease !== null) this.#borrowed--;
      slot.lease = null;
      this.#destroySlot(slot, 'drain');
    }
    await this.#factory.destroyed();
  }

  // --- events --------------------------------------------------------------------------------------

  readonly #report = (error: unknown): void => {
    if (this.listenerCount('error') > 0) this.#emit('error', error);
  };

  #emit<K extends keyof ConnectionPoolEvents>(event: K, ...args: ConnectionPoolEvents[K]): void {
    if (this.listenerCount(event) === 0) return;
    try {
      (this.emit as (event: K, ...args: ConnectionPoolEvents[K]) => boolean)(event, ...args);
    } catch {
      // A listener must not break the pool.
    }
  }
}

function captureStack(): string {
  const holder: { stack?: string } = {};
  Error.captureStackTrace(holder, ConnectionPool.prototype.acquire);
  return `acquired at${holder.stack?.slice(holder.stack.indexOf('\n')) ?? ''}`;
}
