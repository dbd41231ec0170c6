/**
 * The invalidations a MultiLevelCache saw last, so a read or write that was under way when one
 * arrived does not put what it carries into L1 or L3 afterwards.
 *
 * @module
 */
/** How many invalidations are remembered; an operation that saw more pass during it fills nothing. */
export const RECENT = 256;
const MASK = RECENT - 1;

/** What an invalidation named: one key (0), one tag (1) or everything (2). */
export type InvalidationKind = 0 | 1 | 2;

/**
 * A ring of the last {@link RECENT} invalidations, numbered. An operation takes {@link seq} when it
 * starts and asks {@link untouched} before it fills a level. Kinds and names live in two preallocated
 * arrays, so noting one allocates nothing.
 */
export class InvalidationRing {
  readonly #kinds = new Uint8Array(RECENT);
  readonly #names: string[] = new Array<string>(RECENT).fill('');
  #seq = 0;

  /** The number of the latest invalidation (0 before the first). */
  get seq(): number {
    return this.#seq;
  }

  /** Records an invalidation of a key (0), a tag (1) or everything (2). */
  note(kind: InvalidationKind, name: string): void {
    const slot = ++this.#seq & MASK;
    this.#kinds[slot] = kind;
    this.#names[slot] = name;
  }

  /** Whether no invalidation since `since` touched `key` or one of `tags`. */
  untouched(key: string, tags: readonly string[], since: number): boolean {
    const seq = this.#seq;
    if (seq === since) return true;
    if (seq - since >= RECENT) return false;
    for (let s = since + 1; s <= seq; s++) {
      const slot = s & MASK;
      const kind = this.#kinds[slot];
      if (kind === 2) return false;
      const name = this.#names[slot]!;
      if (kind === 0 ? name === key : tags.includes(name)) return false;
    }
    return true;
  }
}
