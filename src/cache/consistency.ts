import { EventEmitter } from 'node:events';
import { ClosedError, StoreError } from '../errors.ts';
import * as check from '../internal/options.ts';
import { inSpan } from '../internal/telemetry.ts';
import { invalidKey, type MultiLevelCache, type SetOptions } from './multi-level-cache.ts';

/** Fraction of read-repair hits verified against the database. @default 0.01 */
export const DEFAULT_SAMPLE_RATE = 0.01;

const NAME = 'CacheConsistencyManager';

export interface CacheConsistencyManagerOptions<T> {
  /**
   * This node's id. Node identity is the cache's bus identity (random per instance, set with
   * `MultiLevelCacheOptions.nodeId`); when given here it must match it. @default the cache's `nodeId`
   */
  nodeId?: string;
  /** Fraction of `readRepair` hits verified against the database, 0 to 1. @default 0.01 */
  sampleRate?: number;
  /**
   * Whether the cached value still matches the database's. @default equal `JSON.stringify` output, which
   * is how the default serializer stores values
   */
  equals?: (cached: T, fresh: T) => boolean;
  /** Random source in [0, 1) deciding which hits are verified. @default Math.random */
  random?: () => number;
}

export interface ReadRepairOptions extends SetOptions {
  /** Overrides the manager's `sampleRate` for this call. */
  sampleRate?: number;
  /** Stops this caller's wait for a database load on a miss; rejects with `signal.reason`. */
  signal?: AbortSignal;
}

/** What {@link CacheConsistencyManager.stats} returns: numbers only, one flat level. */
export type CacheConsistencyStats = {
  /** `writeThrough` calls whose database write committed. */
  writes: number;
  /** `writeThrough` calls whose database write failed (the cache was left untouched). */
  write_failures: number;
  /** Committed writes whose invalidation could not reach Redis or the bus (`writeThrough` rejected). */
  invalidation_failures: number;
  /** Repairs refused because a newer write or invalidation reached Redis first (the key is then dropped). */
  version_conflicts: number;
  /** Stale entries found by a verification and repaired on every node. */
  repairs: number;
  /** Verifications started. */
  verifications: number;
  /** Verifications that failed (the database read, the comparison or the repair). */
  verification_errors: number;
  /** Sampled hits not verified because a verification of the key was already running. */
  verifications_skipped: number;
  /** `readRepair` calls served from the cache. */
  read_hits: number;
  /** `readRepair` calls that loaded from the database. */
  read_misses: number;
  /** Verifications running now. */
  verifying: number;
};

export interface CacheConsistencyManagerEvents {
  /** A background verification failed; never thrown at the caller. */
  verifyError: [key: string, error: Error];
  /** A verification found `key` stale and repaired it on every node. */
  repair: [key: string];
}

/**
 * Keeps a {@link MultiLevelCache} consistent with a database across nodes.
 *
 * **Write-through guarantee.** `writeThrough` writes the database first and, once that write has
 * committed, tombstones the key in Redis (at Redis time, after the commit), drops it from this node's L1 and
 * L3, and tells every other node over the Redis bus to drop its copies. It does not cache the written
 * value: the next read refills the key from the database. Every refill (a `readRepair` or `getOrSet` miss,
 * a repair) carries a version taken from Redis time *before* it read the database, and Redis refuses a
 * version older than the tombstone. So, once `writeThrough` resolves:
 * - Redis holds no value older than what the database held when the write committed, and no reader that
 *   read the database before the commit can put its older value back, on any node;
 * - two overlapping writers never leave the loser's value cached, whatever order their database writes
 *   commit in, because neither caches its own value;
 * - every other node drops its L1 copy when the bus message reaches it (one Redis pub/sub hop later: until
 *   then it may still serve the previous value from memory), and a node whose subscription dropped clears
 *   its whole L1 when it reconnects.
 * If the database write fails, the cache is untouched and the call rejects with the database's error. If
 * the write committed but Redis or the bus could not be reached, the call rejects with a
 * {@link StoreError} saying so (this node's copies are dropped; other nodes may keep theirs until their TTL
 * or their reconnect).
 *
 * **Read repair.** `readRepair` serves the cached value at once; a `sampleRate` fraction of hits re-reads
 * the database in the background (one verification per key at a time) and, when the cached value is stale,
 * replaces it under the same version guard and tells every node. Verification errors are counted and
 * emitted as `verifyError`, never thrown at the caller.
 *
 * @example
 * const cache = new MultiLevelCache<User>({ redis: 'redis://127.0.0.1:6379' });
 * const consistency = new CacheConsistencyManager(cache, { sampleRate: 0.01 });
 * await consistency.writeThrough('user:42', user, (u) => db.saveUser(u));
 * const fresh = await consistency.readRepair('user:42', () => db.loadUser(42));
 */
