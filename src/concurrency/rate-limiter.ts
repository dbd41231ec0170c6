/**
 * Rate limits per key: fixed window, sliding window (counter approximation and exact log), token bucket
 * and GCRA; several policies per key (requests and tokens) checked together, all-or-nothing; reserve an
 * estimate and settle it with the real usage; in memory or exact across processes on Redis.
 *
 * @example
 * const limiter = new RateLimiter({
 *   policies: [
 *     { name: 'rpm', windowMs: 60_000, limit: 60 },
 *     { name: 'tpm', windowMs: 60_000, limit: 90_000, unit: 'tokens' },
 *   ],
 * });
 * const r = await limiter.allow('user:42', { tokens: 1_200 });
 * if (!r.allowed) console.log(`retry in ${r.retryAfterMs} ms`);
 *
 * The limiter is here; how its options describe limits, and their validation, is in
 * `rate-limit-policies.ts`; how a store's check is read into the result returned, in
 * `rate-limit-results.ts`; the memory and Redis stores that count are in `stores/`.
 */
import { EventEmitter } from 'node:events';
import type { SpanOptions } from '@opentelemetry/api';
import { ClosedError, InvalidKeyError, RateLimitedError, StoreError } from '../errors.ts';
import { CIRCUIT_STATE_CODE, CircuitBreaker } from '../internal/circuit-breaker.ts';
import type { Clock } from '../internal/clock.ts';
import * as check from '../internal/options.ts';
import {
  type OwnedRedis,
  REDIS_FIRST_CONNECTION_WAIT_MS,
  type RedisInput,
  releaseRedis,
  toRedis,
  watchConnection,
  whenConnected,
} from '../internal/redis.ts';
import { failSpan, startSpan } from '../internal/telemetry.ts';
import { compilePolicies, type RateLimitPolicyOptions } from './rate-limit-policies.ts';
import { chargeRef, readResult, result, tooLarge } from './rate-limit-results.ts';
import { MemoryRateLimitStore } from './stores/memory-store.ts';
import { RedisRateLimitStore } from './stores/redis-store.ts';
import type { ChargeRef, CheckOutput, CompiledPolicy, RateLimitStore } from './stores/store.ts';

export {
  DEFAULT_ALGORITHM,
  DEFAULT_POLICY_NAME,
  MAX_POLICIES,
  type RateLimitPolicy,
  type RateLimitPolicyOptions,
} from './rate-limit-policies.ts';
export type { Algorithm } from './stores/store.ts';

/** @default 'clawperf:rl' */
export const DEFAULT_KEY_PREFIX = 'clawperf:rl';
/** @default 'memory' */
export const DEFAULT_ON_STORE_ERROR: OnStoreError = 'memory';
/** @default 1 */
export const DEFAULT_EXPECTED_NODES = 1;
/** Longest key accepted, in characters. @default 1024 */
export const MAX_KEY_LENGTH = 1024;

/** `Date.now()` as a {@link Clock}. */
export const wallClock: Clock = { now: Date.now };

/** What a Redis-backed limiter does while Redis cannot answer. */
export type OnStoreError = 'fail-open' | 'fail-closed' | 'memory';

export interface RateLimiterOptions extends RateLimitPolicyOptions {
  /** Prefix of Redis keys. @default 'clawperf:rl' */
  keyPrefix?: string;
  /** Redis (a client you own, or a URL for a client the limiter owns); without it limits are per process. */
  redis?: RedisInput;
  /** Command timeout of a client the limiter creates from a URL, ms. @default 100 */
  commandTimeoutMs?: number;
  /**
   * While Redis fails: `'fail-open'` admits (status `'store-error'`), `'fail-closed'` refuses (status
   * `'store-error'`), `'memory'` decides with a local limiter whose limits are divided by `expectedNodes`.
   * @default 'memory'
   */
  onStoreError?: OnStoreError;
  /** Nodes sharing the limits, for the `'memory'` fallback. @default 1 */
  expectedNodes?: number;
  /** Consecutive Redis failures that stop calls to Redis for `cooldownMs`. @default 5 */
  failureThreshold?: number;
  /** How long Redis is left alone after `failureThreshold` failures, ms. @default 5000 */
  cooldownMs?: number;
  /** Period of the memory store's full sweep of expired keys, ms (0: lazy sweeping only). @default 60000 */
  sweepIntervalMs?: number;
  /**
   * Time source of the memory store and the circuit breaker. The default reads `Date.now()`: windows then
   * line up with wall-clock seconds and minutes, as they do on Redis (which uses its own wall clock).
   * @default wallClock
   */
  clock?: Clock;
}

