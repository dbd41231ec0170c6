/**
 * What a MultiLevelCache counts and how it reports it: the counters it increments as it works, and the
 * flat `stats()` record built from them and from its stores' own gauges.
 *
 * @module
 */
/** What {@link MultiLevelCache.stats} returns: numbers only, one flat level. */
export type MultiLevelCacheStats = {
  l1_hits: number;
  l1_misses: number;
  l2_hits: number;
  l2_misses: number;
  l3_hits: number;
  l3_misses: number;
  hits: number;
  misses: number;
  hit_rate: number;
  l1_backfills: number;
  l2_backfills: number;
  l1_entries: number;
  l1_bytes: number;
  l1_evictions: number;
  l3_entries: number;
  l3_bytes: number;
  l3_evictions: number;
  l3_corrupt: number;
  /** Writes that left the disk for the value's first reuse (`diskAdmission: 'reuse'`). */
  l3_deferred: number;
  /** Values written to disk at their first reuse. */
  l3_admitted: number;
  sets: number;
  deletes: number;
  tag_invalidations: number;
  writes_refused: number;
  factory_calls: number;
  factory_errors: number;
  coalesced: number;
  stale_served: number;
  lock_acquired: number;
  lock_waits: number;
  l2_up: number;
  l2_errors: number;
  l2_skipped: number;
  l3_errors: number;
  bus_published: number;
  bus_received: number;
  bus_reconnects: number;
  bus_errors: number;
  breaker_state: number;
  breaker_opens: number;
};

/** The {@link MultiLevelCacheStats} fields that only grow. */
export const STATS_COUNTERS: readonly (keyof MultiLevelCacheStats)[] = Object.freeze([
  'l1_hits',
  'l1_misses',
  'l2_hits',
  'l2_misses',
  'l3_hits',
  'l3_misses',
  'hits',
  'misses',
  'l1_backfills',
  'l2_backfills',
  'l1_evictions',
  'l3_evictions',
  'l3_corrupt',
  'l3_deferred',
  'l3_admitted',
  'sets',
  'deletes',
  'tag_invalidations',
  'writes_refused',
  'factory_calls',
  'factory_errors',
  'coalesced',
  'stale_served',
  'lock_acquired',
  'lock_waits',
  'l2_errors',
  'l2_skipped',
  'l3_errors',
  'bus_published',
  'bus_received',
  'bus_reconnects',
  'bus_errors',
  'breaker_opens',
]);

/**
 * The counters a MultiLevelCache increments: plain numeric fields of one object whose shape never
 * changes, so an increment costs what it cost as a private field of the cache.
 */
export class CacheCounters {
  l1Hits = 0;
  l1Misses = 0;
  l2Hits = 0;
  l2Misses = 0;
  l3Hits = 0;
  l3Misses = 0;
  misses = 0;
  l1Backfills = 0;
  l2Backfills = 0;
  diskDeferred = 0;
  diskAdmitted = 0;
  sets = 0;
  deletes = 0;
  tagInvalidations = 0;
  refused = 0;
  factoryCalls = 0;
  factoryErrors = 0;
  coalesced = 0;
  staleServed = 0;
  lockAcquired = 0;
  lockWaits = 0;
  l2Errors = 0;
  l2Skipped = 0;
  l3Errors = 0;
  busPublished = 0;
  busReceived = 0;
  busReconnects = 0;
  busErrors = 0;
}

/** What `stats()` reads from a memory or disk store. */
export interface StoreGauges {
  readonly entries: number;
  readonly bytes: number;
  readonly evictions: number;
}

/** What `stats()` reads besides the counters. */
export interface StatsGauges {
  readonly l1: StoreGauges | undefined;
  readonly l3: (StoreGauges & { readonly corrupt: number }) | undefined;
  /** There is an L2 and it is not known to be down. */
  readonly l2Up: boolean;
  readonly breaker: { readonly state: number; readonly opens: number };
}

/** The flat `stats()` record: counters and gauges, numbers only. */
export function cacheStats(c: CacheCounters, { l1, l3, l2Up, breaker }: StatsGauges): MultiLevelCacheStats {
  const hits = c.l1Hits + c.l2Hits + c.l3Hits;
  return {
    l1_hits: c.l1Hits,
    l1_misses: c.l1Misses,
    l2_hits: c.l2Hits,
    l2_misses: c.l2Misses,
    l3_hits: c.l3Hits,
    l3_misses: c.l3Misses,
    hits,
    misses: c.misses,
    hit_rate: hits + c.misses === 0 ? 0 : hits / (hits + c.misses),
    l1_backfills: c.l1Backfills,
    l2_backfills: c.l2Backfills,
    l1_entries: l1?.entries ?? 0,
    l1_bytes: l1?.bytes ?? 0,
    l1_evictions: l1?.evictions ?? 0,
    l3_entries: l3?.entries ?? 0,
    l3_bytes: l3?.bytes ?? 0,
    l3_evictions: l3?.evictions ?? 0,
    l3_corrupt: l3?.corrupt ?? 0,
    l3_deferred: c.diskDeferred,
    l3_admitted: c.diskAdmitted,
    sets: c.sets,
    deletes: c.deletes,
    tag_invalidations: c.tagInvalidations,
    writes_refused: c.refused,
    factory_calls: c.factoryCalls,
    factory_errors: c.factoryErrors,
    coalesced: c.coalesced,
    stale_served: c.staleServed,
    lock_acquired: c.lockAcquired,
    lock_waits: c.lockWaits,
    l2_up: l2Up ? 1 : 0,
    l2_errors: c.l2Errors,
    l2_skipped: c.l2Skipped,
    l3_errors: c.l3Errors,
    bus_published: c.busPublished,
    bus_received: c.busReceived,
    bus_reconnects: c.busReconnects,
    bus_errors: c.busErrors,
    breaker_state: breaker.state,
    breaker_opens: breaker.opens,
  };
}
