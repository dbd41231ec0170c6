/**
 * {@link MultiLevelCache}: its public methods and the paths a call takes through the levels. The parts
 * that hold one idea each live beside it: the options and their checks (cache-options.ts), the public
 * shapes (cache-types.ts), the counters and `stats()` (cache-stats.ts), the recent-invalidations ring
 * (invalidation-ring.ts), disk admission on reuse (disk-admission.ts), the callers waiting on another
 * node's lease (key-waiters.ts); its spans come from the library's telemetry helper.
 *
 * This file is over 600 lines on purpose: what is left is one idea, a read or a write crossing the
 * levels, and its pieces share one state. The tier reads and back-fill (`#lower`, `#readL2`, `#readL3`,
 * `#accept`) use the three stores, the breaker, the counters, the ring, the serializer and the hit
 * listeners, and fill L1 as `#write` does; the Redis lease and fencing (`#acquire`, `#produceIn`) read
 * through `#lower` and `#readL2`, store through `#write`, and are woken by the bus messages
 * `#onBusMessage` applies. Moved out, either would take most of the class's private fields as
 * parameters, and the L2 hit path would go through one more object. About 300 of the lines are the
 * public methods with their TSDoc.
 *
 * @module
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import {
  ClosedError,
  InvalidKeyError,
  SerializationError,
  StoreError,
  ValueTooLargeError,
} from '../errors.ts';
import { type BreakerPermit, CircuitBreaker } from '../internal/circuit-breaker.ts';
import type { Clock } from '../internal/clock.ts';
import * as check from '../internal/options.ts';
import { watchConnection } from '../internal/redis.ts';
import { inSpan } from '../internal/telemetry.ts';
import { type BusMessage, type InvalidationBus, RedisBus } from './bus.ts';
import {
  type CacheSettings,
  type GetOrSetOptions,
  type LoadOptions,
  loadOptions,
  type MultiLevelCacheOptions,
  NO_TAGS,
  resolveOptions,
  type SetOptions,
  type WriteOptions,
  writeOptions,
} from './cache-options.ts';
import { CacheCounters, cacheStats, type MultiLevelCacheStats, STATS_COUNTERS } from './cache-stats.ts';
import type {
  CacheResult,
  Factory,
  FactoryContext,
  MultiLevelCacheEvents,
  ReadStamp,
} from './cache-types.ts';
import { DiskAdmission } from './disk-admission.ts';
import { type InvalidationKind, InvalidationRing } from './invalidation-ring.ts';
import { KeyWaiters } from './key-waiters.ts';
import type { Serializer } from './serializer.ts';
import { DiskStore } from './stores/disk.ts';
import { type MemoryEntry, MemoryStore, sizeOf, type UnsavedEntry } from './stores/memory.ts';
import { RedisStore } from './stores/redis.ts';
import type { StoredEntry } from './stores/store.ts';

export {
  DEFAULT_COMMAND_TIMEOUT_MS,
  DEFAULT_LOCK_LEASE_MS,
  DEFAULT_LOCK_WAIT_MS,
  DEFAULT_MAX_VALUE_BYTES,
  DEFAULT_STALE_WHILE_REVALIDATE_MS,
  DEFAULT_TTL_JITTER,
  DEFAULT_TTL_MS,
  type GetOrSetOptions,
  type MultiLevelCacheOptions,
  type SetOptions,
} from './cache-options.ts';
export type { MultiLevelCacheStats } from './cache-stats.ts';
export type {
  CacheLevel,
  CacheOutcome,
  CacheResult,
  Factory,
  FactoryContext,
  MultiLevelCacheEvents,
  ReadStamp,
} from './cache-types.ts';

const NAME = 'MultiLevelCache';

const FOREGROUND: FactoryContext = Object.freeze({ background: false });
const BACKGROUND: FactoryContext = Object.freeze({ background: true });

interface Found<T> {
  value: T;
  fresh: boolean;
  level: 'l2' | 'l3';
}

const DOWN = Symbol('down');

/**
 * A three-level cache: memory (L1, true LRU bounded by entries and bytes), Redis (L2, shared by every node)
 * and disk (L3, survives restarts). Reads fall through the levels and back-fill the faster ones with the
 * entry's remaining TTL. Writes are versioned in Redis, so a slow writer or a write racing a delete or tag
 * invalidation never brings invalidated data back; a bus tells every node to drop its L1 copies. When
 * Redis fails the cache keeps serving from memory and disk, a circuit breaker stops paying the timeout,
 * and L2 comes back by itself.
 *
 * `undefined` is the only miss: `null`, `0`, `''` and `false` are values.
 *
 * @example
 * const cache = new MultiLevelCache<string>({ redis: 'redis://127.0.0.1:6379', disk: { dir: '/var/cache/app' } });
 * const answer = await cache.getOrSet('q:42', () => callModel('42'), { ttlMs: 60_000, tags: ['model:a'] });
 * await cache.invalidateByTag('model:a');
 */
