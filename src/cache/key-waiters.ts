/**
 * The callers of MultiLevelCache.getOrSet with `lock` that wait, per key, while another node holds the
 * key's Redis lease: the bus message that node's write sends wakes them, or the lease's end does.
 *
 * @module
 */

/** One wait: `promise` resolves when woken or timed out; `cancel` ends the wait at once. */
export interface KeyWait {
  readonly promise: Promise<void>;
  readonly cancel: () => void;
}

/** Waits on keys, woken by key or all at once; each wait also ends by itself after its own timeout. */
export class KeyWaiters {
  readonly #waiters = new Map<string, Set<() => void>>();

  /** A wait on `key` that ends when {@link wake} or {@link wakeAll} is called, or after `ms`. */
  wait(key: string, ms: number): KeyWait {
    let waiters = this.#waiters.get(key);
    if (waiters === undefined) {
      waiters = new Set();
      this.#waiters.set(key, waiters);
    }
    const set = waiters;
    let wake!: () => void;
    const promise = new Promise<void>((resolve) => {
      const timer = setTimeout(() => wake(), ms);
      timer.unref();
      wake = () => {
        clearTimeout(timer);
        set.delete(wake);
        if (set.size === 0 && this.#waiters.get(key) === set) this.#waiters.delete(key);
        resolve();
      };
    });
    set.add(wake);
    return { promise, cancel: wake };
  }

  /** Ends every wait on `key`. */
  wake(key: string): void {
    const waiters = this.#waiters.get(key);
    if (waiters !== undefined) for (const wake of [...waiters]) wake();
  }

  /** Ends every wait. */
  wakeAll(): void {
    for (const waiters of this.#waiters.values()) for (const wake of [...waiters]) wake();
  }
}
