/**
 * The options of {@link MultiLevelCache}: their types, their defaults, and their validation, once at
 * construction ({@link resolveOptions}) and once per call ({@link writeOptions}, {@link loadOptions}).
 *
 * @module
 */
import type { Clock } from '../internal/clock.ts';
import { systemClock } from '../internal/clock.ts';
import * as check from '../internal/options.ts';
import { DEFAULT_REDIS_COMMAND_TIMEOUT_MS, type RedisInput } from '../internal/redis.ts';
import type { InvalidationBus } from './bus.ts';
import type { Factory, MultiLevelCache } from './multi-level-cache.ts';
import { jsonSerializer, type Serializer } from './serializer.ts';
import { DiskStore, type DiskStoreOptions } from './stores/disk.ts';
import type { MemoryStoreOptions } from './stores/memory.ts';
import { checkNamespace, DEFAULT_NAMESPACE, DEFAULT_TOMBSTONE_MS, RedisStore } from './stores/redis.ts';

/** @default 3600000 (1 hour) */
export const DEFAULT_TTL_MS = 3_600_000;
/** @default 0 (no stale serving) */
export const DEFAULT_STALE_WHILE_REVALIDATE_MS = 0;
/** @default 0 (no jitter) */
export const DEFAULT_TTL_JITTER = 0;
/** @default 4194304 (4 MiB) */
export const DEFAULT_MAX_VALUE_BYTES = 4 * 1024 * 1024;
/** @default 10000 */
export const DEFAULT_LOCK_LEASE_MS = 10_000;
/** @default 10000 */
export const DEFAULT_LOCK_WAIT_MS = 10_000;
/** A Redis command slower than this takes the fallback (memory, disk) instead. @default 100 */
export const DEFAULT_COMMAND_TIMEOUT_MS = DEFAULT_REDIS_COMMAND_TIMEOUT_MS;

export interface MultiLevelCacheOptions {
  /** L1 memory bounds, or `false` for no L1. @default { maxEntries: 10000, maxBytes: 64 MiB } */
  l1?: Omit<MemoryStoreOptions, 'clock'> | false;
  /** L2: an ioredis `Redis` or `Cluster` (not closed by the cache) or a `redis://` URL. Also carries the bus. */
  redis?: RedisInput;
  /** L2 as a ready-made {@link RedisStore} (closed by the cache), instead of `redis`. */
  l2?: RedisStore;
  /**
   * The invalidation bus. @default a {@link RedisBus} on the L2 client when there is an L2, else none;
   * `false` for none
   */
  bus?: InvalidationBus | false;
  /** L3 on disk: options, a ready-made {@link DiskStore} (closed by the cache), or `false`. @default false */
  disk?: Omit<DiskStoreOptions, 'clock'> | DiskStore | false;
  /**
   * When a value is written to disk: `'write'`, with every write; `'reuse'`, the first time it is read
   * from L1 again, so values used once (most of an LLM answer cache) never cost a disk write. A value
   * evicted from L1 before its reuse is not written. Needs an L1; without one every write goes to disk.
   * @default 'write'
   */
  diskAdmission?: 'write' | 'reuse';
  /** Prefix of every Redis key and of the bus channel. @default 'clawperf' */
  namespace?: string;
  /** TTL when a call gives none, ms. @default 3600000 */
  defaultTtlMs?: number;
  /**
   * After an entry's TTL, how long `getOrSet` may still serve it while one refresh runs in the background
   * (and keeps serving it if that refresh fails), ms. `get` never returns stale values. @default 0
   */
  staleWhileRevalidateMs?: number;
  /** Each TTL is shortened by a random part of up to this ratio, so entries set together expire apart. @default 0 */
  ttlJitter?: number;
  /** Largest serialized value accepted, bytes. @default 4194304 */
  maxValueBytes?: number;
  /** How values are turned into strings for Redis and disk. @default {@link jsonSerializer} */
  serializer?: Serializer;
  /** `getOrSet` takes a Redis lease so the factory runs once across nodes. @default false */
  lock?: boolean;
  /** Lease length, ms: longer than a factory call takes. @default 10000 */
  lockLeaseMs?: number;
  /** How long `getOrSet` waits for another node's factory before running its own, ms. @default 10000 */
  lockWaitMs?: number;
  /** Redis command timeout for a client created from a URL, ms. @default 100 */
  commandTimeoutMs?: number;
  /** How long deletes and invalidations are remembered in Redis against slower writes, ms. @default 3600000 */
  tombstoneMs?: number;
  /** Circuit breaker over L2. @default { failureThreshold: 5, cooldownMs: 5000 } */
  breaker?: { failureThreshold?: number; cooldownMs?: number };
  /** This node's id on the bus. @default a random UUID per instance */
  nodeId?: string;
  clock?: Clock;
  /** Random source in [0, 1) for TTL jitter. @default Math.random */
  random?: () => number;
}

