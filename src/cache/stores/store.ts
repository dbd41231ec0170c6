/**
 * The interface between {@link MultiLevelCache} and its slower levels. A store holds serialized values with
 * their version, remaining lifetime and tags; it knows nothing of the levels above or below it.
 */

/** One stored entry, as a store hands it over and takes it in. */
export interface StoredEntry {
  /** The serialized value. */
  data: string;
  /**
   * When the value was produced, in Redis-time milliseconds (Unix epoch by the shared clock). Stores that
   * check versions refuse to replace a newer entry with an older one.
   */
  version: number;
  /** Remaining fresh lifetime in ms; 0 or less means stale (only returned while `graceMs` lasts). */
  ttlMs: number;
  /** How long after the fresh lifetime a stale copy may still be served, in ms. */
  graceMs: number;
  /** Tags the entry was set with. */
  tags: readonly string[];
}

/** A level below memory: Redis, disk, or anything with the same few operations. */
export interface CacheStore {
  /** Short name used in stats, events and errors (`'redis'`, `'disk'`). */
  readonly name: string;
  /** The entry, or `undefined` when there is none or it has expired past its grace. */
  get(key: string): Promise<StoredEntry | undefined>;
  /** Several entries in as few round trips as the store allows, in the order of `keys`. */
  getMany(keys: readonly string[]): Promise<(StoredEntry | undefined)[]>;
  /**
   * Stores the entry. Resolves `false` when the store refused it because it holds something newer (a later
   * write, a delete or a tag invalidation after `entry.version`).
   */
  set(key: string, entry: StoredEntry): Promise<boolean>;
  /** Removes the key; a store that checks versions also refuses older writes that arrive later. */
  delete(key: string): Promise<void>;
  /** Removes every entry set with `tag`. */
  invalidateTag(tag: string): Promise<void>;
  /** Removes every entry. */
  clear(): Promise<void>;
  /** Releases what the store owns. Idempotent. */
  close(): Promise<void>;
}
