/**
 * `clawperf/cache`: a multi-level cache (memory, Redis, disk) that stays consistent across nodes and keeps
 * serving through Redis outages, with the stores, bus and serializer it is built from.
 *
 * @module
 */

export {
  type BusListener,
  type BusMessage,
  type InvalidationBus,
  RedisBus,
  type RedisBusOptions,
} from './bus.ts';
export {
  CacheConsistencyManager,
  type CacheConsistencyManagerEvents,
  type CacheConsistencyManagerOptions,
  type CacheConsistencyStats,
  DEFAULT_SAMPLE_RATE,
  type ReadRepairOptions,
} from './consistency.ts';
export {
  type CacheLevel,
  type CacheOutcome,
  type CacheResult,
  DEFAULT_COMMAND_TIMEOUT_MS,
  DEFAULT_LOCK_LEASE_MS,
  DEFAULT_LOCK_WAIT_MS,
  DEFAULT_MAX_VALUE_BYTES,
  DEFAULT_STALE_WHILE_REVALIDATE_MS,
  DEFAULT_TTL_JITTER,
  DEFAULT_TTL_MS,
  type Factory,
  type FactoryContext,
  type GetOrSetOptions,
  MultiLevelCache,
  type MultiLevelCacheEvents,
  type MultiLevelCacheOptions,
  type MultiLevelCacheStats,
  type ReadStamp,
  type SetOptions,
} from './multi-level-cache.ts';
export { jsonSerializer, type Serializer } from './serializer.ts';
export {
  changeAwarePolicy,
  DEFAULT_HIGH_HIT_RATE,
  DEFAULT_HIGH_TTL_MS,
  DEFAULT_INITIAL_TTL_MS,
  DEFAULT_LOW_HIT_RATE,
  DEFAULT_LOW_TTL_MS,
  DEFAULT_MAX_KEYS,
  DEFAULT_MAX_STALE_CHANCE,
  DEFAULT_MAX_TTL_MS,
  DEFAULT_MID_TTL_MS,
  DEFAULT_MIN_TTL_MS,
  DEFAULT_PRELOAD_CONCURRENCY,
  DEFAULT_PRIOR_CHANGE_INTERVAL_MS,
  DEFAULT_PRIOR_WEIGHT,
  DEFAULT_STALE_READ_COST,
  hitRatePolicy,
  type PreloadOptions,
  type PreloadResult,
  SmartCache,
  type SmartCacheOptions,
  type SmartCacheStats,
  type TtlContext,
  type TtlPolicy,
  type TtlPolicyName,
} from './smart-cache.ts';
export {
  DEFAULT_DISK_MAX_BYTES,
  DEFAULT_DISK_MAX_ENTRIES,
  DiskStore,
  type DiskStoreOptions,
} from './stores/disk.ts';
export {
  DEFAULT_L1_MAX_BYTES,
  DEFAULT_L1_MAX_ENTRIES,
  L1_ENTRY_OVERHEAD_BYTES,
  type MemoryEntry,
  MemoryStore,
  type MemoryStoreOptions,
  sizeOf,
} from './stores/memory.ts';
export {
  DEFAULT_NAMESPACE,
  DEFAULT_TOMBSTONE_MS,
  RedisStore,
  type RedisStoreOptions,
} from './stores/redis.ts';
export type { CacheStore, StoredEntry } from './stores/store.ts';