export interface CheckOptions {
  /** Charged against request policies. @default 1 */
  cost?: number;
  /** Charged against token policies. @default 0 */
  tokens?: number;
}

export interface PolicyStatus {
  limit: number;
  remaining: number;
  resetMs: number;
  /** Present when this policy refused the call. */
  retryAfterMs?: number;
  unit: 'requests' | 'tokens';
  windowMs: number;
}

/** Why a call was not simply admitted. */
export type RateLimitReason = 'limit-exceeded' | 'cost-exceeds-limit' | 'store-error' | 'local-fallback';

export interface RateLimitResult {
  allowed: boolean;
  /** `'store-error'`: the store failed and `onStoreError` decided; never a real limit. */
  status: 'allowed' | 'limited' | 'store-error';
  /** The deciding policy: the one that refused (longest wait), else the one closest to its limit. */
  policy: string;
  limit: number;
  remaining: number;
  /** Ms until the deciding policy's full quota is back. */
  resetMs: number;
  /** When refused: ms until the same call can pass. Absent when it never can (cost above the limit). */
  retryAfterMs?: number;
  reason?: RateLimitReason;
  /** True when the local fallback limiter decided because Redis failed. */
  degraded?: boolean;
  /** Every policy's figures (when there is more than one policy). */
  policies?: Record<string, PolicyStatus>;
}

/**
 * A held charge from {@link RateLimiter.reserve}. When admitted, `settle` corrects it to the real usage
 * (refunding or charging the difference in the window it was charged in); `cancel` refunds all of it. An
 * unsettled reservation simply stays charged and expires with its window. Only the first settle/cancel
 * has an effect.
 */
export interface Reservation extends RateLimitResult {
  settle(actual: CheckOptions): Promise<void>;
  cancel(): Promise<void>;
}

/** Flat counters; see {@link RateLimiter.statsCounters}. */
export interface RateLimiterStats {
  checks: number;
  allowed: number;
  limited: number;
  /** Calls refused before any store was asked: bad key or cost, or a cost above a limit. */
  invalid: number;
  storeErrors: number;
  failOpen: number;
  failClosed: number;
  fallbackChecks: number;
  reservations: number;
  settlements: number;
  /** Keys held in memory (the memory store, or the fallback while it is used). */
  keys: number;
  /** Sliding-log entries held in memory. */
  logEntries: number;
  pruned: number;
  breakerState: number;
  breakerOpens: number;
}

const STATS_COUNTERS = [
  'checks',
  'allowed',
  'limited',
  'invalid',
  'storeErrors',
  'failOpen',
  'failClosed',
  'fallbackChecks',
  'reservations',
  'settlements',
  'pruned',
  'breakerOpens',
] as const;

/** Which store decided a check, so a reservation settles in the same place. */
type Where = 0 | 1 | 2;
const PRIMARY: Where = 0;
const FALLBACK: Where = 1;
const NOWHERE: Where = 2;

/**
 * Events: `'store-error'` (error) once when the store starts failing, `'store-recovered'` when it answers
 * again.
 */
export class RateLimiter extends EventEmitter {
  readonly statsCounters: readonly string[] = STATS_COUNTERS;
  readonly policies: readonly CompiledPolicy[];
  readonly #n: number;
  readonly #store: RateLimitStore;
  readonly #memory: MemoryRateLimitStore | undefined;
  readonly #redis: OwnedRedis | undefined;
  readonly #fallback: MemoryRateLimitStore | undefined;
  readonly #fallbackPolicies: readonly CompiledPolicy[] | undefined;
  readonly #onStoreError: OnStoreError;
  readonly #breaker: CircuitBreaker | undefined;
  readonly #tokenPolicy: boolean[];
  readonly #charges: number[];
  readonly #spanOptions: SpanOptions;
  #unwatchRedis: (() => void) | undefined;
  #closed = false;
  #healthy = true;
  #checks = 0;
  #allowed = 0;
  #limited = 0;
  #invalid = 0;
  #storeErrors = 0;
  #failOpen = 0;
  #failClosed = 0;
  #fallbackChecks = 0;
  #reservations = 0;
  #settlements = 0;