export class CacheConsistencyManager<T = unknown> extends EventEmitter<CacheConsistencyManagerEvents> {
  /** The `stats()` fields that only grow. */
  readonly statsCounters: readonly (keyof CacheConsistencyStats)[] = [
    'writes',
    'write_failures',
    'invalidation_failures',
    'version_conflicts',
    'repairs',
    'verifications',
    'verification_errors',
    'verifications_skipped',
    'read_hits',
    'read_misses',
  ];

  readonly #cache: MultiLevelCache<T>;
  readonly #sampleRate: number;
  readonly #equals: (cached: T, fresh: T) => boolean;
  readonly #random: () => number;
  readonly #verifying = new Set<string>();
  #closed = false;

  #writes = 0;
  #writeFailures = 0;
  #invalidationFailures = 0;
  #conflicts = 0;
  #repairs = 0;
  #verifications = 0;
  #verificationErrors = 0;
  #skipped = 0;
  #hits = 0;
  #misses = 0;

  constructor(cache: MultiLevelCache<T>, options: CacheConsistencyManagerOptions<T> = {}) {
    super();
    if (
      cache === null ||
      typeof cache !== 'object' ||
      typeof (cache as { stamp?: unknown }).stamp !== 'function' ||
      typeof (cache as { invalidate?: unknown }).invalidate !== 'function'
    ) {
      check.invalid('cache', 'a MultiLevelCache', cache);
    }
    check.object('options', options);
    if (options.nodeId !== undefined && options.nodeId !== cache.nodeId) {
      check.invalid(
        'options.nodeId',
        `the cache's nodeId (${JSON.stringify(cache.nodeId)}; set it with MultiLevelCacheOptions.nodeId)`,
        options.nodeId,
      );
    }
    this.#cache = cache;
    this.#sampleRate = check.ratio('options.sampleRate', options.sampleRate ?? DEFAULT_SAMPLE_RATE);
    this.#equals = options.equals === undefined ? jsonEquals : check.fn('options.equals', options.equals);
    this.#random = options.random === undefined ? Math.random : check.fn('options.random', options.random);
  }

  /** This node's id on the bus (the cache's). */
  get nodeId(): string {
    return this.#cache.nodeId;
  }

