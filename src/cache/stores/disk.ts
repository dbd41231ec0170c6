import cacache from 'cacache';
import { type Clock, systemClock } from '../../internal/clock.ts';
import * as check from '../../internal/options.ts';
import type { CacheStore, StoredEntry } from './store.ts';

/** @default 268435456 (256 MiB) */
export const DEFAULT_DISK_MAX_BYTES = 256 * 1024 * 1024;
/**
 * The in-memory index holds one record per entry on disk, so the entry count bounds this process's heap
 * as `maxBytes` bounds the disk: many small values (embeddings, short answers) would otherwise fill 256 MiB
 * of disk and a heap-resident index of the same number of records.
 * @default 100000
 */
export const DEFAULT_DISK_MAX_ENTRIES = 100_000;

export interface DiskStoreOptions {
  /** Directory of the cache; created when missing. One process per directory. */
  dir: string;
  /** Most bytes of values kept; the least recently used entries go first. @default 268435456 (256 MiB) */
  maxBytes?: number;
  /** Most entries kept (each costs a record in memory); the least recently used go first. @default 100000 */
  maxEntries?: number;
  clock?: Clock;
}

/** What is written beside each value in cacache's index. Times are Unix ms. */
interface Metadata {
  v: number;
  f: number;
  s: number;
  t: string[];
}

interface Held extends Metadata {
  integrity: string;
  size: number;
}

/** `rm.entry` with its options, which the published types lack: `removeFully` also drops the index lines. */
const removeEntry = cacache.rm.entry as (
  dir: string,
  key: string,
  options: { removeFully: boolean },
) => Promise<unknown>;

function isMetadata(m: unknown): m is Metadata {
  if (m === null || typeof m !== 'object') return false;
  const x = m as Record<string, unknown>;
  return typeof x.v === 'number' && typeof x.f === 'number' && typeof x.s === 'number' && Array.isArray(x.t);
}

/**
 * L3 on disk with `cacache` (content-addressed, integrity-checked, atomic writes): survives a restart,
 * bounded in bytes with least-recently-used eviction, TTL honoured across restarts (times are kept as Unix
 * ms). A corrupt or truncated file reads as a miss and is removed. An index of what is held lives in memory
 * (rebuilt from disk at start), so a miss costs no disk access.
 */
export class DiskStore implements CacheStore {
  readonly name = 'disk';
  readonly #dir: string;
  readonly #maxBytes: number;
  readonly #maxEntries: number;
  readonly #clock: Clock;
  readonly #wallOffset: number;
  /** Insertion order is recency order: a read moves its key to the end. */
  readonly #index = new Map<string, Held>();
  /** Keys per content hash: identical values share one file, removed with its last key. */
  readonly #refs = new Map<string, number>();
  #loaded: Promise<void> | undefined;
  /** The index was read from disk: a key it lacks is not held (unless a write of it is under way). */
  #indexed = false;
  /** Writes under way, per key: a delete or invalidation waits for them, so none lands after it. */
  readonly #writing = new Map<string, Promise<unknown>[]>();
  #bytes = 0;
  #evictions = 0;
  #corrupt = 0;

  /**
   * @param path How messages name the options object (`options.disk` when a `MultiLevelCache` makes
   *   the store). @internal
   * @throws {TypeError} naming the option, its allowed range and the value, when an option is invalid.
   */
  constructor(options: DiskStoreOptions, path = 'options') {
    check.object(path, options);
    if (typeof options.dir !== 'string' || options.dir.length === 0) {
      check.invalid(`${path}.dir`, 'a non-empty directory path', options.dir);
    }
    this.#dir = options.dir;
    this.#maxBytes = check.integer(`${path}.maxBytes`, options.maxBytes ?? DEFAULT_DISK_MAX_BYTES, 1);
    this.#maxEntries = check.integer(`${path}.maxEntries`, options.maxEntries ?? DEFAULT_DISK_MAX_ENTRIES, 1);
    this.#clock = options.clock === undefined ? systemClock : check.clock(`${path}.clock`, options.clock);
    // Unix time derived from the (possibly injected) clock, so TTLs follow it and still hold across restarts.
    this.#wallOffset = performance.timeOrigin;
  }

  /** Bytes of values held. */
  get bytes(): number {
    return this.#bytes;
  }

  get entries(): number {
    return this.#index.size;
  }

  /** Entries removed to stay within `maxBytes` and `maxEntries`. */
  get evictions(): number {
    return this.#evictions;
  }

  /** Entries found corrupt or truncated (and removed). */
  get corrupt(): number {
    return this.#corrupt;
  }

