/**
 * SmartCache: adaptive TTLs over a {@link MultiLevelCache}, per-key read and change statistics, and
 * bounded preloading. The TTL policies live in ttl-policies.ts; what stays here is one class whose
 * methods all read and write the same per-key statistics, which is why it is one file of about 600 lines.
 *
 * @module
 */
import { createHash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { type Clock, systemClock } from '../internal/clock.ts';
import * as check from '../internal/options.ts';
import { DEFAULT_STALE_WHILE_REVALIDATE_MS, type MultiLevelCache } from './multi-level-cache.ts';
import { changeAwarePolicy, hitRatePolicy, type TtlPolicy, type TtlPolicyName } from './ttl-policies.ts';

export {
  changeAwarePolicy,
  hitRatePolicy,
  type TtlContext,
  type TtlPolicy,
  type TtlPolicyName,
} from './ttl-policies.ts';

/** @default 1000 (1 second) */
export const DEFAULT_MIN_TTL_MS = 1_000;
/** @default 86400000 (24 hours) */
export const DEFAULT_MAX_TTL_MS = 86_400_000;
/** @default 10000 */
export const DEFAULT_MAX_KEYS = 10_000;
/** @default 0.8 */
export const DEFAULT_HIGH_HIT_RATE = 0.8;
/** @default 0.2 */
export const DEFAULT_LOW_HIT_RATE = 0.2;
/** @default 86400000 (24 hours) */
export const DEFAULT_HIGH_TTL_MS = 86_400_000;
/** @default 3600000 (1 hour) */
export const DEFAULT_MID_TTL_MS = 3_600_000;
/** @default 300000 (5 minutes) */
export const DEFAULT_LOW_TTL_MS = 300_000;
/** @default 1800000 (30 minutes) */
export const DEFAULT_INITIAL_TTL_MS = 1_800_000;
/** @default 10800000 (3 hours) */
export const DEFAULT_PRIOR_CHANGE_INTERVAL_MS = 10_800_000;
/** @default 0.05 */
export const DEFAULT_PRIOR_WEIGHT = 0.05;
/** @default 7 */
export const DEFAULT_STALE_READ_COST = 7;
/** @default 8 */
export const DEFAULT_PRELOAD_CONCURRENCY = 8;
/** @default 0.02 */
export const DEFAULT_MAX_STALE_CHANCE = 0.02;

export interface SmartCacheOptions {
  /**
   * How a TTL is chosen: `'hit-rate'` (the seed's: by the key's hit rate), `'change-aware'` (by how often
   * the key's value really changes and how often it is read) or a {@link TtlPolicy}. @default 'hit-rate'
   */
  policy?: TtlPolicyName | TtlPolicy;
  /** Shortest TTL any policy may set, ms. @default 1000 */
  minTtlMs?: number;
  /** Longest TTL any policy may set, ms. @default 86400000 (24 h) */
  maxTtlMs?: number;
  /** Most keys with per-key statistics (least recently used keys are forgotten first). @default 10000 */
  maxKeys?: number;
  /** 'hit-rate': a hit rate above this earns `highTtlMs`. @default 0.8 */
  highHitRate?: number;
  /** 'hit-rate': a hit rate below this gets `lowTtlMs`. @default 0.2 */
  lowHitRate?: number;
  /** 'hit-rate': TTL for keys above `highHitRate`, ms. @default 86400000 (24 h) */
  highTtlMs?: number;
  /** 'hit-rate': TTL between the two thresholds, ms. @default 3600000 (1 h) */
  midTtlMs?: number;
  /** 'hit-rate': TTL for keys below `lowHitRate`, ms. @default 300000 (5 min) */
  lowTtlMs?: number;
  /** 'change-aware': TTL of a key's first fetch, before anything is known about it, ms. @default 1800000 */
  initialTtlMs?: number;
  /** 'change-aware': how often a key is assumed to change before its refreshes say otherwise, ms. @default 10800000 */
  priorChangeIntervalMs?: number;
  /**
   * 'change-aware': how many observed change intervals the prior is worth. Small values let a key's own
   * refreshes override the prior quickly. @default 0.05
   */
  priorWeight?: number;
  /**
   * 'change-aware': how many origin calls one stale read is worth avoiding. Higher means fresher reads and
   * more origin calls. @default 7
   */
  staleReadCost?: number;
  /**
   * After an entry's TTL, how long it may still be served while one refresh runs in the background, ms
   * (the cache's stale-while-revalidate window, set per entry). A key gets the window only while the
   * chance that its value changed since it was fetched stays under `maxStaleChance`, estimated from the
   * key's own refreshes as `'change-aware'` does; a key that changes often gets none and expires as before.
   * Serving on through a refresh turns the miss at expiry into a hit; it does not save the origin call.
   * @default 0 (off)
   */
  staleWhileRevalidateMs?: number;
  /**
   * Largest estimated chance that a value served inside the stale-while-revalidate window has changed
   * since it was fetched. @default 0.02
   */
  maxStaleChance?: number;
  /** Hash of a value, compared between fetches. @default SHA-1 of `JSON.stringify(value)` */
  hash?: (value: unknown) => string;
  clock?: Clock;
}

export interface PreloadOptions {
  /** Most fetches running at once. @default 8 */
  concurrency?: number;
  /** Stops starting new keys; keys not started are reported in `failed` with `signal.reason`. */
  signal?: AbortSignal;
}

export interface PreloadResult {
  /** Keys fetched and cached. */
  loaded: number;
  /** Keys whose fetch or cache write failed, and keys not started because of the abort signal. */
  failed: { key: string; error: unknown }[];
  /** How many of `failed` were never started because the signal aborted. */
  aborted: number;
}

/** What {@link SmartCache.stats} returns: numbers only, one flat level. */
export type SmartCacheStats = {
  requests: number;
  hits: number;
  fetches: number;
  coalesced: number;
  fetch_errors: number;
  early_expiries: number;
  revalidations: number;
  changes_detected: number;
  unchanged_refreshes: number;
  ttl_grown: number;
  ttl_shrunk: number;
  ttl_le_1m: number;
  ttl_le_5m: number;
  ttl_le_1h: number;
  ttl_le_24h: number;
  ttl_gt_24h: number;
  preload_loaded: number;
  preload_failed: number;
  tracked_keys: number;
  max_keys: number;
};

interface KeyRecord {
  hits: number;
  misses: number;
  firstSeenAt: number;
  firstFetchAt: number;
  fetchedAt: number;
  fetches: number;
  changes: number;
  lastChangeAt: number;
  changeIntervalMs: number;
  ttlMs: number;
  /** When a review decided the cached value expires, before its stored TTL; Infinity when none did. */
  expiresAt: number;
  /** Hits since the last fetch; reviews run at powers of two of it. */
  windowHits: number;
  /** Fetches completed for waiting callers; lets a waiting call tell a coalesced wait from a hit. */
  epoch: number;
  hash: string | undefined;
  /** A fetch that callers wait for is running. */
  fetching: boolean;
  /** A background refresh (stale-while-revalidate) is running. */
  refreshing: boolean;
}

/** Weight of the newest interval in the moving average of change intervals. */
const INTERVAL_EWMA_ALPHA = 0.3;
const MINUTE = 60_000;
const HOUR = 3_600_000;

/**
 * Get-or-fetch with a TTL chosen per key, on top of a {@link MultiLevelCache}.
 *
 * - One fetch per key at a time: concurrent misses share one fetcher call (the cache's `getOrSet`).
 * - The TTL comes from a policy: the seed's `'hit-rate'` (default), `'change-aware'` (hash-compares each
 *   refresh and follows how often the value really changes, weighted by how often it is read) or a function.
 * - Per-key statistics live in an LRU of `maxKeys` records, so memory does not grow with the keys ever seen.
 * - `preload` runs with bounded concurrency, reports failures per key and honours an `AbortSignal`.
 *
 * @example
 * const cache = new MultiLevelCache<Profile>({ redis: process.env.REDIS_URL });
 * const smart = new SmartCache(cache, { policy: 'change-aware' });
 * const profile = await smart.getWithAdaptiveTTL(`user:${id}`, () => db.loadProfile(id));
 */
export class SmartCache<T = unknown> {
  /** The `stats()` fields that only grow. */
  readonly statsCounters: readonly (keyof SmartCacheStats)[] = [
    'requests',
    'hits',
    'fetches',
    'coalesced',
    'fetch_errors',
    'early_expiries',
    'revalidations',
    'changes_detected',
    'unchanged_refreshes',
    'ttl_grown',
    'ttl_shrunk',
    'ttl_le_1m',
    'ttl_le_5m',
    'ttl_le_1h',
    'ttl_le_24h',
    'ttl_gt_24h',
    'preload_loaded',
    'preload_failed',
  ];

  readonly #cache: MultiLevelCache<T>;
  readonly #policy: TtlPolicy;
  readonly #minTtlMs: number;
  readonly #maxTtlMs: number;
  readonly #maxKeys: number;
  readonly #hash: (value: unknown) => string;
  readonly #clock: Clock;
  readonly #keys: LRUCache<string, KeyRecord>;
  readonly #swrMs: number;
  /** `-ln(1 - maxStaleChance)`: the changes expected in the stale window at that chance. */
  readonly #staleBudget: number;
  /** The change-rate prior the window's estimate uses: `priorWeight` and `priorWeight · priorChangeIntervalMs`. */
  readonly #priorChanges: number;
  readonly #priorMs: number;

  #requests = 0;
  #hits = 0;
  #fetches = 0;
  #coalesced = 0;
  #fetchErrors = 0;
  #earlyExpiries = 0;
  #revalidations = 0;
  #changesDetected = 0;
  #unchangedRefreshes = 0;
  #ttlGrown = 0;
  #ttlShrunk = 0;
  #ttlLe1m = 0;
  #ttlLe5m = 0;
  #ttlLe1h = 0;
  #ttlLe24h = 0;
  #ttlGt24h = 0;
  #preloadLoaded = 0;
  #preloadFailed = 0;

  constructor(cache: MultiLevelCache<T>, options: SmartCacheOptions = {}) {
    if (cache === null || typeof cache !== 'object' || typeof cache.getOrSet !== 'function') {
      check.invalid('cache', 'a MultiLevelCache', cache);
    }
    check.object('options', options);
    this.#cache = cache;
    this.#clock = options.clock === undefined ? systemClock : check.clock('options.clock', options.clock);
    this.#minTtlMs = check.integer('options.minTtlMs', options.minTtlMs ?? DEFAULT_MIN_TTL_MS, 1);
    this.#maxTtlMs = check.compared(
      'options.maxTtlMs',
      check.integer('options.maxTtlMs', options.maxTtlMs ?? DEFAULT_MAX_TTL_MS, 1),
      '>=',
      'options.minTtlMs',
      this.#minTtlMs,
    );
    this.#maxKeys = check.integer('options.maxKeys', options.maxKeys ?? DEFAULT_MAX_KEYS, 1);
    this.#hash = options.hash === undefined ? sha1Json : check.fn('options.hash', options.hash);
    const priorWeight = check.positive('options.priorWeight', options.priorWeight ?? DEFAULT_PRIOR_WEIGHT);
    const priorChangeIntervalMs = check.integer(
      'options.priorChangeIntervalMs',
      options.priorChangeIntervalMs ?? DEFAULT_PRIOR_CHANGE_INTERVAL_MS,
      1,
    );
    this.#priorChanges = priorWeight;
    this.#priorMs = priorWeight * priorChangeIntervalMs;
    this.#policy = this.#makePolicy(options, priorWeight, priorChangeIntervalMs);
    this.#swrMs = check.integer(
      'options.staleWhileRevalidateMs',
      options.staleWhileRevalidateMs ?? DEFAULT_STALE_WHILE_REVALIDATE_MS,
      0,
    );
    const chance = check.ratio('options.maxStaleChance', options.maxStaleChance ?? DEFAULT_MAX_STALE_CHANCE);
    if (chance === 1) check.invalid('options.maxStaleChance', 'a number in [0, 1)', chance);
    this.#staleBudget = -Math.log1p(-chance);
    this.#keys = new LRUCache<string, KeyRecord>({ max: this.#maxKeys });
  }

  /**
   * The cached value for `key`, or the fetcher's result cached with the TTL the policy picks. Concurrent
   * misses for a key share one fetcher call. A failing fetcher rejects every caller waiting on it and
   * caches nothing.
   *
   * @throws whatever the fetcher or the cache throws (`ClosedError` once the cache is closed).
   */
  async getWithAdaptiveTTL<V extends T>(key: string, fetcher: () => Promise<V> | V): Promise<V> {
    check.fn('fetcher', fetcher);
    this.#requests++;
    const now = this.#clock.now();
    let record = this.#keys.get(key);
    let revalidate = false;
    if (record !== undefined && !record.fetching && !record.refreshing && now >= record.expiresAt) {
      // A review decided that this entry should expire before the TTL it was stored with.
      record.expiresAt = Number.POSITIVE_INFINITY;
      this.#earlyExpiries++;
      // Inside the safe age it is served on while a refresh runs: started here while the entry is within
      // its TTL, by the cache (the entry's stale window) after.
      if (this.#mayServeStale(record, now)) revalidate = now - record.fetchedAt < record.ttlMs;
      else await this.#cache.del(key);
    }
    const epoch = record?.epoch ?? -1;
    let ran = false;
    const value = await this.#cache.getOrSet(
      key,
      (context) => {
        if (context.background) return this.#fetch(key, fetcher, true);
        ran = true;
        return this.#fetch(key, fetcher, false);
      },
      // The factory writes the entry itself with the TTL chosen from the fetched value.
      { ttlMs: 0 },
    );
    if (ran) return value as V;
    record ??= this.#keys.get(key);
    if (record !== undefined && (record.epoch !== epoch || record.fetching)) this.#coalesced++;
    else this.#hits++;
    this.#recordHit(key, record);
    if (revalidate && record !== undefined && !record.fetching && !record.refreshing) {
      // Served the value the review expired; refresh it behind this read instead of making it a miss.
      this.#fetch(key, fetcher, true).catch(() => {});
    }
    return value as V;
  }

  /**
   * Fetches `keys` (duplicates once) and caches each with the policy's TTL, at most `concurrency` at a
   * time. Never rejects for a key's failure: each failure is reported in `failed`. When `signal` aborts,
   * no further key starts; those keys are reported in `failed` with `signal.reason` (and counted in
   * `aborted`), while fetches already running finish. The fetcher receives the signal.
   */
  async preload(
    keys: Iterable<string>,
    fetcher: (key: string, options: { signal?: AbortSignal }) => Promise<T> | T,
    options: PreloadOptions = {},
  ): Promise<PreloadResult> {
    check.fn('fetcher', fetcher);
    check.object('options', options);
    const concurrency = check.integer(
      'options.concurrency',
      options.concurrency ?? DEFAULT_PRELOAD_CONCURRENCY,
      1,
    );
    const signal = options.signal;
    const list = [...new Set(keys)];
    const result: PreloadResult = { loaded: 0, failed: [], aborted: 0 };
    const fetchOptions = signal === undefined ? {} : { signal };
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < list.length) {
        if (signal?.aborted) return;
        const key = list[next++]!;
        try {
          check.string('a key in keys', key);
          this.#requests++;
          await this.#fetch(key, () => fetcher(key, fetchOptions), false);
          result.loaded++;
        } catch (error) {
          result.failed.push({ key, error });
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, list.length) }, worker));
    if (next < list.length) {
      const reason = signal?.reason;
      for (let i = next; i < list.length; i++) result.failed.push({ key: list[i]!, error: reason });
      result.aborted = list.length - next;
    }
    this.#preloadLoaded += result.loaded;
    this.#preloadFailed += result.failed.length;
    return result;
  }

  /** Counters and gauges, numbers only. `ttl_*` count TTL decisions by the bucket the TTL fell in. */
  stats(): SmartCacheStats {
    return {
      requests: this.#requests,
      hits: this.#hits,
      fetches: this.#fetches,
      coalesced: this.#coalesced,
      fetch_errors: this.#fetchErrors,
      early_expiries: this.#earlyExpiries,
      revalidations: this.#revalidations,
      changes_detected: this.#changesDetected,
      unchanged_refreshes: this.#unchangedRefreshes,
      ttl_grown: this.#ttlGrown,
      ttl_shrunk: this.#ttlShrunk,
      ttl_le_1m: this.#ttlLe1m,
      ttl_le_5m: this.#ttlLe5m,
      ttl_le_1h: this.#ttlLe1h,
      ttl_le_24h: this.#ttlLe24h,
      ttl_gt_24h: this.#ttlGt24h,
      preload_loaded: this.#preloadLoaded,
      preload_failed: this.#preloadFailed,
      tracked_keys: this.#keys.size,
      max_keys: this.#maxKeys,
    };
  }

  /** The key's record, created if the key is not tracked (evicting the least recently used one). */
  #touch(key: string, now: number): KeyRecord {
    let record = this.#keys.get(key);
    if (record === undefined) {
      record = {
        hits: 0,
        misses: 0,
        firstSeenAt: now,
        firstFetchAt: now,
        fetchedAt: now,
        fetches: 0,
        changes: 0,
        lastChangeAt: now,
        changeIntervalMs: 0,
        ttlMs: 0,
        expiresAt: Number.POSITIVE_INFINITY,
        windowHits: 0,
        epoch: 0,
        hash: undefined,
        fetching: false,
        refreshing: false,
      };
      this.#keys.set(key, record);
    }
    return record;
  }

  /**
   * Runs the fetcher, picks the TTL and writes the entry. `background`: a stale-while-revalidate refresh,
   * which no caller waits for and which is not a request of its own.
   */
  async #fetch<V extends T>(key: string, fetcher: () => Promise<V> | V, background: boolean): Promise<V> {
    const record = this.#touch(key, this.#clock.now());
    if (background) {
      record.refreshing = true;
      this.#revalidations++;
    } else {
      record.fetching = true;
    }
    try {
      this.#fetches++;
      let value: V;
      try {
        value = await fetcher();
      } catch (error) {
        this.#fetchErrors++;
        throw error;
      }
      const now = this.#clock.now();
      // The record may have been evicted from the budget while the fetcher ran.
      const current = this.#touch(key, now);
      const ttlMs = this.#decide(key, current, value, now, background);
      if (value !== undefined) {
        await this.#cache.set(key, value, {
          ttlMs,
          staleWhileRevalidateMs: this.#staleWindow(current, ttlMs, now),
        });
      }
      return value;
    } finally {
      if (background) {
        record.refreshing = false;
      } else {
        record.fetching = false;
        record.epoch++;
      }
    }
  }

  /**
   * How long after `ttlMs` the value fetched at `now` may be served while it is refreshed: up to the age at
   * which the chance it changed reaches `maxStaleChance`, at the key's estimated change rate.
   */
  #staleWindow(record: KeyRecord, ttlMs: number, now: number): number {
    if (this.#swrMs === 0) return 0;
    return Math.min(this.#swrMs, Math.max(0, Math.floor(this.#safeAgeMs(record, now) - ttlMs)));
  }

  /** Whether the value `record` was fetched with may still be served at `now` while it is refreshed. */
  #mayServeStale(record: KeyRecord, now: number): boolean {
    return this.#swrMs > 0 && now - record.fetchedAt < this.#safeAgeMs(record, record.fetchedAt);
  }

  /** The age at which a value fetched at `fetchedAt` has changed with chance `maxStaleChance`. */
  #safeAgeMs(record: KeyRecord, fetchedAt: number): number {
    const changeRate =
      (record.changes + this.#priorChanges) / (fetchedAt - record.firstFetchAt + this.#priorMs);
    return this.#staleBudget / changeRate;
  }

  /** Updates the record for a fetch of `value` at `now` and returns the TTL the policy picks. */
  #decide(key: string, record: KeyRecord, value: unknown, now: number, background: boolean): number {
    let hash: string | undefined;
    try {
      hash = this.#hash(value);
    } catch {
      hash = undefined;
    }
    const first = record.fetches === 0;
    const changed =
      first || hash === undefined || record.hash === undefined ? undefined : hash !== record.hash;
    if (first) {
      record.firstFetchAt = now;
      record.lastChangeAt = now;
    }
    if (!background) record.misses++;
    record.fetches++;
    record.fetchedAt = now;
    record.windowHits = 0;
    record.hash = hash;
    if (changed === true) {
      const interval = now - record.lastChangeAt;
      record.changeIntervalMs =
        record.changeIntervalMs === 0
          ? interval
          : INTERVAL_EWMA_ALPHA * interval + (1 - INTERVAL_EWMA_ALPHA) * record.changeIntervalMs;
      record.changes++;
      record.lastChangeAt = now;
      this.#changesDetected++;
    } else if (changed === false) {
      this.#unchangedRefreshes++;
    }
    const previous = first ? undefined : record.ttlMs;
    const ttlMs = this.#ask(key, record, 'fetch', changed, previous, now);
    if (previous !== undefined) {
      if (ttlMs > previous) this.#ttlGrown++;
      else if (ttlMs < previous) this.#ttlShrunk++;
    }
    if (ttlMs <= MINUTE) this.#ttlLe1m++;
    else if (ttlMs <= 5 * MINUTE) this.#ttlLe5m++;
    else if (ttlMs <= HOUR) this.#ttlLe1h++;
    else if (ttlMs <= 24 * HOUR) this.#ttlLe24h++;
    else this.#ttlGt24h++;
    record.ttlMs = ttlMs;
    record.expiresAt = Number.POSITIVE_INFINITY;
    return ttlMs;
  }

  #ask(
    key: string,
    record: KeyRecord,
    reason: 'fetch' | 'review',
    changed: boolean | undefined,
    previousTtlMs: number | undefined,
    now: number,
  ): number {
    const total = record.hits + record.misses;
    const ttl = this.#policy({
      key,
      now,
      reason,
      hits: record.hits,
      misses: record.misses,
      hitRate: total === 0 ? 0 : record.hits / total,
      firstSeenAt: record.firstSeenAt,
      firstFetchAt: record.firstFetchAt,
      fetchedAt: record.fetchedAt,
      fetches: record.fetches,
      changed,
      changes: record.changes,
      lastChangeAt: record.lastChangeAt,
      changeIntervalMs: record.changeIntervalMs,
      previousTtlMs,
    });
    if (!Number.isFinite(ttl)) return ttl > 0 ? this.#maxTtlMs : this.#minTtlMs;
    return Math.min(this.#maxTtlMs, Math.max(this.#minTtlMs, Math.round(ttl)));
  }

  /** Counts a hit and, at the 1st, 2nd, 4th, 8th... hit of the entry, lets the policy review its TTL. */
  #recordHit(key: string, known: KeyRecord | undefined): void {
    const now = this.#clock.now();
    const record = known ?? this.#touch(key, now);
    record.hits++;
    const n = ++record.windowHits;
    if ((n & (n - 1)) !== 0 || record.fetches === 0 || record.fetching || record.refreshing) return;
    const ttlMs = this.#ask(key, record, 'review', undefined, record.ttlMs, now);
    const at = record.fetchedAt + ttlMs;
    if (ttlMs < record.ttlMs && at < record.expiresAt) record.expiresAt = at;
  }

  #makePolicy(options: SmartCacheOptions, priorWeight: number, priorChangeIntervalMs: number): TtlPolicy {
    const policy = options.policy ?? 'hit-rate';
    if (typeof policy === 'function') return policy;
    check.oneOf('options.policy', policy, ['hit-rate', 'change-aware'] as const);
    if (policy === 'hit-rate') {
      return hitRatePolicy({
        highHitRate: check.ratio('options.highHitRate', options.highHitRate ?? DEFAULT_HIGH_HIT_RATE),
        lowHitRate: check.ratio('options.lowHitRate', options.lowHitRate ?? DEFAULT_LOW_HIT_RATE),
        highTtlMs: check.integer('options.highTtlMs', options.highTtlMs ?? DEFAULT_HIGH_TTL_MS, 1),
        midTtlMs: check.integer('options.midTtlMs', options.midTtlMs ?? DEFAULT_MID_TTL_MS, 1),
        lowTtlMs: check.integer('options.lowTtlMs', options.lowTtlMs ?? DEFAULT_LOW_TTL_MS, 1),
      });
    }
    return changeAwarePolicy({
      initialTtlMs: check.integer('options.initialTtlMs', options.initialTtlMs ?? DEFAULT_INITIAL_TTL_MS, 1),
      priorChangeIntervalMs,
      priorWeight,
      staleReadCost: check.positive(
        'options.staleReadCost',
        options.staleReadCost ?? DEFAULT_STALE_READ_COST,
      ),
    });
  }
}

function sha1Json(value: unknown): string {
  const json = JSON.stringify(value);
  return createHash('sha1')
    .update(json === undefined ? 'undefined' : json)
    .digest('base64');
}
