import { LRUCache } from 'lru-cache';
import { type Clock, lruTime, systemClock } from '../../internal/clock.ts';
import * as check from '../../internal/options.ts';

/** @default 10000 */
export const DEFAULT_L1_MAX_ENTRIES = 10_000;
/** @default 67108864 (64 MiB) */
export const DEFAULT_L1_MAX_BYTES = 64 * 1024 * 1024;
/** Bytes counted for one entry besides its key and value: the lru-cache slots and the entry record. */
export const L1_ENTRY_OVERHEAD_BYTES = 160;

/** A value held in memory, with what the cache needs to serve and invalidate it. */
export interface MemoryEntry<T> {
  readonly value: T;
  readonly tags: readonly string[];
  /** Clock time until which (inclusive, as the store's TTLs) the value is fresh. */
  readonly freshUntil: number;
  /** Whether a stale window follows `freshUntil` (0 = no, so a hit needs no clock read). */
  readonly grace: number;
  /**
   * Set while the value waits to be written to disk on its first reuse (a `MultiLevelCache` with
   * `diskAdmission: 'reuse'`): what that write needs besides the value. Cleared when the write is started.
   */
  unsaved: UnsavedEntry | undefined;
}

/** What a value held only in memory needs to be written to disk later. */
export interface UnsavedEntry {
  /** The write's version. */
  readonly version: number;
  /** The cache's write sequence when the value was written (to tell whether it was invalidated since). */
  readonly since: number;
  /** Clock time at which the stale window after `freshUntil` ends. */
  readonly staleUntil: number;
}

export interface MemoryStoreOptions {
  /** Most entries held. @default 10000 */
  maxEntries?: number;
  /** Most bytes held, counted by {@link sizeOf} over key and value. @default 67108864 (64 MiB) */
  maxBytes?: number;
  clock?: Clock;
}

/**
 * L1: a true LRU (a read refreshes recency) on `lru-cache`, bounded by entries and by bytes, with a TTL per
 * entry. Values are held as they are, not serialized.
 */
export class MemoryStore<T> {
  readonly #lru: LRUCache<string, MemoryEntry<T>>;
  readonly #maxBytes: number;
  #evictions = 0;

  /**
   * @param path How messages name the options object (`options.l1` when a `MultiLevelCache` makes the
   *   store). @internal
   * @throws {TypeError} naming the option, its allowed range and the value, when an option is invalid.
   */
  constructor(options: MemoryStoreOptions = {}, path = 'options') {
    check.object(path, options);
    const maxEntries = check.integer(`${path}.maxEntries`, options.maxEntries ?? DEFAULT_L1_MAX_ENTRIES, 1);
    this.#maxBytes = check.integer(`${path}.maxBytes`, options.maxBytes ?? DEFAULT_L1_MAX_BYTES, 1);
    const clock = options.clock === undefined ? systemClock : check.clock(`${path}.clock`, options.clock);
    this.#lru = new LRUCache<string, MemoryEntry<T>>({
      max: maxEntries,
      maxSize: this.#maxBytes,
      ...lruTime(clock),
      dispose: (_value, _key, reason) => {
        if (reason === 'evict') this.#evictions++;
      },
    });
  }

  /** The entry if present and within its TTL (fresh, or stale inside its grace window). Refreshes recency. */
  get(key: string): MemoryEntry<T> | undefined {
    return this.#lru.get(key);
  }

  /**
   * Holds `entry` for `ttlMs` (its fresh time plus any grace). Returns false when the entry alone is larger
   * than `maxBytes` (it is then not held, and an older copy of the key is dropped).
   */
  set(key: string, entry: MemoryEntry<T>, ttlMs: number, bytes: number): boolean {
    const size = bytes + key.length + L1_ENTRY_OVERHEAD_BYTES;
    if (size > this.#maxBytes || ttlMs <= 0) {
      this.#lru.delete(key);
      return false;
    }
    this.#lru.set(key, entry, { ttl: Math.ceil(ttlMs), size });
    return true;
  }

  delete(key: string): void {
    this.#lru.delete(key);
  }

  /** Drops every entry carrying `tag`. */
  deleteTag(tag: string): void {
    const doomed: string[] = [];
    for (const [key, entry] of this.#lru.entries()) if (entry.tags.includes(tag)) doomed.push(key);
    for (const key of doomed) this.#lru.delete(key);
  }

  clear(): void {
    this.#lru.clear();
  }

  get entries(): number {
    return this.#lru.size;
  }

  get bytes(): number {
    return this.#lru.calculatedSize;
  }

  get evictions(): number {
    return this.#evictions;
  }
}

const NON_LATIN1 = /[\u0100-\uffff]/;

/**
 * Bytes a value holds in the V8 heap, estimated by walking it: strings at 1 or 2 bytes a character (as V8
 * stores them), buffers at their length, objects, arrays, maps and sets with their slots. Shared objects
 * count once.
 */
export function sizeOf(value: unknown): number {
  const seen = new Set<object>();
  const walk = (v: unknown): number => {
    switch (typeof v) {
      case 'string':
        return 16 + (v.length > 0 && NON_LATIN1.test(v) ? v.length * 2 : v.length);
      case 'number':
      case 'boolean':
      case 'undefined':
        return 8;
      case 'bigint':
        return 16 + Math.ceil(v.toString(16).length / 2);
      case 'object': {
        if (v === null) return 8;
        if (seen.has(v)) return 8;
        seen.add(v);
        if (ArrayBuffer.isView(v)) return 96 + v.byteLength;
        if (v instanceof Date) return 32;
        if (Array.isArray(v)) {
          let n = 16 + 8 * v.length;
          for (const item of v) n += walk(item);
          return n;
        }
        if (v instanceof Map) {
          let n = 32 + 24 * v.size;
          for (const [k, item] of v) n += walk(k) + walk(item);
          return n;
        }
        if (v instanceof Set) {
          let n = 32 + 16 * v.size;
          for (const item of v) n += walk(item);
          return n;
        }
        let n = 24;
        for (const key of Object.keys(v)) n += 8 + walk(key) + walk((v as Record<string, unknown>)[key]);
        return n;
      }
      default:
        return 16;
    }
  };
  return walk(value);
}