  async get(key: string): Promise<StoredEntry | undefined> {
    await this.#load();
    const held = this.#index.get(key);
    if (held === undefined) return undefined;
    const now = this.#now();
    if (held.s <= now) {
      await this.#remove(key, held);
      return undefined;
    }
    let data: Buffer;
    try {
      ({ data } = await cacache.get(this.#dir, key, { integrity: held.integrity }));
    } catch {
      this.#corrupt++;
      await this.#remove(key, held);
      return undefined;
    }
    if (this.#index.get(key) !== held) return undefined;
    this.#index.delete(key);
    this.#index.set(key, held);
    return {
      data: data.toString('utf8'),
      version: held.v,
      ttlMs: held.f - now,
      graceMs: held.s - Math.max(held.f, now),
      tags: held.t,
    };
  }

  getMany(keys: readonly string[]): Promise<(StoredEntry | undefined)[]> {
    return Promise.all(keys.map((k) => this.get(k)));
  }

  /**
   * Whether `key` may be held, answered without waiting: `false` only when the index is loaded, has no
   * entry for the key and no write of it is under way (so a delete would have nothing to do).
   */
  mayHold(key: string): boolean {
    return !this.#indexed || this.#index.has(key) || this.#writing.has(key);
  }

  async set(key: string, entry: StoredEntry): Promise<boolean> {
    const write = this.#set(key, entry);
    let writes = this.#writing.get(key);
    if (writes === undefined) {
      writes = [];
      this.#writing.set(key, writes);
    }
    writes.push(write);
    try {
      return await write;
    } finally {
      writes.splice(writes.indexOf(write), 1);
      if (writes.length === 0 && this.#writing.get(key) === writes) this.#writing.delete(key);
    }
  }

  /** Waits for the writes under way of `key`, or of every key. */
  async #settled(key?: string): Promise<void> {
    const writes =
      key === undefined ? [...this.#writing.values()].flat() : [...(this.#writing.get(key) ?? [])];
    if (writes.length > 0) await Promise.allSettled(writes);
  }

  async #set(key: string, entry: StoredEntry): Promise<boolean> {
    await this.#load();
    const now = this.#now();
    const data = Buffer.from(entry.data, 'utf8');
    if (data.length > this.#maxBytes) {
      await this.delete(key);
      return false;
    }
    const metadata: Metadata = {
      v: entry.version,
      f: now + entry.ttlMs,
      s: now + entry.ttlMs + entry.graceMs,
      t: [...entry.tags],
    };
    const integrity = String(await cacache.put(this.#dir, key, data, { metadata }));
    const previous = this.#index.get(key);
    if (previous !== undefined) this.#forget(key, previous);
    this.#index.set(key, { ...metadata, integrity, size: data.length });
    this.#refs.set(integrity, (this.#refs.get(integrity) ?? 0) + 1);
    this.#bytes += data.length;
    if (previous !== undefined && previous.integrity !== integrity)
      await this.#dropContent(previous.integrity);
    await this.#evict();
    return true;
  }

  /** Removes least recently used entries until both bounds hold. */
  async #evict(): Promise<void> {
    while (this.#bytes > this.#maxBytes || this.#index.size > this.#maxEntries) {
      const [oldest, held] = this.#index.entries().next().value as [string, Held];
      this.#evictions++;
      await this.#remove(oldest, held);
    }
  }

  async delete(key: string): Promise<void> {
    await this.#settled(key);
    await this.#load();
    const held = this.#index.get(key);
    if (held !== undefined) await this.#remove(key, held);
  }

  async invalidateTag(tag: string): Promise<void> {
    await this.#settled();
    await this.#load();
    const doomed: [string, Held][] = [];
    for (const [key, held] of this.#index) if (held.t.includes(tag)) doomed.push([key, held]);
    for (const [key, held] of doomed) await this.#remove(key, held);
  }

  async clear(): Promise<void> {
    await this.#settled();
    await this.#load();
    this.#index.clear();
    this.#refs.clear();
    this.#bytes = 0;
    await cacache.rm.all(this.#dir);
  }

  async close(): Promise<void> {
    await this.#loaded?.catch(() => undefined);
  }

  #now(): number {
    return this.#clock.now() + this.#wallOffset;
  }

  #load(): Promise<void> {
    this.#loaded ??= (async () => {
      const listed = await cacache.ls(this.#dir).catch(() => ({}) as cacache.ls.Cache);
      const now = this.#now();
      const found = Object.values(listed).sort((a, b) => a.time - b.time);
      for (const entry of found) {
        if (!isMetadata(entry.metadata) || entry.metadata.s <= now) {
          await cacache.rm.entry(this.#dir, entry.key).catch(() => undefined);
          continue;
        }
        const size = entry.size ?? 0;
        this.#index.set(entry.key, { ...entry.metadata, integrity: entry.integrity, size });
        this.#refs.set(entry.integrity, (this.#refs.get(entry.integrity) ?? 0) + 1);
        this.#bytes += size;
      }
      await this.#evict();
      await cacache.verify(this.#dir).catch(() => undefined);
      this.#indexed = true;
    })();
    return this.#loaded;
  }

  #forget(key: string, held: Held): void {
    this.#index.delete(key);
    this.#bytes -= held.size;
    const refs = (this.#refs.get(held.integrity) ?? 1) - 1;
    if (refs > 0) this.#refs.set(held.integrity, refs);
    else this.#refs.delete(held.integrity);
  }

  async #remove(key: string, held: Held): Promise<void> {
    if (this.#index.get(key) !== held) return;
    this.#forget(key, held);
    await removeEntry(this.#dir, key, { removeFully: true }).catch(() => undefined);
    await this.#dropContent(held.integrity);
  }

  async #dropContent(integrity: string): Promise<void> {
    if (!this.#refs.has(integrity)) await cacache.rm.content(this.#dir, integrity).catch(() => undefined);
  }
}