export interface SetOptions {
  /** Lifetime, ms; `0` means "do not cache" (and drops what was cached). @default the cache's defaultTtlMs */
  ttlMs?: number;
  /** Tags for {@link MultiLevelCache.invalidateByTag}. */
  tags?: readonly string[];
  /** Overrides the cache's `staleWhileRevalidateMs`. */
  staleWhileRevalidateMs?: number;
}

export interface GetOrSetOptions extends SetOptions {
  /** Overrides the cache's `lock`. */
  lock?: boolean;
  /** Stops this caller's wait (the factory keeps running for the others); rejects with `signal.reason`. */
  signal?: AbortSignal;
}

/** The options of a {@link MultiLevelCache}, checked and with every default filled in. */
export interface CacheSettings {
  readonly clock: Clock;
  readonly defaultTtlMs: number;
  readonly staleMs: number;
  readonly jitter: number;
  readonly maxValueBytes: number;
  readonly lock: boolean;
  readonly leaseMs: number;
  readonly lockWaitMs: number;
  readonly random: () => number;
  readonly serializer: Serializer;
  readonly namespace: string;
  readonly breaker: { readonly failureThreshold?: number; readonly cooldownMs?: number };
  /** L1 bounds, or `undefined` for no L1. */
  readonly l1: Omit<MemoryStoreOptions, 'clock'> | undefined;
  /** A ready-made L2, what to build one from, or `undefined` for no L2. */
  readonly l2: RedisStore | L2Settings | undefined;
  /** A ready-made L3, what to build one from, or `undefined` for no L3. */
  readonly disk: DiskStore | Omit<DiskStoreOptions, 'clock'> | undefined;
  readonly diskAdmission: 'write' | 'reuse';
}

/** What the cache builds its own {@link RedisStore} from. */
export interface L2Settings {
  readonly redis: RedisInput;
  readonly commandTimeoutMs: number;
  readonly tombstoneMs: number;
}

/** A write's lifetime and tags, validated, with the cache's defaults and jitter applied. */
export interface WriteOptions {
  ttlMs: number;
  graceMs: number;
  tags: readonly string[];
}

/** A getOrSet call's write options and whether it takes the Redis lease. */
export interface LoadOptions {
  write: WriteOptions;
  lock: boolean;
}

export const NO_TAGS: readonly string[] = Object.freeze([]);

/**
 * Checks every constructor option, throwing a `TypeError` that names the option, what it may be and the
 * value it got, and fills in the defaults.
 */
