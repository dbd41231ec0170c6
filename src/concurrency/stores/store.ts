/**
 * What a rate-limit store does: check every policy of one key at once (all-or-nothing), correct a
 * reservation afterwards, forget a key. The limiter turns a store's raw figures into results.
 */

/** The algorithms a policy can use. */
export const ALGORITHMS = ['fixed-window', 'sliding-window', 'sliding-log', 'token-bucket', 'gcra'] as const;
export type Algorithm = (typeof ALGORITHMS)[number];

/** Numeric algorithm codes, shared by the memory store and the Lua scripts. */
export const ALGORITHM_CODE: Readonly<Record<Algorithm, number>> = {
  'fixed-window': 0,
  'sliding-window': 1,
  'sliding-log': 2,
  'token-bucket': 3,
  gcra: 4,
};

/** A policy after validation. */
export interface CompiledPolicy {
  readonly name: string;
  readonly algorithm: Algorithm;
  /** {@link ALGORITHM_CODE} of `algorithm`. */
  readonly code: number;
  readonly windowMs: number;
  readonly limit: number;
  readonly unit: 'requests' | 'tokens';
}

/** Slots per policy in a check's output: remaining, resetMs, retryAfterMs. */
export const OUT_STRIDE = 3;

/**
 * A check's figures, flat: for policy i, `[3i]` remaining (after the charge when allowed), `[3i + 1]` ms
 * until the full quota is back, `[3i + 2]` ms until the same charge could pass (0 when it passes now).
 * After the policies: the store's time of the check, then, per policy, the id of the sliding-log entry
 * written (0 when none), for settling a reservation.
 */
export type CheckOutput = ArrayLike<number>;

/** Where a reservation was charged, so {@link RateLimitStore.settle} can correct the same window. */
export interface ChargeRef {
  /** The store's time of the charge. */
  readonly at: number;
  /** Per policy, the sliding-log entry id (0 when none). */
  readonly logIds: readonly number[];
  /** Per policy, what was charged. */
  readonly charges: readonly number[];
}

export interface RateLimitStore {
  /**
   * Checks `charges` (one per policy) against every policy of `key`; commits all of them only when every
   * policy admits its charge. Resolves with whether it did and the figures ({@link CheckOutput}).
   */
  check(key: string, charges: readonly number[]): Promise<CheckResult> | CheckResult;
  /** Adds `deltas` (one per policy, negative to refund) to the charge described by `ref`. */
  settle(key: string, ref: ChargeRef, deltas: readonly number[]): Promise<void> | void;
  /** Forgets everything about `key`. */
  reset(key: string): Promise<void> | void;
  close(): Promise<void>;
}

export interface CheckResult {
  allowed: boolean;
  out: CheckOutput;
}