  constructor(options: RateLimiterOptions) {
    super();
    const o = check.object<RateLimiterOptions>('options', options);
    this.policies = compilePolicies(o);
    this.#n = this.policies.length;
    this.#tokenPolicy = this.policies.map((p) => p.unit === 'tokens');
    this.#charges = new Array<number>(this.#n).fill(0);
    this.#spanOptions = { attributes: { 'db.system': 'redis', 'clawperf.rate_limit.policies': this.#n } };
    const clock = o.clock === undefined ? wallClock : check.clock<Clock>('options.clock', o.clock);
    const sweepIntervalMs = o.sweepIntervalMs;
    this.#onStoreError =
      o.onStoreError === undefined
        ? DEFAULT_ON_STORE_ERROR
        : check.oneOf('options.onStoreError', o.onStoreError, ['fail-open', 'fail-closed', 'memory']);
    const expectedNodes = check.integer(
      'options.expectedNodes',
      o.expectedNodes ?? DEFAULT_EXPECTED_NODES,
      1,
    );
    const keyPrefix = o.keyPrefix ?? DEFAULT_KEY_PREFIX;
    if (typeof keyPrefix !== 'string') check.invalid('options.keyPrefix', 'a string', keyPrefix);
    if (o.redis === undefined) {
      this.#memory = new MemoryRateLimitStore({ policies: this.policies, clock, sweepIntervalMs });
      this.#store = this.#memory;
      return;
    }
    const timeout =
      o.commandTimeoutMs === undefined
        ? undefined
        : check.integer('options.commandTimeoutMs', o.commandTimeoutMs, 1);
    this.#redis = toRedis('options.redis', o.redis, timeout);
    // A client we own reports connection errors as events; they are failures of checks, counted there.
    if (this.#redis.owned) this.#redis.client.on('error', () => {});
    this.#store = new RedisRateLimitStore({ client: this.#redis.client, policies: this.policies, keyPrefix });
    this.#breaker = new CircuitBreaker({
      name: 'rate-limiter redis',
      failureThreshold: o.failureThreshold,
      cooldownMs: o.cooldownMs,
      clock,
    });
    // Limits are global again as soon as the connection is, not a breaker cooldown later.
    this.#unwatchRedis = watchConnection(this.#redis.client, (up) => {
      if (up) this.#breaker?.reset();
    });
    if (this.#onStoreError === 'memory') {
      this.#fallbackPolicies = this.policies.map((p) => ({
        ...p,
        limit: Math.max(1, Math.floor(p.limit / expectedNodes)),
      }));
      this.#fallback = new MemoryRateLimitStore({ policies: this.#fallbackPolicies, clock, sweepIntervalMs });
    }
  }

  /**
   * Checks `key` against every policy and, when all admit, charges them. Never rejects for a limit or a
   * store outage (see `status`); rejects with {@link InvalidKeyError} for an empty or over-long key,
   * `TypeError` for a negative or non-finite cost, {@link ClosedError} after `close()`.
   */
  allow(key: string, options?: CheckOptions): Promise<RateLimitResult> {
    return this.#check(key, options, undefined);
  }

  /** Like {@link allow}, but rejects with {@link RateLimitedError} when refused (or {@link StoreError}). */
  async consume(key: string, options?: CheckOptions): Promise<RateLimitResult> {
    const result = await this.#check(key, options, undefined);
    if (result.allowed) return result;
    if (result.status === 'store-error') {
      throw new StoreError('redis', 'the rate limit store is unavailable and onStoreError is fail-closed');
    }
    throw new RateLimitedError({
      key,
      limit: result.limit,
      retryAfterMs: result.retryAfterMs ?? Number.POSITIVE_INFINITY,
      policy: result.policy,
    });
  }

  /**
   * Charges an estimate (e.g. prompt tokens + `max_tokens`) like {@link allow}, and returns a handle to
   * correct it once the real usage is known: `settle({ tokens: usage.total_tokens })`.
   */
  async reserve(key: string, options?: CheckOptions): Promise<Reservation> {
    const sink: Sink = { where: NOWHERE, ref: undefined };
    const result = await this.#check(key, options, sink);
    this.#reservations++;
    const { where, ref } = sink;
    let open = result.allowed && ref !== undefined;
    const finish = async (deltas: number[]) => {
      if (!open || ref === undefined) return;
      open = false;
      this.#settlements++;
      if (!deltas.some((d) => d !== 0)) return;
      const store = where === PRIMARY ? this.#store : this.#fallback!;
      try {
        await store.settle(key, ref, deltas);
      } catch (error) {
        this.#storeFailed(error);
      }
    };
    return {
      ...result,
      settle: async (actual: CheckOptions) => {
        const next = this.#chargesFor(actual);
        if (ref !== undefined) await finish(next.map((c, i) => c - ref.charges[i]!));
      },
      cancel: async () => {
        await finish(ref === undefined ? [] : ref.charges.map((c) => -c));
      },
    };
  }

  /** Forgets every count of `key` (in Redis too). */
  async reset(key: string): Promise<void> {
    if (this.#closed) throw new ClosedError('RateLimiter');
    validateKey(key);
    await this.#fallback?.reset(key);
    await this.#store.reset(key);
  }

  stats(): RateLimiterStats {
    const breaker = this.#breaker?.stats();
    const memory = this.#memory ?? this.#fallback;
    return {
      checks: this.#checks,
      allowed: this.#allowed,
      limited: this.#limited,
      invalid: this.#invalid,
      storeErrors: this.#storeErrors,
      failOpen: this.#failOpen,
      failClosed: this.#failClosed,
      fallbackChecks: this.#fallbackChecks,
      reservations: this.#reservations,
      settlements: this.#settlements,
      keys: memory?.size ?? 0,
      logEntries: memory?.logEntries ?? 0,
      pruned: memory?.pruned ?? 0,
      breakerState: breaker?.state ?? CIRCUIT_STATE_CODE.closed,
      breakerOpens: breaker?.opens ?? 0,
    };
  }

  /** Stops the sweep timer and closes a Redis client the limiter created. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#unwatchRedis?.();
    await this.#store.close();
    await this.#fallback?.close();
    if (this.#redis !== undefined) await releaseRedis(this.#redis);
  }

  #chargesFor(options: CheckOptions | undefined): number[] {
    const o = check.object<CheckOptions>('options', options);
    const cost = o.cost === undefined ? 1 : check.number('options.cost', o.cost);
    const tokens = o.tokens === undefined ? 0 : check.number('options.tokens', o.tokens);
    return this.#tokenPolicy.map((t) => (t ? tokens : cost));
  }

  #check(key: string, options: CheckOptions | undefined, sink: Sink | undefined): Promise<RateLimitResult> {
    if (this.#breaker !== undefined) return this.#checkRedis(key, options, sink);
    // The memory store answers synchronously: no async function frame on the hot path.
    try {
      const refused = this.#prepare(key, options);
      if (refused !== undefined) return Promise.resolve(refused);
      const r = this.#store.check(key, this.#charges) as { allowed: boolean; out: CheckOutput };
      return Promise.resolve(
        this.#finish(r.allowed, r.out, this.policies, this.#charges, PRIMARY, undefined, sink),
      );
    } catch (error) {
      return Promise.reject(error);
    }
  }

  async #checkRedis(
    key: string,
    options: CheckOptions | undefined,
    sink: Sink | undefined,
  ): Promise<RateLimitResult> {
    const refused = this.#prepare(key, options);
    if (refused !== undefined) return refused;
    // The scratch array is reused by the next call while this one awaits Redis.
    const charges = this.#charges.slice();
    const permit = this.#breaker!.acquire();
    if (permit !== undefined) {
      const span = startSpan('clawperf.rate_limit.check', this.#spanOptions);
      try {
        const client = this.#redis!.client;
        // Only the first connection is waited for; a lost one fails at once and the fallback decides.
        if (client.status !== 'ready') await whenConnected(client, REDIS_FIRST_CONNECTION_WAIT_MS);
        const r = await this.#store.check(key, charges);
        permit.success();
        if (!this.#healthy) {
          this.#healthy = true;
          this.emit('store-recovered');
        }
        span.setAttribute('clawperf.rate_limit.allowed', r.allowed);
        span.end();
        return this.#finish(r.allowed, r.out, this.policies, charges, PRIMARY, undefined, sink);
      } catch (error) {
        failSpan(span, error);
        permit.failure();
        this.#storeFailed(error);
      }
    }
    return this.#degraded(key, charges, sink);
  }

  /**
   * Validates the call and fills the scratch charges; returns a refusal when a charge exceeds a whole
   * limit. Throws for a closed limiter or bad input.
   */
  #prepare(key: string, options: CheckOptions | undefined): RateLimitResult | undefined {
    if (this.#closed) throw new ClosedError('RateLimiter');
    const charges = this.#charges;
    try {
      validateKey(key);
      let cost = 1;
      let tokens = 0;
      if (options !== undefined) {
        // null, a number or a string instead of the options: a typed error, not a check at cost 1.
        if (typeof options !== 'object' || options === null) check.object('options', options);
        if (options.cost !== undefined) cost = check.number('options.cost', options.cost);
        if (options.tokens !== undefined) tokens = check.number('options.tokens', options.tokens);
      }
      for (let i = 0; i < this.#n; i++) charges[i] = this.#tokenPolicy[i] ? tokens : cost;
    } catch (error) {
      this.#invalid++;
      throw error;
    }
    this.#checks++;
    for (let i = 0; i < this.#n; i++) {
      if (charges[i]! > this.policies[i]!.limit) {
        this.#invalid++;
        this.#limited++;
        return tooLarge(this.policies[i]!);
      }
    }
    return undefined;
  }

  #storeFailed(error: unknown): void {
    this.#storeErrors++;
    if (this.#healthy) {
      this.#healthy = false;
      if (this.listenerCount('store-error') > 0) {
        this.emit('store-error', new StoreError('redis', 'rate limit check failed', { cause: error }));
      }
    }
  }

  #degraded(key: string, charges: number[], sink: Sink | undefined): RateLimitResult {
    if (this.#fallback !== undefined) {
      this.#fallbackChecks++;
      const policies = this.#fallbackPolicies!;
      for (let i = 0; i < this.#n; i++) {
        if (charges[i]! > policies[i]!.limit) {
          this.#limited++;
          const result = tooLarge(policies[i]!);
          result.degraded = true;
          return result;
        }
      }
      const r = this.#fallback.check(key, charges);
      return this.#finish(r.allowed, r.out, policies, charges, FALLBACK, 'local-fallback', sink);
    }
    const p = this.policies[0]!;
    const open = this.#onStoreError === 'fail-open';
    if (open) {
      this.#failOpen++;
      this.#allowed++;
    } else {
      this.#failClosed++;
      this.#limited++;
    }
    return result(
      open,
      'store-error',
      p,
      open ? p.limit : 0,
      0,
      open ? undefined : Math.max(1, this.#breaker!.retryAfterMs()),
      'store-error',
    );
  }

  /** Counts the verdict, reads the store's output into a result and, for a reservation, where it went. */
  #finish(
    allowed: boolean,
    out: CheckOutput,
    policies: readonly CompiledPolicy[],
    charges: number[],
    where: Where,
    fallbackReason: RateLimitReason | undefined,
    sink: Sink | undefined,
  ): RateLimitResult {
    if (allowed) this.#allowed++;
    else this.#limited++;
    if (sink !== undefined && allowed) {
      sink.where = where;
      sink.ref = chargeRef(out, policies.length, charges);
    }
    return readResult(allowed, out, policies, fallbackReason);
  }
}

/** Where a reservation's charge went, filled in by the check. */
interface Sink {
  where: Where;
  ref: ChargeRef | undefined;
}

function validateKey(key: unknown): asserts key is string {
  if (typeof key !== 'string') throw new InvalidKeyError(key, 'a rate limit key must be a string');
  if (key.length === 0) throw new InvalidKeyError(key, 'a rate limit key must not be empty');
  if (key.length > MAX_KEY_LENGTH) {
    throw new InvalidKeyError(key, `a rate limit key must be at most ${MAX_KEY_LENGTH} characters`);
  }
}
