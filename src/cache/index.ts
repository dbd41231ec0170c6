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
  type CacheLevel,
  DEFAULT_COMMAND_TIMEOUT_MS,
  DEFAULT_LOCK_LEASE_MS,
  DEFAULT_LOCK_WAIT_MS,
  DEFAULT_MAX_VALUE_BYTES,
  DEFAULT_STALE_WHILE_REVALIDATE_MS,
  DEFAULT_TTL_JITTER,
  DEFAULT_TTL_MS,
  type GetOrSetOptions,
  MultiLevelCache,
  type MultiLevelCacheEvents,
  type MultiLevelCacheOptions,
  type MultiLevelCacheStats,
  type SetOptions,
} from './multi-level-cache.ts';
export { jsonSerializer, type Serializer } from './serializer.ts';
export { DEFAULT_DISK_MAX_BYTES, DiskStore, type DiskStoreOptions } from './stores/disk.ts';
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
