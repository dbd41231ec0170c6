/**
 * `diskAdmission: 'reuse'`: a value goes to disk the first time it is read from L1 again, not when it is
 * written, so values used once never cost a disk write.
 *
 * @module
 */
import type { Clock } from '../internal/clock.ts';
import type { CacheCounters } from './cache-stats.ts';
import type { InvalidationRing } from './invalidation-ring.ts';
import type { MemoryEntry } from './stores/memory.ts';
import type { StoredEntry } from './stores/store.ts';

/** What {@link DiskAdmission} is given by the cache it serves. */
export interface DiskAdmissionParts<T> {
  readonly clock: Clock;
  readonly recent: InvalidationRing;
  readonly counts: CacheCounters;
  /** Serializes a value as the cache does; throws when it cannot. */
  readonly encode: (key: string, value: T) => string;
  /** Writes an entry to L3; failures are the cache's to count, never thrown. */
  readonly save: (key: string, entry: StoredEntry) => Promise<void>;
}

/** Writes L1 values to disk at their first reuse and remembers the writes under way for `close()`. */
export class DiskAdmission<T> {
  readonly #parts: DiskAdmissionParts<T>;
  readonly #writing = new Set<Promise<void>>();
  #closed = false;

  constructor(parts: DiskAdmissionParts<T>) {
    this.#parts = parts;
  }

  /**
   * Writes an L1 value to disk in the background, with its remaining lifetime, unless it was invalidated
   * since it was written. Called once per entry: it clears `entry.unsaved`.
   */
  admit(key: string, entry: MemoryEntry<T>): void {
    const unsaved = entry.unsaved!;
    entry.unsaved = undefined;
    if (this.#closed) return;
    const parts = this.#parts;
    if (!parts.recent.untouched(key, entry.tags, unsaved.since)) return;
    const ttlMs = entry.freshUntil - parts.clock.now();
    if (ttlMs <= 0) return;
    let data: string;
    try {
      data = parts.encode(key, entry.value);
    } catch {
      return;
    }
    parts.counts.diskAdmitted++;
    const writing = parts.save(key, {
      data,
      version: unsaved.version,
      ttlMs,
      graceMs: Math.max(0, unsaved.staleUntil - entry.freshUntil),
      tags: entry.tags,
    });
    this.#writing.add(writing);
    void writing.finally(() => this.#writing.delete(writing));
  }

  /** Admits nothing more; resolves when the disk writes already started have ended. */
  close(): Promise<void> {
    this.#closed = true;
    return Promise.all(this.#writing).then(() => undefined);
  }
}
