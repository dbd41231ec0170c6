/**
 * The options of {@link ConnectionPool}, their defaults, and their validation into the settings the pool
 * runs on.
 *
 * @module
 */
import { type Clock, systemClock } from '../../internal/clock.ts';
import * as check from '../../internal/options.ts';

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

/** The options, validated, with every default filled in. */
export interface PoolSettings<C> {
  readonly create: () => Promise<C> | C;
  readonly destroy: (connection: C) => Promise<void> | void;
  readonly validate: ((connection: C) => boolean | Promise<boolean>) | undefined;
  readonly validateOnIdle: boolean;
  readonly min: number;
  readonly max: number;
  readonly acquireTimeoutMs: number;
  readonly createTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly maxLifetimeMs: number;
  readonly leakWarningMs: number;
  readonly maxWaiting: number;
  readonly reapIntervalMs: number;
  readonly createRetryBaseMs: number;
  readonly createRetryMaxMs: number;
  readonly clock: Clock;
}

/** @throws {TypeError} naming the option, its allowed range and the value, when an option is invalid. */
export function poolSettings<C>(options: ConnectionPoolOptions<C>): PoolSettings<C> {
  const o = check.object<ConnectionPoolOptions<C>>('options', options);
  const create = check.fn<() => Promise<C> | C>('options.create', o.create);
  const destroy = check.fn<(connection: C) => Promise<void> | void>('options.destroy', o.destroy);
  const validate =
    o.validate === undefined
      ? undefined
      : check.fn<(connection: C) => boolean | Promise<boolean>>('options.validate', o.validate);
  const validateOnIdle = check.boolean('options.validateOnIdle', o.validateOnIdle ?? false);
  const max = check.integer('options.max', o.max ?? DEFAULT_POOL_MAX, 1);
  const min = check.compared(
    'options.min',
    check.integer('options.min', o.min ?? DEFAULT_POOL_MIN),
    '<=',
    'options.max',
    max,
  );
  const acquireTimeoutMs = check.number(
    'options.acquireTimeoutMs',
    o.acquireTimeoutMs ?? DEFAULT_POOL_ACQUIRE_TIMEOUT_MS,
  );
  const createTimeoutMs = check.number(
    'options.createTimeoutMs',
    o.createTimeoutMs ?? DEFAULT_POOL_CREATE_TIMEOUT_MS,
    1,
  );
  const idleTimeoutMs = msOrInfinity(
    'options.idleTimeoutMs',
    o.idleTimeoutMs ?? DEFAULT_POOL_IDLE_TIMEOUT_MS,
  );
  const maxLifetimeMs = msOrInfinity(
    'options.maxLifetimeMs',
    o.maxLifetimeMs ?? DEFAULT_POOL_MAX_LIFETIME_MS,
  );
  const leakWarningMs = msOrInfinity(
    'options.leakWarningMs',
    o.leakWarningMs ?? DEFAULT_POOL_LEAK_WARNING_MS,
  );
  const maxWaiting = check.integer('options.maxWaiting', o.maxWaiting ?? DEFAULT_POOL_MAX_WAITING, 0, true);
  const reapIntervalMs = check.number(
    'options.reapIntervalMs',
    o.reapIntervalMs ?? DEFAULT_POOL_REAP_INTERVAL_MS,
    1,
  );
  const createRetryBaseMs = check.number(
    'options.createRetryBaseMs',
    o.createRetryBaseMs ?? DEFAULT_POOL_CREATE_RETRY_BASE_MS,
    1,
  );
  const createRetryMaxMs = check.number(
    'options.createRetryMaxMs',
    o.createRetryMaxMs ?? DEFAULT_POOL_CREATE_RETRY_MAX_MS,
    createRetryBaseMs,
  );
  const clock = o.clock === undefined ? systemClock : check.clock<Clock>('options.clock', o.clock);
  return {
    create,
    destroy,
    validate,
    validateOnIdle,
    min,
    max,
    acquireTimeoutMs,
    createTimeoutMs,
    idleTimeoutMs,
    maxLifetimeMs,
    leakWarningMs,
    maxWaiting,
    reapIntervalMs,
    createRetryBaseMs,
    createRetryMaxMs,
    clock,
  };
}

/** A whole number of milliseconds >= 1, or Infinity for "never". */
function msOrInfinity(name: string, value: unknown): number {
  return check.integer(name, value, 1, true);
}
