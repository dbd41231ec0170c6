/**
 * A queue for hot paths: a power-of-two ring buffer with O(1) push, shift and unshift. `Array#shift()`
 * copies the array down on every call once it is long; this never copies except to double.
 *
 * @example
 * const queue = new Ring<Waiter>();
 * queue.push(waiter);
 * for (let w = queue.shift(); w !== undefined; w = queue.shift()) serve(w);
 */
export class Ring<T> {
  #items: (T | undefined)[] = new Array(16);
  #mask = 15;
  #head = 0;
  #length = 0;

  get length(): number {
    return this.#length;
  }

  /** The first item, left in place. */
  peek(): T | undefined {
    return this.#items[this.#head];
  }

  /** Adds an item at the end. */
  push(item: T): void {
    if (this.#length > this.#mask) this.#grow();
    this.#items[(this.#head + this.#length) & this.#mask] = item;
    this.#length++;
  }

  /** Puts an item back at the front. */
  unshift(item: T): void {
    if (this.#length > this.#mask) this.#grow();
    this.#head = (this.#head - 1) & this.#mask;
    this.#items[this.#head] = item;
    this.#length++;
  }

  /** Takes the first item out. */
  shift(): T | undefined {
    if (this.#length === 0) return undefined;
    const item = this.#items[this.#head];
    this.#items[this.#head] = undefined;
    this.#head = (this.#head + 1) & this.#mask;
    this.#length--;
    return item;
  }

  /** The items, first to last, left in place. */
  *[Symbol.iterator](): IterableIterator<T> {
    for (let i = 0; i < this.#length; i++) yield this.#items[(this.#head + i) & this.#mask] as T;
  }

  #grow(): void {
    const next: (T | undefined)[] = new Array((this.#mask + 1) * 2);
    for (let i = 0; i < this.#length; i++) next[i] = this.#items[(this.#head + i) & this.#mask];
    this.#items = next;
    this.#mask = next.length - 1;
    this.#head = 0;
  }
}