export class MultiLevelCache<T = unknown> extends EventEmitter<MultiLevelCacheEvents> {
  /** The `stats()` fields that only grow. */
  readonly statsCounters: readonly (keyof MultiLevelCacheStats)[] = STATS_COUNTERS;

  readonly #l1: MemoryStore<T> | undefined;
  readonly #l2: RedisStore | undefined;
  readonly #l3: DiskStore | undefined;
  /** L3 writes wait for the value's first reuse from L1 (`diskAdmission: 'reuse'` with an L1 and an L3). */
  readonly #admission: DiskAdmission<T> | undefined;
  readonly #bus: InvalidationBus | undefined;
  readonly #busReady: Promise<void>;
  readonly #breaker: CircuitBreaker;
  readonly #clock: Clock;
  readonly #wallOffset: number;
  readonly #serializer: Serializer;
  readonly #settings: CacheSettings;
  readonly #nodeId: string;
  readonly #inflight = new Map<string, Promise<CacheResult<T>>>();
  readonly #refreshing = new Set<string>();
  /** Callers waiting for another node's lease on a key. */
  readonly #waiters = new KeyWaiters();
  /** Invalidations seen lately, against which a read or write under way checks before it fills a level. */
  readonly #recent = new InvalidationRing();
  #fences = 0;
  #closed = false;
  #listenHit = false;
  #listenMiss = false;
  #redisDown = false;
  /** Stops following the L2 client's connection events. */
  #unwatchRedis: (() => void) | undefined;
  #diskDown = false;

  readonly #counts = new CacheCounters();