  /**
   * Writes `value` to the database with `writeToDB`, then, once that has committed, invalidates `key` in
   * Redis and on every node (see the class documentation for the guarantee). The next read refills the key
   * from the database.
   *
   * @throws the error of `writeToDB`, with the cache untouched.
   * @throws {StoreError} the database write committed but Redis or the bus could not be reached.
   * @throws {InvalidKeyError} `key` is not a non-empty string.
   * @throws {ClosedError} after `close()`.
   */
  async writeThrough(
    key: string,
    value: T,
    writeToDB: (value: T) => Promise<unknown> | unknown,
  ): Promise<void> {
    this.#assertOpen();
    if (typeof key !== 'string' || key.length === 0) throw invalidKey(key);
    check.fn('writeToDB', writeToDB);
    await inSpan('clawperf.cache.write_through', async () => {
      try {
        await writeToDB(value);
      } catch (error) {
        this.#writeFailures++;
        throw error;
      }
      this.#writes++;
      if (await this.#cache.invalidate(key)) return;
      this.#invalidationFailures++;
      throw new StoreError(
        'redis',
        `the database write of "${key}" committed, but other nodes could not be told to drop their copies`,
      );
    });
  }

  /**
   * The cached value at once; on a miss, the database's, loaded once per key at a time on this node and
   * cached (refused if a write committed meanwhile). A `sampleRate` fraction of hits is verified against
   * the database in the background and repaired on every node when stale. `readFromDB` returning
   * `undefined` means "no such row": nothing is cached and `undefined` is returned.
   *
   * @throws the error of `readFromDB` on a miss (never on a hit).
   * @throws {InvalidKeyError} `key` is not a non-empty string.
   * @throws {ClosedError} after `close()`.
   */
  async readRepair(
    key: string,
    readFromDB: () => Promise<T | undefined> | T | undefined,
    options: ReadRepairOptions = {},
  ): Promise<T | undefined> {
    this.#assertOpen();
    if (typeof key !== 'string' || key.length === 0) throw invalidKey(key);
    check.fn('readFromDB', readFromDB);
    check.object('options', options);
    const { sampleRate, signal, ...write } = options;
    const rate = sampleRate === undefined ? this.#sampleRate : check.ratio('options.sampleRate', sampleRate);
    const cached = await this.#cache.get(key);
    if (cached === undefined) {
      this.#misses++;
      return this.#cache.getOrSet(key, readFromDB as () => Promise<T>, {
        ...write,
        ...(signal === undefined ? {} : { signal }),
      });
    }
    this.#hits++;
    if (rate > 0 && this.#random() < rate) this.#verify(key, cached, readFromDB, write);
    return cached;
  }

  /** Counters and gauges, numbers only. */
  stats(): CacheConsistencyStats {
    return {
      writes: this.#writes,
      write_failures: this.#writeFailures,
      invalidation_failures: this.#invalidationFailures,
      version_conflicts: this.#conflicts,
      repairs: this.#repairs,
      verifications: this.#verifications,
      verification_errors: this.#verificationErrors,
      verifications_skipped: this.#skipped,
      read_hits: this.#hits,
      read_misses: this.#misses,
      verifying: this.#verifying.size,
    };
  }

  /**
   * Refuses further calls. Verifications still running finish their database read but repair nothing. The
   * cache is not closed (it belongs to the caller). Idempotent.
   */
  async close(): Promise<void> {
    this.#closed = true;
  }

  #verify(
    key: string,
    cached: T,
    readFromDB: () => Promise<T | undefined> | T | undefined,
    write: SetOptions,
  ): void {
    if (this.#verifying.has(key)) {
      this.#skipped++;
      return;
    }
    this.#verifying.add(key);
    this.#verifications++;
    this.#check(key, cached, readFromDB, write)
      .catch((error: unknown) => {
        if (this.#closed && error instanceof ClosedError) return;
        this.#verificationErrors++;
        this.#emitSafe('verifyError', key, error instanceof Error ? error : new Error(String(error)));
      })
      .finally(() => this.#verifying.delete(key));
  }

  async #check(
    key: string,
    cached: T,
    readFromDB: () => Promise<T | undefined> | T | undefined,
    write: SetOptions,
  ): Promise<void> {
    // Taken before the read: if a write commits after it, the repair below is refused rather than
    // putting this read's older value back.
    const stamp = await this.#cache.stamp();
    const fresh = await readFromDB();
    if (this.#closed) return;
    if (fresh !== undefined && this.#equals(cached, fresh)) return;
    this.#repairs++;
    const stored = fresh !== undefined && (await this.#cache.setIfUnchanged(key, fresh, stamp, write));
    if (!stored) {
      if (fresh !== undefined) this.#conflicts++;
      // Something newer won, or the row is gone: dropping the key everywhere is always safe.
      if (!(await this.#cache.invalidate(key))) {
        throw new StoreError('redis', `"${key}" is stale but other nodes could not be told to drop it`);
      }
    }
    this.#emitSafe('repair', key);
  }

  #emitSafe<K extends keyof CacheConsistencyManagerEvents>(
    event: K,
    ...args: CacheConsistencyManagerEvents[K]
  ): void {
    try {
      (this.emit as (e: string, ...a: unknown[]) => boolean)(event, ...args);
    } catch {
      // A listener that throws must not turn a background verification into an unhandled rejection.
    }
  }

  #assertOpen(): void {
    if (this.#closed) throw new ClosedError(NAME);
  }
}

function jsonEquals(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}