export function resolveOptions(options: MultiLevelCacheOptions): CacheSettings {
  check.object('options', options);
  const clock =
    options.clock === undefined ? systemClock : check.clock<Clock>('options.clock', options.clock);
  const defaultTtlMs = check.integer('options.defaultTtlMs', options.defaultTtlMs ?? DEFAULT_TTL_MS, 1);
  const staleMs = check.integer(
    'options.staleWhileRevalidateMs',
    options.staleWhileRevalidateMs ?? DEFAULT_STALE_WHILE_REVALIDATE_MS,
  );
  const jitter = check.ratio('options.ttlJitter', options.ttlJitter ?? DEFAULT_TTL_JITTER);
  const maxValueBytes = check.integer(
    'options.maxValueBytes',
    options.maxValueBytes ?? DEFAULT_MAX_VALUE_BYTES,
    1,
  );
  const lock = check.boolean('options.lock', options.lock ?? false);
  const leaseMs = check.integer('options.lockLeaseMs', options.lockLeaseMs ?? DEFAULT_LOCK_LEASE_MS, 1);
  const lockWaitMs = check.integer('options.lockWaitMs', options.lockWaitMs ?? DEFAULT_LOCK_WAIT_MS);
  const random =
    options.random === undefined ? Math.random : check.fn<() => number>('options.random', options.random);
  const serializer = options.serializer ?? jsonSerializer;
  if (typeof serializer?.serialize !== 'function' || typeof serializer.deserialize !== 'function') {
    check.invalid('options.serializer', 'an object with serialize() and deserialize() methods', serializer);
  }
  const namespace = checkNamespace('options.namespace', options.namespace ?? DEFAULT_NAMESPACE);
  const breaker = check.object<NonNullable<MultiLevelCacheOptions['breaker']>>(
    'options.breaker',
    options.breaker,
  );
  const l1 = options.l1 === false ? undefined : check.object<MemoryStoreOptions>('options.l1', options.l1);

  if (options.l2 !== undefined && options.redis !== undefined) {
    // Named by options.l2, not options.redis: a URL's value can carry a password.
    check.invalid('options.l2', 'left out when options.redis is given', options.l2);
  }
  let l2: RedisStore | L2Settings | undefined;
  if (options.l2 !== undefined) {
    l2 = check.instance('options.l2', options.l2, RedisStore, 'a RedisStore');
  } else if (options.redis !== undefined) {
    l2 = {
      redis: options.redis,
      commandTimeoutMs: check.integer(
        'options.commandTimeoutMs',
        options.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS,
        1,
      ),
      tombstoneMs: check.integer('options.tombstoneMs', options.tombstoneMs ?? DEFAULT_TOMBSTONE_MS, 1),
    };
  }

  const diskOption = options.disk ?? false;
  const disk =
    diskOption === false
      ? undefined
      : diskOption instanceof DiskStore
        ? diskOption
        : check.object<DiskStoreOptions>('options.disk', diskOption);
  const diskAdmission = check.oneOf('options.diskAdmission', options.diskAdmission ?? 'write', [
    'write',
    'reuse',
  ] as const);

  return {
    clock,
    defaultTtlMs,
    staleMs,
    jitter,
    maxValueBytes,
    lock,
    leaseMs,
    lockWaitMs,
    random,
    serializer,
    namespace,
    breaker,
    l1,
    l2,
    disk,
    diskAdmission,
  };
}

/** A write call's options, checked, falling back to the cache's; the TTL is jittered here. */
export function writeOptions(options: SetOptions, settings: CacheSettings): WriteOptions {
  check.object('options', options);
  let ttlMs = check.integer('options.ttlMs', options.ttlMs ?? settings.defaultTtlMs);
  const graceMs = check.integer(
    'options.staleWhileRevalidateMs',
    options.staleWhileRevalidateMs ?? settings.staleMs,
  );
  let tags = NO_TAGS;
  if (options.tags !== undefined) {
    if (!Array.isArray(options.tags)) check.invalid('options.tags', 'an array of strings', options.tags);
    for (let i = 0; i < options.tags.length; i++) check.string(`options.tags[${i}]`, options.tags[i]);
    if (options.tags.length > 0) tags = [...new Set(options.tags)];
  }
  if (settings.jitter > 0 && ttlMs > 0)
    ttlMs = Math.max(1, ttlMs - Math.floor(ttlMs * settings.jitter * settings.random()));
  return { ttlMs, graceMs, tags };
}

/** A getOrSet call's write options and lock, checked. */
export function loadOptions<T>(
  factory: Factory<T>,
  options: GetOrSetOptions,
  settings: CacheSettings,
): LoadOptions {
  check.fn('factory', factory);
  const write = writeOptions(options, settings);
  const lock = options.lock === undefined ? settings.lock : check.boolean('options.lock', options.lock);
  return { write, lock };
}
