/**
 * TTL policies for {@link SmartCache}: what a policy sees about a key, and the two built in (the seed's
 * hit-rate policy and the change-aware one). A policy is a plain function, so a user can write their own.
 *
 * @module
 */

/** Request rates are estimated over at least this span, so the first few requests of a key do not read as a flood. */
const MIN_RATE_SPAN_MS = 1_000;

/** Built-in TTL policies, or your own function. */
export type TtlPolicyName = 'hit-rate' | 'change-aware';

/**
 * What a TTL policy sees about one key. Times are the clock's milliseconds. Counts cover the time the key
 * has been tracked (since it was first seen, or since it came back after being evicted from the
 * `maxKeys` budget).
 */
export interface TtlContext {
  readonly key: string;
  readonly now: number;
  /** `'fetch'`: the fetcher just ran. `'review'`: a hit asks whether the entry should expire sooner. */
  readonly reason: 'fetch' | 'review';
  /** Requests served from the cache, including requests that joined an in-flight fetch. */
  readonly hits: number;
  /** Requests that ran the fetcher, including the current one on a fetch. */
  readonly misses: number;
  /** `hits / (hits + misses)`. */
  readonly hitRate: number;
  /** When the key was first seen. */
  readonly firstSeenAt: number;
  /** When the first fetch of the key happened. */
  readonly firstFetchAt: number;
  /** When the value now cached was fetched (on a fetch: now). */
  readonly fetchedAt: number;
  /** Fetches so far, including the current one on a fetch. */
  readonly fetches: number;
  /**
   * On a fetch: whether the value's hash differs from the previous fetch's; `undefined` on the first fetch
   * or when the value could not be hashed. On a review: `undefined`.
   */
  readonly changed: boolean | undefined;
  /** Refreshes that found the value changed. */
  readonly changes: number;
  /** When a refresh last found the value changed (the first fetch if none did). */
  readonly lastChangeAt: number;
  /** Moving average of the time between refreshes that found a change, ms; 0 while none has. */
  readonly changeIntervalMs: number;
  /** The TTL chosen at the previous decision, ms; `undefined` on the first fetch. */
  readonly previousTtlMs: number | undefined;
}

/**
 * A custom TTL policy: returns the TTL in ms for the value just fetched (`reason: 'fetch'`), or on a review
 * (`reason: 'review'`) the TTL the entry fetched at `fetchedAt` should have had; a review can only make an
 * entry expire sooner. The result is clamped to `[minTtlMs, maxTtlMs]`. Must be fast and must not throw.
 */
export type TtlPolicy = (context: TtlContext) => number;

/**
 * The seed's policy: a key's hit rate (over the requests it has been tracked for, the current miss included)
 * above `highHitRate` earns `highTtlMs`, below `lowHitRate` gets `lowTtlMs`, otherwise `midTtlMs`. The hit
 * rate only rises on hits, so reviews never shorten an entry.
 */
export function hitRatePolicy(options: {
  highHitRate: number;
  lowHitRate: number;
  highTtlMs: number;
  midTtlMs: number;
  lowTtlMs: number;
}): TtlPolicy {
  const { highHitRate, lowHitRate, highTtlMs, midTtlMs, lowTtlMs } = options;
  return (context) => {
    if (context.reason === 'review') return Number.POSITIVE_INFINITY;
    if (context.hitRate > highHitRate) return highTtlMs;
    if (context.hitRate < lowHitRate) return lowTtlMs;
    return midTtlMs;
  };
}

/**
 * The change-aware policy.
 *
 * It estimates the key's change rate from what its refreshes observed (hash compare):
 * `λ = (changes + priorWeight) / (time observed + priorWeight · priorChangeIntervalMs)`. An unchanged
 * refresh lowers it, so the TTL grows; a changed one raises it, so the TTL shrinks toward the observed
 * change interval. It estimates the read rate `r` from the key's requests (`n - 1` intervals over the time
 * since it was first seen, at least one second).
 *
 * With TTL `T`, one period costs one origin call and serves about `r·λ·T²/2` stale reads, and lasts
 * `T + 1/r` (the period ends at the first read after expiry). Weighing a stale read as `staleReadCost`
 * origin calls, the cost per unit of time is lowest at `T = (sqrt(1 + 2r / (staleReadCost · λ)) - 1) / r`:
 * about `sqrt(2 / (staleReadCost · r · λ))` for hot keys (a key read thousands of times per change is
 * re-checked often, which costs little) and about `1 / (staleReadCost · λ)` for rarely read keys (where a
 * stale read is rare and a miss is not). The first fetch gets `initialTtlMs`; reviews on hits shorten it
 * as soon as the key turns out to be hot.
 */
export function changeAwarePolicy(options: {
  initialTtlMs: number;
  priorChangeIntervalMs: number;
  priorWeight: number;
  staleReadCost: number;
}): TtlPolicy {
  const { initialTtlMs, priorChangeIntervalMs, priorWeight, staleReadCost } = options;
  const priorMs = priorWeight * priorChangeIntervalMs;
  return (context) => {
    const requests = context.hits + context.misses;
    if (context.reason === 'fetch' && context.fetches <= 1 && requests <= 1) return initialTtlMs;
    // Changes are known up to the latest fetch: now on a fetch, the cached value's fetch on a review.
    const observed = (context.reason === 'fetch' ? context.now : context.fetchedAt) - context.firstFetchAt;
    const changeRate = (context.changes + priorWeight) / (observed + priorMs);
    const span = Math.max(context.now - context.firstSeenAt, MIN_RATE_SPAN_MS);
    const readRate = Math.max(requests - 1, 1) / span;
    return (Math.sqrt(1 + (2 * readRate) / (staleReadCost * changeRate)) - 1) / readRate;
  };
}
