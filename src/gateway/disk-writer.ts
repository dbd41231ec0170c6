/**
 * The gateway's disk level: clawperf/cache's `DiskStore` with its writes taken off the request path.
 *
 * @module
 */
import { DiskStore, type DiskStoreOptions, type StoredEntry } from '../cache/index.ts';
import * as check from '../internal/options.ts';

/** Disk writes waiting at most; beyond it the oldest waiting write is dropped. @default 1000 */
export const DEFAULT_DISK_WRITE_QUEUE = 1000;

/** Options of {@link WriteBehindDiskStore}. */
export interface WriteBehindDiskStoreOptions extends DiskStoreOptions {
  /** Disk writes waiting at most; beyond it the oldest waiting write is dropped. @default 1000 */
  maxPending?: number;
}

interface Pending {
  entry: StoredEntry;
  at: number;
}

/**
 * A `DiskStore` whose `set` answers at once and leaves the write to one background writer: writes of the same
 * key while waiting are coalesced (only the last is written), at most one `cacache` write is in flight, and
 * when more than `maxPending` writes wait the oldest is dropped (its value stays in memory and Redis). A
 * write that fails is counted and dropped; the disk is a cache. Reads see waiting writes; deletes, tag
 * invalidations and `clear` drop them, and the disk store waits for the write in flight (a delete only
 * when that write is of its key), so nothing removed comes back.
 */
export class WriteBehindDiskStore extends DiskStore {
  readonly statsCounters: readonly string[] = ['written', 'coalesced', 'dropped', 'failed'];
  readonly #pending = new Map<string, Pending>();
  readonly #maxPending: number;
  #draining: Promise<void> | undefined;
  #closed = false;
  #written = 0;
  #coalesced = 0;
  #dropped = 0;
  #failed = 0;

  constructor(options: WriteBehindDiskStoreOptions) {
    const { maxPending, ...disk } = options;
    super(disk);
    this.#maxPending = check.integer('maxPending', maxPending ?? DEFAULT_DISK_WRITE_QUEUE, 1);
  }

  override async get(key: string): Promise<StoredEntry | undefined> {
    const pending = this.#pending.get(key);
    if (pending !== undefined) return aged(pending);
    return super.get(key);
  }

  override getMany(keys: readonly string[]): Promise<(StoredEntry | undefined)[]> {
    return Promise.all(keys.map((k) => this.get(k)));
  }

  override async set(key: string, entry: StoredEntry): Promise<boolean> {
    if (this.#closed) return super.set(key, entry);
    if (this.#pending.delete(key)) this.#coalesced++;
    this.#pending.set(key, { entry, at: performance.now() });
    if (this.#pending.size > this.#maxPending) {
      this.#pending.delete(this.#pending.keys().next().value as string);
      this.#dropped++;
    }
    this.#draining ??= this.#drain();
    return true;
  }

  override mayHold(key: string): boolean {
    return this.#pending.has(key) || super.mayHold(key);
  }

  override async delete(key: string): Promise<void> {
    this.#pending.delete(key);
    await super.delete(key); // waits for the write of this key in flight, if any
  }

  override async invalidateTag(tag: string): Promise<void> {
    for (const [key, pending] of this.#pending)
      if (pending.entry.tags.includes(tag)) this.#pending.delete(key);
    await super.invalidateTag(tag); // waits for the write in flight, if any
  }

  override async clear(): Promise<void> {
    this.#pending.clear();
    await super.clear(); // waits for the write in flight, if any
  }

  /** Writes what waits, then closes. Idempotent. */
  override async close(): Promise<void> {
    this.#closed = true;
    await this.#draining;
    await super.close();
  }

  stats(): Record<string, number> {
    return {
      pending: this.#pending.size,
      written: this.#written,
      coalesced: this.#coalesced,
      dropped: this.#dropped,
      failed: this.#failed,
      entries: this.entries,
      bytes: this.bytes,
    };
  }

  async #drain(): Promise<void> {
    // Let the answer that produced the value go out before the disk work starts.
    await new Promise((resolve) => setImmediate(resolve));
    for (;;) {
      const next = this.#pending.entries().next();
      if (next.done === true) break;
      const [key, pending] = next.value;
      this.#pending.delete(key);
      await super.set(key, aged(pending)).then(
        () => {
          this.#written++;
        },
        () => {
          this.#failed++;
        },
      );
    }
    this.#draining = undefined;
  }
}

/** The entry as it stands now: its fresh lifetime shortened by the time it waited. */
function aged(pending: Pending): StoredEntry {
  const waited = performance.now() - pending.at;
  return { ...pending.entry, ttlMs: pending.entry.ttlMs - waited };
}