  constructor(options: MultiLevelCacheOptions = {}) {
    super();
    const settings = resolveOptions(options);
    this.#settings = settings;
    this.#clock = settings.clock;
    this.#wallOffset = performance.timeOrigin;
    this.#serializer = settings.serializer;

    this.#l1 =
      settings.l1 === undefined
        ? undefined
        : new MemoryStore<T>({ ...settings.l1, clock: this.#clock }, 'options.l1');
    const disk = settings.disk;
    this.#l3 =
      disk === undefined || disk instanceof DiskStore
        ? disk
        : new DiskStore({ ...disk, clock: this.#clock }, 'options.disk');
    this.#admission =
      settings.diskAdmission === 'reuse' && this.#l1 !== undefined && this.#l3 !== undefined
        ? new DiskAdmission<T>({
            clock: this.#clock,
            recent: this.#recent,
            counts: this.#counts,
            encode: (key, value) => this.#encode(key, value),
            save: (key, entry) => this.#useL3((l3) => l3.set(key, entry)),
          })
        : undefined;

    this.#breaker = new CircuitBreaker(
      {
        name: 'redis',
        clock: this.#clock,
        ...(settings.breaker.failureThreshold === undefined
          ? {}
          : { failureThreshold: settings.breaker.failureThreshold }),
        ...(settings.breaker.cooldownMs === undefined ? {} : { cooldownMs: settings.breaker.cooldownMs }),
      },
      'options.breaker',
    );
    // Last of what can throw on an invalid option, since a URL opens a connection: one that failed above
    // leaves nothing open.
    const l2 = settings.l2;
    this.#l2 =
      l2 === undefined || l2 instanceof RedisStore
        ? l2
        : new RedisStore({ ...l2, namespace: settings.namespace, clock: this.#clock });

    // Redis's state follows its connection, not the next request that happens to touch it: the stats (and
    // so the gateway's /readyz) change with no traffic, and a reconnect closes the breaker at once instead
    // of leaving L2 unused for a cooldown.
    this.#unwatchRedis =
      this.#l2 === undefined
        ? undefined
        : watchConnection(this.#l2.client, (up) => {
            if (up) this.#redisBack();
            else this.#redisLost(new StoreError('redis', 'the connection to Redis closed'));
          });

    if (options.bus === false) this.#bus = undefined;
    else if (options.bus !== undefined) this.#bus = options.bus;
    else if (this.#l2 !== undefined) {
      this.#bus = new RedisBus({
        client: this.#l2.client,
        channel: `${settings.namespace}:bus`,
        ...(options.nodeId === undefined ? {} : { nodeId: options.nodeId }),
      });
    }
    this.#nodeId = this.#bus?.nodeId ?? options.nodeId ?? randomUUID();
    this.#busReady =
      this.#bus === undefined
        ? Promise.resolve()
        : this.#bus
            .subscribe({
              message: (message) => this.#onBusMessage(message),
              reconnected: () => this.#onBusReconnected(),
            })
            .catch((error: unknown) => {
              this.#counts.busErrors++;
              this.#report(error);
            });

    const events = this as EventEmitter;
    events.on('newListener', (event: string) => {
      if (event === 'hit') this.#listenHit = true;
      else if (event === 'miss') this.#listenMiss = true;
    });
    events.on('removeListener', () => {
      this.#listenHit = this.listenerCount('hit') > 0;
      this.#listenMiss = this.listenerCount('miss') > 0;
    });
  }

  /** This node's id on the invalidation bus. */
  get nodeId(): string {
    return this.#nodeId;
  }

  /** Resolves once the bus is subscribed and Redis time is known (or they failed, which is counted). */
  async ready(): Promise<void> {
    await this.#busReady;
    if (this.#l2 !== undefined) await this.#l2.syncTime().catch(() => undefined);
  }

  /**
   * The value, or `undefined` on a miss. Tries L1, then L2, then L3; a hit below L1 back-fills the faster
   * levels with the entry's remaining TTL. Store failures are counted, never thrown.
   *
   * @throws {InvalidKeyError} `key` is not a non-empty string.
   * @throws {ClosedError} after `close()`.
   */
  get(key: string): Promise<T | undefined> {
    if (this.#closed) return Promise.reject(new ClosedError(NAME));
    if (typeof key !== 'string' || key.length === 0) return Promise.reject(invalidKey(key));
    const l1 = this.#l1;
    if (l1 !== undefined) {
      const entry = l1.get(key);
      if (entry !== undefined && (entry.grace === 0 || entry.freshUntil >= this.#clock.now())) {
        return Promise.resolve(this.#l1Hit(key, entry));
      }
      this.#counts.l1Misses++;
    }
    return this.#lower(key, false, true).then(foundValue);
  }

  /** Several values at once, in the order of `keys`; the L2 misses of L1 cost one Redis round trip. */
  async getMany(keys: readonly string[]): Promise<(T | undefined)[]> {
    this.#assertOpen();
    if (!Array.isArray(keys)) check.invalid('keys', 'an array', keys);
    for (const key of keys) if (typeof key !== 'string' || key.length === 0) throw invalidKey(key);
    const values: (T | undefined)[] = new Array(keys.length);
    const missing: number[] = [];
    const now = this.#clock.now();
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!;
      const entry = this.#l1?.get(key);
      if (entry !== undefined && (entry.grace === 0 || entry.freshUntil >= now)) {
        values[i] = this.#l1Hit(key, entry);
      } else {
        if (this.#l1 !== undefined) this.#counts.l1Misses++;
        missing.push(i);
      }
    }
    if (missing.length === 0) return values;
    const since = this.#recent.seq;
    const missingKeys = missing.map((i) => keys[i]!);
    const fromL2 = await this.#readL2((l2) => l2.getMany(missingKeys));
    const l2Up = fromL2 !== DOWN;
    const below: number[] = [];
    for (let j = 0; j < missing.length; j++) {
      const index = missing[j]!;
      const entry = l2Up ? fromL2[j] : undefined;
      const found = entry === undefined ? undefined : this.#accept(keys[index]!, entry, 'l2', since, false);
      if (found !== undefined) {
        values[index] = found.value;
        continue;
      }
      if (l2Up) this.#counts.l2Misses++;
      if (this.#l3 !== undefined) below.push(index);
      else {
        values[index] = undefined;
        this.#countMiss(keys[index]!);
      }
    }
    await Promise.all(
      below.map(async (index) => {
        const key = keys[index]!;
        const found = await this.#readL3(key, l2Up, since, false);
        if (found === undefined) this.#countMiss(key);
        values[index] = found?.value;
      }),
    );
    return values;
  }

  /** Whether `key` holds a fresh value (served and back-filled like {@link get}). */
  async has(key: string): Promise<boolean> {
    return (await this.get(key)) !== undefined;
  }

  /**
   * Stores `value` in every level. `ttlMs: 0` means "do not cache": whatever was cached for the key is
   * dropped instead. If a newer write, a delete or a tag invalidation reaches Redis first, this write is
   * refused there and not kept anywhere.
   *
   * @throws {InvalidKeyError} `key` is not a non-empty string.
   * @throws {SerializationError} the value cannot be serialized.
   * @throws {ValueTooLargeError} the serialized value is over `maxValueBytes`.
   */
  async set(key: string, value: T, options: SetOptions = {}): Promise<void> {
    this.#assertOpen();
    if (typeof key !== 'string' || key.length === 0) throw invalidKey(key);
    const write = writeOptions(options, this.#settings);
    if (write.ttlMs === 0) return this.del(key);
    if (value === undefined)
      throw new SerializationError(key, 'undefined is the miss marker and cannot be stored');
    const data = this.#encode(key, value);
    const since = this.#recent.seq;
    this.#counts.sets++;
    await inSpan('clawperf.cache.set', async () => {
      const version = await this.#version();
      await this.#write(key, value, data, version, write, since, '');
    });
  }

  /**
   * A stamp to take before reading a value from its source (a database), for {@link setIfUnchanged}. Its
   * version is Redis time and never ahead of it, so any write, delete or invalidation that reaches Redis
   * after the stamp was taken carries a newer version.
   */
  async stamp(): Promise<ReadStamp> {
    this.#assertOpen();
    const seq = this.#recent.seq;
    return Object.freeze({ version: await this.#version(), seq });
  }

  /**
   * Stores `value` (read from its source after `stamp` was taken from this cache) unless a write, delete or
   * invalidation of the key reached Redis, or this node, after the stamp: a reader that loaded before a
   * write cannot put the older value back. Resolves `false` when refused (nothing is kept), `true` when
   * stored (other nodes are told to drop their copies); while Redis is unreachable the value is kept on
   * this node only and the result is `true`.
   *
   * @throws {InvalidKeyError} `key` is not a non-empty string.
   * @throws {SerializationError} the value cannot be serialized.
   * @throws {ValueTooLargeError} the serialized value is over `maxValueBytes`.
   */
  async setIfUnchanged(key: string, value: T, stamp: ReadStamp, options: SetOptions = {}): Promise<boolean> {
    this.#assertOpen();
    if (typeof key !== 'string' || key.length === 0) throw invalidKey(key);
    check.object('stamp', stamp);
    check.number('stamp.version', stamp.version);
    check.integer('stamp.seq', stamp.seq);
    const write = writeOptions(options, this.#settings);
    if (value === undefined)
      throw new SerializationError(key, 'undefined is the miss marker and cannot be stored');
    if (write.ttlMs === 0) return false;
    const data = this.#encode(key, value);
    this.#counts.sets++;
    return inSpan('clawperf.cache.set', async () => {
      const outcome = await this.#write(key, value, data, stamp.version, write, stamp.seq, '');
      return outcome !== 'refused';
    });
  }

  /** Removes `key` from every level and every node's L1. */
  async del(key: string): Promise<void> {
    this.#assertOpen();
    if (typeof key !== 'string' || key.length === 0) throw invalidKey(key);
    await this.#remove(key);
  }

  /**
   * {@link del}, resolving whether every node was reached: `true` once Redis holds the key's tombstone
   * (so writes that started earlier are refused) and the bus message went out; `false` when Redis or the
   * bus could not be reached, so other nodes may still hold the key in L1. A cache without L2 or without a
   * bus has nothing more to reach than itself.
   */
  async invalidate(key: string): Promise<boolean> {
    this.#assertOpen();
    if (typeof key !== 'string' || key.length === 0) throw invalidKey(key);
    return this.#remove(key);
  }

  #remove(key: string): Promise<boolean> {
    this.#counts.deletes++;
    this.#forget(0, key);
    return inSpan('clawperf.cache.del', async () => {
      const tombstoned = this.#l2 === undefined || (await this.#readL2((l2) => l2.delete(key))) !== DOWN;
      await this.#useL3((l3) => l3.delete(key));
      // A read that began while Redis and disk still held the value may have put it back in L1.
      this.#forget(0, key);
      const published = await this.#publish({ keys: [key] });
      return tombstoned && (published || this.#bus === undefined);
    });
  }

  /**
   * Removes every entry set with `tag` from Redis, disk and every node's L1. A write of such an entry that
   * started before this call and lands after it is refused.
   */
  async invalidateByTag(tag: string): Promise<void> {
    this.#assertOpen();
    check.string('tag', tag);
    this.#counts.tagInvalidations++;
    this.#forget(1, tag);
    await inSpan('clawperf.cache.invalidate_tag', async () => {
      await this.#useL2((l2) => l2.invalidateTag(tag));
      await this.#useL3((l3) => l3.invalidateTag(tag));
      this.#forget(1, tag);
      await this.#publish({ tag });
    });
  }

  /** Removes every entry of this cache's namespace from every level and every node's L1. */
  async clear(): Promise<void> {
    this.#assertOpen();
    this.#forget(2, '');
    await inSpan('clawperf.cache.clear', async () => {
      await this.#useL2((l2) => l2.clear());
      await this.#useL3((l3) => l3.clear());
      this.#forget(2, '');
      await this.#publish({ all: true });
    });
  }

  /**
   * The cached value, or the factory's result, cached. The factory runs once per key at a time in this
   * process (other callers wait for it); with `lock` once across nodes (a Redis lease). A failing factory
   * rejects every waiter and caches nothing. With `staleWhileRevalidateMs`, an expired value inside that
   * window is served at once while one refresh runs (its factory call is told `{ background: true }`),
   * and keeps being served if the refresh fails.
   * A factory result of `undefined` is returned but not cached.
   */
  getOrSet(key: string, factory: Factory<T>, options: GetOrSetOptions = {}): Promise<T> {
    return this.#getOrSet(key, factory, options, false) as Promise<T>;
  }

  /**
   * {@link getOrSet} that also says how the value was had: a hit and at which level, a stale value served
   * while it is refreshed, a miss this call produced, or a wait on another caller's production. One lookup
   * either way: a caller never needs a `get` first to learn whether it was a hit.
   */
  getOrSetWithOutcome(
    key: string,
    factory: Factory<T>,
    options: GetOrSetOptions = {},
  ): Promise<CacheResult<T>> {
    return this.#getOrSet(key, factory, options, true) as Promise<CacheResult<T>>;
  }

  /** Both getOrSet forms: the value alone, or with its outcome. */
  #getOrSet(
    key: string,
    factory: Factory<T>,
    options: GetOrSetOptions,
    withOutcome: boolean,
  ): Promise<T | CacheResult<T>> {
    if (this.#closed) return Promise.reject(new ClosedError(NAME));
    if (typeof key !== 'string' || key.length === 0) return Promise.reject(invalidKey(key));
    let load: LoadOptions;
    try {
      load = loadOptions(factory, options, this.#settings);
    } catch (error) {
      return Promise.reject(error);
    }
    const entry = this.#l1?.get(key);
    if (entry !== undefined && (entry.grace === 0 || entry.freshUntil >= this.#clock.now())) {
      const value = this.#l1Hit(key, entry);
      return Promise.resolve(withOutcome ? { value, outcome: 'hit', level: 'l1' } : value);
    }
    const loaded = this.#loadShared(key, factory, load, entry);
    const pending = withOutcome ? loaded : loaded.then(resultValue);
    return options.signal === undefined ? pending : abortable<T | CacheResult<T>>(pending, options.signal);
  }

  /**
   * Past L1: joins the load of `key` under way (a coalesced wait) or starts one. `l1Entry` is an expired
   * L1 entry still inside its stale window, if any.
   */
  #loadShared(
    key: string,
    factory: Factory<T>,
    { write, lock }: LoadOptions,
    l1Entry: MemoryEntry<T> | undefined,
  ): Promise<CacheResult<T>> {
    const joined = this.#inflight.get(key);
    if (joined !== undefined) {
      this.#counts.coalesced++;
      return joined.then(asCoalesced);
    }
    if (this.#l1 !== undefined) this.#counts.l1Misses++;
    const pending = this.#load(key, factory, write, lock, l1Entry);
    this.#inflight.set(key, pending);
    const done = () => {
      if (this.#inflight.get(key) === pending) this.#inflight.delete(key);
    };
    pending.then(done, done);
    return pending;
  }

  /** Counters and gauges, numbers only. */
  stats(): MultiLevelCacheStats {
    return cacheStats(this.#counts, {
      l1: this.#l1,
      l3: this.#l3,
      l2Up: this.#l2 !== undefined && !this.#redisDown,
      breaker: this.#breaker.stats(),
    });
  }

  /** Stops the bus and closes the stores (and a Redis client made from a URL). Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const admitted = this.#admission?.close();
    this.#unwatchRedis?.();
    this.#waiters.wakeAll();
    await this.#busReady;
    await this.#bus?.close().catch(() => undefined);
    await this.#l2?.close().catch(() => undefined);
    await admitted;
    await this.#l3?.close().catch(() => undefined);
  }

  /**
   * Reads L2, then L3, back-filling; `undefined` when neither has a usable value (counted as a miss when
   * `countMiss`).
   */
  async #lower(key: string, allowStale: boolean, countMiss: boolean): Promise<Found<T> | undefined> {
    const since = this.#recent.seq;
    const l2 = this.#l2;
    let l2Up = false;
    // The L2 read is written out rather than going through #readL2: this is the L2 hit path.
    if (l2 !== undefined) {
      const permit = this.#breaker.acquire();
      if (permit !== undefined) {
        let entry: StoredEntry | undefined;
        try {
          entry = await l2.get(key);
          l2Up = true;
        } catch (error) {
          this.#redisFailed(permit, error);
        }
        if (l2Up) {
          this.#redisOk(permit);
          if (entry !== undefined) {
            const found = this.#accept(key, entry, 'l2', since, allowStale);
            if (found !== undefined) return found;
          }
          this.#counts.l2Misses++;
        }
      } else {
        this.#counts.l2Skipped++;
      }
    }
    const found = this.#l3 === undefined ? undefined : await this.#readL3(key, l2Up, since, allowStale);
    if (found === undefined && countMiss) this.#countMiss(key);
    return found;
  }

  /** An L2 read through the breaker: its result, or DOWN when L2 is absent, open or failing. */
  async #readL2<R>(read: (l2: RedisStore) => Promise<R>): Promise<R | typeof DOWN> {
    const l2 = this.#l2;
    if (l2 === undefined) return DOWN;
    const permit = this.#breaker.acquire();
    if (permit === undefined) {
      this.#counts.l2Skipped++;
      return DOWN;
    }
    try {
      const result = await read(l2);
      this.#redisOk(permit);
      return result;
    } catch (error) {
      this.#redisFailed(permit, error);
      return DOWN;
    }
  }

  /**
   * Reads L3. When L2 is up the entry is first written back to L2 with its own version: if Redis refuses it
   * (deleted or invalidated while this node was not listening), the disk copy is stale and is dropped.
   */
  async #readL3(
    key: string,
    l2Up: boolean,
    since: number,
    allowStale: boolean,
  ): Promise<Found<T> | undefined> {
    const l3 = this.#l3;
    if (l3 === undefined) return undefined;
    let entry: StoredEntry | undefined;
    try {
      entry = await l3.get(key);
      this.#diskOk();
    } catch (error) {
      this.#diskFailed(error);
      return undefined;
    }
    if (entry === undefined || (entry.ttlMs <= 0 && !allowStale)) {
      this.#counts.l3Misses++;
      return undefined;
    }
    if (l2Up && entry.ttlMs > 0) {
      const accepted = await this.#readL2((l2) => l2.set(key, entry));
      if (accepted === false) {
        this.#counts.l3Misses++;
        await this.#useL3((disk) => disk.delete(key));
        return undefined;
      }
      if (accepted === true) this.#counts.l2Backfills++;
    }
    const found = this.#accept(key, entry, 'l3', since, allowStale);
    if (found === undefined) this.#counts.l3Misses++;
    return found;
  }

  /** Decodes a stored entry, counts the hit and back-fills L1 unless an invalidation overtook the read. */
  #accept(
    key: string,
    entry: StoredEntry,
    level: 'l2' | 'l3',
    since: number,
    allowStale: boolean,
  ): Found<T> | undefined {
    const fresh = entry.ttlMs > 0;
    if (!fresh && !allowStale) return undefined;
    let value: T;
    try {
      value = this.#serializer.deserialize(entry.data) as T;
    } catch (error) {
      this.#report(new SerializationError(key, 'a stored value could not be read back', { cause: error }));
      return undefined;
    }
    if (level === 'l2') this.#counts.l2Hits++;
    else this.#counts.l3Hits++;
    if (this.#listenHit) this.#emitSafe('hit', key, level);
    if (fresh && this.#l1 !== undefined && this.#recent.untouched(key, entry.tags, since)) {
      this.#fillL1(key, value, entry.tags, entry.ttlMs, entry.graceMs);
      this.#counts.l1Backfills++;
    }
    return { value, fresh, level };
  }

  async #load(
    key: string,
    factory: Factory<T>,
    write: WriteOptions,
    lock: boolean,
    l1Entry: MemoryEntry<T> | undefined,
  ): Promise<CacheResult<T>> {
    // An L1 entry that is still here but past its fresh time is inside its stale window.
    if (l1Entry !== undefined) {
      this.#counts.staleServed++;
      this.#refresh(key, factory, write, lock);
      return { value: l1Entry.value, outcome: 'stale', level: 'l1' };
    }
    const found = await this.#lower(key, write.graceMs > 0, true);
    if (found !== undefined) {
      if (found.fresh) return { value: found.value, outcome: 'hit', level: found.level };
      this.#counts.staleServed++;
      this.#refresh(key, factory, write, lock);
      return { value: found.value, outcome: 'stale', level: found.level };
    }
    return this.#produce(key, factory, write, lock);
  }

  #refresh(key: string, factory: Factory<T>, write: WriteOptions, lock: boolean): void {
    if (this.#refreshing.has(key)) return;
    this.#refreshing.add(key);
    this.#produce(key, factory, write, lock, BACKGROUND)
      .catch((error: unknown) => this.#report(error))
      .finally(() => this.#refreshing.delete(key));
  }

  /** Runs the factory (under the Redis lease when `lock`) and caches its result. */
  #produce(
    key: string,
    factory: Factory<T>,
    write: WriteOptions,
    lock: boolean,
    context: FactoryContext = FOREGROUND,
  ): Promise<CacheResult<T>> {
    return inSpan('clawperf.cache.load', (span) => {
      span.setAttribute('clawperf.cache.lock', lock);
      return this.#produceIn(key, factory, write, lock, context);
    });
  }

  async #produceIn(
    key: string,
    factory: Factory<T>,
    write: WriteOptions,
    lock: boolean,
    context: FactoryContext,
  ): Promise<CacheResult<T>> {
    let fence = '';
    if (lock && this.#l2 !== undefined) {
      const got = await this.#acquire(key);
      if ('value' in got) return { value: got.value, outcome: 'coalesced', level: undefined };
      fence = got.fence;
    }
    let published = false;
    try {
      const since = this.#recent.seq;
      const version = await this.#version();
      this.#counts.factoryCalls++;
      let value: T;
      try {
        value = await factory(context);
      } catch (error) {
        this.#counts.factoryErrors++;
        throw error;
      }
      if (value !== undefined && write.ttlMs > 0) {
        const data = this.#encode(key, value);
        published = (await this.#write(key, value, data, version, write, since, fence)) === 'stored';
      }
      return { value, outcome: 'miss', level: undefined };
    } finally {
      if (fence !== '') {
        const held = fence;
        await this.#useL2((l2) => l2.unlock(key, held));
        // Nodes waiting on the lease wake on a message about the key; send one if the write did not.
        if (!published) await this.#publish({ keys: [key] });
      }
    }
  }

  /**
   * Takes the key's Redis lease, or waits for its holder's result (woken by the bus message its write
   * sends, or by the lease running out). Gives up waiting after `lockWaitMs` and returns no fence, so the
   * caller runs the factory itself: a lease never blocks a caller for longer than that.
   */
  async #acquire(key: string): Promise<{ fence: string } | { value: T }> {
    const deadline = Date.now() + this.#settings.lockWaitMs;
    for (;;) {
      const fence = `${this.#nodeId}:${++this.#fences}`;
      const woken = this.#waiters.wait(
        key,
        Math.max(0, Math.min(this.#settings.leaseMs, deadline - Date.now())),
      );
      const got = await this.#readL2((l2) => l2.lock(key, fence, this.#settings.leaseMs));
      if (got === DOWN) {
        woken.cancel();
        return { fence: '' };
      }
      if (got) {
        woken.cancel();
        this.#counts.lockAcquired++;
        // The previous holder may have finished between our miss and our lease.
        const found = await this.#lower(key, false, false);
        if (found !== undefined) {
          await this.#useL2((l2) => l2.unlock(key, fence));
          return { value: found.value };
        }
        return { fence };
      }
      this.#counts.lockWaits++;
      await woken.promise;
      if (this.#closed) throw new ClosedError(NAME);
      const found = await this.#lower(key, false, false);
      if (found !== undefined) return { value: found.value };
      if (Date.now() >= deadline) return { fence: '' };
    }
  }

  /**
   * Writes L2 first (versioned), then, if Redis took it and no invalidation of the key or its tags arrived
   * since `since`, L1 and L3; tells other nodes. `'stored'`: Redis took it and a bus message was sent;
   * `'local'`: Redis was unreachable, kept on this node only; `'refused'`: something newer won.
   */
  async #write(
    key: string,
    value: T,
    data: string,
    version: number,
    write: WriteOptions,
    since: number,
    fence: string,
  ): Promise<'stored' | 'local' | 'refused'> {
    const entry: StoredEntry = {
      data,
      version,
      ttlMs: write.ttlMs,
      graceMs: write.graceMs,
      tags: write.tags,
    };
    const accepted = await this.#readL2((l2) =>
      fence === '' ? l2.set(key, entry) : l2.setFenced(key, entry, fence),
    );
    if (accepted === false) {
      this.#counts.refused++;
      this.#l1?.delete(key);
      return 'refused';
    }
    if (!this.#recent.untouched(key, write.tags, since)) {
      this.#counts.refused++;
      return 'refused';
    }
    if (this.#admission !== undefined) {
      this.#counts.diskDeferred++;
      this.#fillL1(key, value, write.tags, write.ttlMs, write.graceMs, { version, since });
      // A disk copy of an earlier value (reused before) must not outlive this write.
      if (this.#l3!.mayHold(key)) await this.#useL3((l3) => l3.delete(key));
    } else {
      if (this.#l1 !== undefined) this.#fillL1(key, value, write.tags, write.ttlMs, write.graceMs);
      await this.#useL3((l3) => l3.set(key, entry));
    }
    if (accepted === DOWN) return 'local';
    await this.#publish({ keys: [key] });
    return 'stored';
  }

  /** Puts a value in L1; with `unsaved` when its disk write waits for a reuse (see {@link UnsavedEntry}). */
  #fillL1(
    key: string,
    value: T,
    tags: readonly string[],
    ttlMs: number,
    graceMs: number,
    unsaved?: Pick<UnsavedEntry, 'version' | 'since'>,
  ): void {
    const freshUntil = this.#clock.now() + ttlMs;
    const entry: MemoryEntry<T> = {
      value,
      tags: tags.length === 0 ? NO_TAGS : tags,
      freshUntil,
      grace: graceMs > 0 ? 1 : 0,
      unsaved:
        unsaved === undefined
          ? undefined
          : { version: unsaved.version, since: unsaved.since, staleUntil: freshUntil + graceMs },
    };
    this.#l1!.set(key, entry, ttlMs + graceMs, sizeOf(value));
  }

  /** Counts a fresh L1 hit (and starts the value's disk write at its first reuse); returns the value. */
  #l1Hit(key: string, entry: MemoryEntry<T>): T {
    this.#counts.l1Hits++;
    if (this.#listenHit) this.#emitSafe('hit', key, 'l1');
    if (entry.unsaved !== undefined) this.#admission!.admit(key, entry);
    return entry.value;
  }

  /** A version for a write starting now: Redis time when there is an L2, else Unix time. */
  async #version(): Promise<number> {
    const l2 = this.#l2;
    if (l2 === undefined) return this.#clock.now() + this.#wallOffset;
    if (!l2.synced && this.#breaker.state === 'closed') await l2.syncTime().catch(() => undefined);
    return l2.now();
  }

  /** Runs an L2 operation whose result is not needed; failures are counted and contained. */
  async #useL2(op: (l2: RedisStore) => Promise<unknown>): Promise<void> {
    await this.#readL2(op);
  }

  async #useL3(op: (l3: DiskStore) => Promise<unknown>): Promise<void> {
    const l3 = this.#l3;
    if (l3 === undefined) return;
    try {
      await op(l3);
      this.#diskOk();
    } catch (error) {
      this.#diskFailed(error);
    }
  }

  /** Publishes on the bus; whether the message went out. Failures are counted and contained. */
  async #publish(message: BusMessage): Promise<boolean> {
    const bus = this.#bus;
    if (bus === undefined || this.#breaker.state === 'open') return false;
    try {
      await bus.publish(message);
      this.#counts.busPublished++;
      return true;
    } catch (error) {
      this.#counts.busErrors++;
      this.#report(error);
      return false;
    }
  }

  #onBusMessage(message: BusMessage): void {
    this.#counts.busReceived++;
    if ('all' in message) {
      this.#forget(2, '');
    } else if ('tag' in message) {
      this.#forget(1, message.tag);
      void this.#useL3((l3) => l3.invalidateTag(message.tag));
    } else {
      for (const key of message.keys) {
        this.#forget(0, key);
        void this.#useL3((l3) => l3.delete(key));
        this.#waiters.wake(key);
      }
    }
    if (this.listenerCount('invalidated') > 0) this.#emitSafe('invalidated', message);
  }

  #onBusReconnected(): void {
    // Messages sent while the subscription was down are lost: nothing in L1 can be trusted any more.
    this.#counts.busReconnects++;
    this.#forget(2, '');
  }

  /**
   * Forgets a key (0), a tag (1) or everything (2) on this node: L1 drops it, reads under way may not put
   * what they found back in L1 (see {@link InvalidationRing.untouched}), and callers from now on do not
   * join a load that began before, which could still answer the old value.
   */
  #forget(kind: InvalidationKind, name: string): void {
    this.#recent.note(kind, name);
    if (kind === 0) {
      this.#l1?.delete(name);
      this.#inflight.delete(name);
      return;
    }
    if (kind === 1) this.#l1?.deleteTag(name);
    else this.#l1?.clear();
    // A load does not know its tags until it has its value: a tag or a clear forgets every load under way.
    this.#inflight.clear();
  }

  #encode(key: string, value: T): string {
    let data: string;
    try {
      data = this.#serializer.serialize(value);
    } catch (error) {
      throw new SerializationError(key, error instanceof Error ? error.message : String(error), {
        cause: error,
      });
    }
    if (typeof data !== 'string') throw new SerializationError(key, 'the serializer did not return a string');
    const max = this.#settings.maxValueBytes;
    const bytes = data.length > max / 3 ? Buffer.byteLength(data) : data.length;
    if (bytes > max) throw new ValueTooLargeError(key, bytes, max);
    return data;
  }

  #countMiss(key: string): void {
    this.#counts.misses++;
    if (this.#listenMiss) this.#emitSafe('miss', key);
  }

  #redisOk(permit: BreakerPermit): void {
    permit.success();
    if (this.#redisDown) this.#redisBack();
  }

  #redisFailed(permit: BreakerPermit, error: unknown): void {
    this.#counts.l2Errors++;
    permit.failure();
    this.#redisLost(error);
  }

  #redisBack(): void {
    this.#breaker.reset();
    if (!this.#redisDown) return;
    this.#redisDown = false;
    this.#emitSafe('recovered', 'redis');
  }

  #redisLost(error: unknown): void {
    if (this.#redisDown) return;
    this.#redisDown = true;
    this.#emitSafe('degraded', 'redis', toStoreError('redis', error));
  }

  #diskOk(): void {
    if (!this.#diskDown) return;
    this.#diskDown = false;
    this.#emitSafe('recovered', 'disk');
  }

  #diskFailed(error: unknown): void {
    this.#counts.l3Errors++;
    if (this.#diskDown) return;
    this.#diskDown = true;
    this.#emitSafe('degraded', 'disk', toStoreError('disk', error));
  }

  #report(error: unknown): void {
    if (this.listenerCount('error') === 0) return;
    this.#emitSafe('error', error instanceof Error ? error : new Error(String(error)));
  }

  #emitSafe<K extends keyof MultiLevelCacheEvents>(event: K, ...args: MultiLevelCacheEvents[K]): void {
    try {
      (this.emit as (e: string, ...a: unknown[]) => boolean)(event, ...args);
    } catch {
      // A listener that throws must not break the cache call that emitted.
    }
  }

  #assertOpen(): void {
    if (this.#closed) throw new ClosedError(NAME);
  }
}

function foundValue<T>(found: Found<T> | undefined): T | undefined {
  return found?.value;
}

function resultValue<T>(result: CacheResult<T>): T {
  return result.value;
}

function asCoalesced<T>(result: CacheResult<T>): CacheResult<T> {
  return { value: result.value, outcome: 'coalesced', level: undefined };
}

/** The error for a key that is not a non-empty string: the one rule of every cache entry point. */
export function invalidKey(key: unknown): InvalidKeyError {
  return new InvalidKeyError(
    key,
    typeof key === 'string' ? 'a key must not be empty' : 'a key must be a string',
  );
}

function toStoreError(store: string, error: unknown): StoreError {
  if (error instanceof StoreError) return error;
  return new StoreError(store, error instanceof Error ? error.message : String(error), { cause: error });
}

function abortable<R>(promise: Promise<R>, signal: AbortSignal): Promise<R> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<R>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}
