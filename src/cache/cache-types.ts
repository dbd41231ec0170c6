/**
 * The shapes of MultiLevelCache's public surface besides its options: what a factory is given, the stamp
 * of a conditional write, where a hit came from and how a value was had, and the events the cache emits.
 *
 * @module
 */
import type { StoreError } from '../errors.ts';
import type { BusMessage } from './bus.ts';
import type { MultiLevelCache } from './multi-level-cache.ts';

/** What a `getOrSet` factory is told about the call it serves. */
export interface FactoryContext {
  /**
   * `true` when the factory refreshes an entry that was just served stale (inside its
   * `staleWhileRevalidateMs` window): no caller waits for this result.
   */
  readonly background: boolean;
}

/** Produces the value for a key on a miss; see {@link MultiLevelCache.getOrSet}. */
export type Factory<T> = (context: FactoryContext) => Promise<T> | T;

/**
 * Taken by {@link MultiLevelCache.stamp} before a value is read from its source: a write carrying it is
 * refused if the key was written, deleted or invalidated after it was taken.
 */
export interface ReadStamp {
  /** Redis time (ms) when the stamp was taken, never ahead of Redis's own clock. */
  readonly version: number;
  /** This instance's invalidation sequence number at that moment. */
  readonly seq: number;
}

/** Where a hit was served from. */
export type CacheLevel = 'l1' | 'l2' | 'l3';

export interface MultiLevelCacheEvents {
  hit: [key: string, level: CacheLevel];
  miss: [key: string];
  /** A store failed; emitted once per outage, with the first error. */
  degraded: [store: 'redis' | 'disk', error: StoreError];
  /** The store answered again after an outage. */
  recovered: [store: 'redis' | 'disk'];
  /** Anything else that was contained: a failed background refresh, a bus publish, a corrupt value. */
  error: [error: Error];
  /**
   * A message from another node (a write, a delete, a tag invalidation, a clear) reached this node and was
   * applied: from now on this node serves the value it replaced from no level.
   */
  invalidated: [message: BusMessage];
}

/** What {@link MultiLevelCache.getOrSetWithOutcome} did to answer. */
export type CacheOutcome = 'hit' | 'stale' | 'miss' | 'coalesced';

/** A value and how {@link MultiLevelCache.getOrSetWithOutcome} came by it. */
export interface CacheResult<T> {
  value: T;
  /**
   * `'hit'`: a fresh value from `level`. `'stale'`: an expired value inside its stale window, from `level`,
   * while one refresh runs in the background. `'miss'`: this call ran the factory. `'coalesced'`: it waited
   * for another caller's factory (in this process, or on another node with `lock`).
   */
  outcome: CacheOutcome;
  /** Where a hit or stale value was found; `undefined` for a miss or a coalesced wait. */
  level: CacheLevel | undefined;
}
