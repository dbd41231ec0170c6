/**
 * Collects single requests into batches for an upstream that takes many at once (embeddings, bulk reads).
 * The batcher is here; the batch record it fills and its small operations are in `batch.ts`.
 *
 * This file is over 600 lines on purpose: what is left is one idea, a batch's life from forming to its
 * callers' results, and each step (`add`'s inlined path, sealing, running, delivering, timeouts and aborts)
 * moves the same forming batch, sealed ring, running set and counters, so a step moved out would take
 * them all as parameters. About 220 of the lines are the public options, stats and methods with their TSDoc.
 *
 * @module
 */
import { LRUCache } from 'lru-cache';
import { BatchItemError, ClosedError, OverloadedError, TimeoutError } from '../errors.ts';
import { type Clock, lruTime, systemClock } from '../internal/clock.ts';
import * as check from '../internal/options.ts';
import { Ring } from '../internal/ring.ts';
import { failSpan, startSpan } from '../internal/telemetry.ts';
import {
  type Batch,
  type Caller,
  compact,
  type Extra,
  extraOf,
  newBatch,
  pending,
  settle,
  whenDone,
} from './batch.ts';

/** @default 100 */
export const DEFAULT_BATCHER_MAX_BATCH_SIZE = 100;
/** @default 10 */
export const DEFAULT_BATCHER_MAX_WAIT_MS = 10;
/** @default 4 */
export const DEFAULT_BATCHER_MAX_CONCURRENT_BATCHES = 4;
/** @default 10000 */
export const DEFAULT_BATCHER_MAX_QUEUE_SIZE = 10_000;
/** @default Infinity */
export const DEFAULT_BATCHER_ITEM_TIMEOUT_MS = Infinity;
/** @default 1000 */
export const DEFAULT_BATCHER_CACHE_MAX_ENTRIES = 1_000;
/** @default Infinity */
export const DEFAULT_BATCHER_CACHE_TTL_MS = Infinity;

/**
 * Handles one batch: gets the items in the order they were added and returns one result per item, in the
 * same order. An `Error` in place of a result rejects only that item's callers; a thrown error (or
 * rejection) rejects every caller in the batch.
 */
export type BatchProcessor<T, R> = (
  items: T[],
) => Promise<ReadonlyArray<R | Error>> | ReadonlyArray<R | Error>;

export interface RequestBatcherOptions<T> {
  /** A batch is sent as soon as it holds this many items. @default 100 */
  maxBatchSize?: number;
  /**
   * A batch is sent at the latest this long after its first item arrived, ms (or, when every processor slot
   * is busy then, as soon as one frees, having kept filling meanwhile). `0` sends at the end of the current
   * tick (after pending promise callbacks), the way dataloader batches. @default 10
   */
  maxWaitMs?: number;
  /** Batches being processed at once; sealed batches beyond it wait their turn. @default 4 */
  maxConcurrentBatches?: number;
  /** Items waiting (not yet being processed); one more is refused with `OverloadedError`. @default 10000 */
  maxQueueSize?: number;
  /**
   * Identity of an item: items with the same key added to the same batch are sent once and every caller
   * gets that one result. Without it `add` sends every item; `load` then uses the item itself as its key.
   */
  key?: (item: T) => unknown;
  /** Default per-item timeout, from `add`/`load` until a result; `TimeoutError` after it, ms. @default Infinity */
  timeoutMs?: number;
  /**
   * A bounded result cache for `load` (LRU, optional TTL): a cached key resolves without a batch. Failed
   * items and `undefined` results are not cached. Off by default.
   */
  cache?: { maxEntries?: number; ttlMs?: number } | false;
  /** Time source for batch durations and the result cache's `ttlMs`. @default systemClock */
  clock?: Clock;
}

export interface BatchAddOptions {
  /** Aborting rejects this caller with `signal.reason`; an item nobody waits for any more leaves its batch. */
  signal?: AbortSignal;
  /** Overrides the batcher's `timeoutMs` for this call, ms. */
  timeoutMs?: number;
}

/** What {@link RequestBatcher.stats} returns. */
export interface RequestBatcherStats {
  /** Items waiting for their batch to be sent. */
  queued: number;
  /** Batches being processed now. */
  running: number;
  /** Sealed batches waiting for a processing slot. */
  pendingBatches: number;
  added: number;
  batches: number;
  batchedItems: number;
  failedBatches: number;
  /** Batches whose result array did not have one result per item. */
  mismatchedBatches: number;
  rejectedItems: number;
  deduped: number;
  overloaded: number;
  aborted: number;
  timedOut: number;
  cacheHits: number;
  cacheMisses: number;
  cacheSize: number;
  /** Moving average of the processor's time per batch, ms. */
  avgBatchMs: number;
}

const resolved = Promise.resolve();

/**
 * Batches single requests. Each caller gets its own result or its own rejection: a failed batch rejects
 * every caller with a {@link BatchItemError} (the failure as `cause`), a result array that is too short
 * rejects the callers left without a result, and an `Error` in the array rejects only its caller. At most
 * `maxConcurrentBatches` run at once; at most `maxQueueSize` items wait. A batch goes out when it is full or
 * after `maxWaitMs`; when every slot is busy then, it keeps filling and goes out as soon as a slot frees, so
 * a slow processor gets fewer, fuller batches. `close()` sends what is queued and waits for it.
 *
 * @example
 * const batcher = new RequestBatcher(async (texts: string[]) => embedMany(texts), { maxBatchSize: 100, maxWaitMs: 20 });
 * const vector = await batcher.add('hello');
 * await batcher.close();
 */
export class RequestBatcher<T, R> {
  /** Fields of {@link stats} that only grow. */
  readonly statsCounters: readonly string[] = [
    'added',
    'batches',
    'batchedItems',
    'failedBatches',
    'mismatchedBatches',
    'rejectedItems',
    'deduped',
    'overloaded',
    'aborted',
    'timedOut',
    'cacheHits',
    'cacheMisses',
  ];

  readonly #processor: BatchProcessor<T, R>;
  readonly #maxBatchSize: number;
  readonly #maxWaitMs: number;
  readonly #maxConcurrent: number;
  readonly #maxQueueSize: number;
  readonly #key: ((item: T) => unknown) | undefined;
  readonly #timeoutMs: number;
  readonly #cache: LRUCache<object, object> | undefined;
  readonly #clock: Clock;

  #current: Batch<T, R> | null = null;
  #tickPending = false;
  readonly #onTick = (): void => {
    this.#tickPending = false;
    if (this.#current !== null) this.#due(this.#current);
  };
  readonly #scheduleTick = (): void => process.nextTick(this.#onTick);
  readonly #sealed = new Ring<Batch<T, R>>();
  readonly #running = new Set<Batch<T, R>>();
  /** Items in sealed batches not yet running (those in the forming batch are counted from it). */
  #queuedSealed = 0;
  /** Items added to batches already sealed (the forming batch's are counted from it). */
  #addedSealed = 0;
  /** No key function and no default timeout: a plain `add` needs no per-item bookkeeping. */
  readonly #plain: boolean;
  #closed = false;
  #closing: Promise<void> | undefined;

  #batches = 0;
  #batchedItems = 0;
  #failedBatches = 0;
  #mismatchedBatches = 0;
  #rejectedItems = 0;
  #deduped = 0;
  #overloaded = 0;
  #aborted = 0;
  #timedOut = 0;
  #cacheHits = 0;
  #cacheMisses = 0;
  #avgBatchMs = 0;

  /** @throws {TypeError} naming the option, when an option is invalid. */
  constructor(processor: BatchProcessor<T, R>, options: RequestBatcherOptions<T> = {}) {
    this.#processor = check.fn('processor', processor);
    const o = check.object<RequestBatcherOptions<T>>('options', options);
    this.#maxBatchSize = check.integer(
      'options.maxBatchSize',
      o.maxBatchSize ?? DEFAULT_BATCHER_MAX_BATCH_SIZE,
      1,
    );
    this.#maxWaitMs = check.number('options.maxWaitMs', o.maxWaitMs ?? DEFAULT_BATCHER_MAX_WAIT_MS);
    this.#maxConcurrent = check.integer(
      'options.maxConcurrentBatches',
      o.maxConcurrentBatches ?? DEFAULT_BATCHER_MAX_CONCURRENT_BATCHES,
      1,
      true,
    );
    this.#maxQueueSize = check.integer(
      'options.maxQueueSize',
      o.maxQueueSize ?? DEFAULT_BATCHER_MAX_QUEUE_SIZE,
      1,
      true,
    );
    this.#key = o.key === undefined ? undefined : check.fn<(item: T) => unknown>('options.key', o.key);
    this.#timeoutMs = timeout('options.timeoutMs', o.timeoutMs ?? DEFAULT_BATCHER_ITEM_TIMEOUT_MS);
    this.#plain = this.#key === undefined && this.#timeoutMs === Infinity;
    this.#clock = o.clock === undefined ? systemClock : check.clock('options.clock', o.clock);
    const clock = this.#clock;
    if (o.cache !== undefined && o.cache !== false) {
      const c = check.object<{ maxEntries?: number; ttlMs?: number }>('options.cache', o.cache);
      const max = check.integer(
        'options.cache.maxEntries',
        c.maxEntries ?? DEFAULT_BATCHER_CACHE_MAX_ENTRIES,
        1,
      );
      const ttl = timeout('options.cache.ttlMs', c.ttlMs ?? DEFAULT_BATCHER_CACHE_TTL_MS);
      this.#cache = new LRUCache<object, object>(
        ttl === Infinity ? { max } : { max, ttl, ...lruTime(clock) },
      );
    }
  }

  /**
   * Adds one item to the forming batch and resolves with its result.
   *
   * @throws {BatchItemError} when its batch failed (`cause`) or returned no result for it.
   * @throws {OverloadedError} when `maxQueueSize` items already wait.
   * @throws {TimeoutError} after `timeoutMs`.
   * @throws {ClosedError} after `close()`.
   * Also rejects with the `Error` the processor returned in this item's place, or with `signal.reason`.
   */
  add(item: T, options?: BatchAddOptions): Promise<R> {
    const batch = this.#current;
    // Kept small enough to inline: a plain item joining a forming batch that has room.
    if (options === undefined && batch !== null && batch.items.length < batch.room) {
      const size = batch.items.push(item);
      const promise = pending<R>(batch.callbacks);
      if (size >= this.#maxBatchSize) this.#seal(batch);
      return promise;
    }
    return this.#enqueue(item, this.#key === undefined ? undefined : this.#key(item), false, options);
  }

  /**
   * Dataloader-style: `add` with deduplication by key (the `key` option, else the item itself) and, when
   * `cache` is configured, the result cache in front.
   */
  load(item: T, options?: BatchAddOptions): Promise<R> {
    const key = this.#key === undefined ? item : this.#key(item);
    if (this.#cache !== undefined && !this.#closed) {
      const hit = this.#cache.get(key as object);
      if (hit !== undefined) {
        this.#cacheHits++;
        return Promise.resolve(hit as R);
      }
      this.#cacheMisses++;
    }
    return this.#enqueue(item, key, true, options);
  }

  /** Drops `item`'s cached result, or every cached result when called without an item. */
  clearCache(...item: [item?: T]): void {
    if (this.#cache === undefined) return;
    if (item.length === 0) this.#cache.clear();
    else this.#cache.delete((this.#key === undefined ? item[0] : this.#key(item[0] as T)) as object);
  }

  /** Sends the forming batch now; resolves when every batch sent or waiting so far has finished. */
  flush(): Promise<void> {
    if (this.#current !== null) this.#seal(this.#current);
    const pending = [...this.#sealed, ...this.#running];
    if (pending.length === 0) return resolved;
    return Promise.all(pending.map(whenDone)).then(noop);
  }

  /**
   * Refuses new items (`ClosedError`), sends everything queued and resolves when every batch has finished.
   * Idempotent.
   */
  close(): Promise<void> {
    if (this.#closing === undefined) {
      this.#closed = true;
      this.#closing = this.flush();
    }
    return this.#closing;
  }

  /** Counts and gauges, numbers only. Fields listed in {@link statsCounters} only grow. */
  stats(): RequestBatcherStats {
    return {
      queued: this.#queued(),
      running: this.#running.size,
      pendingBatches: this.#sealed.length,
      added: this.#addedSealed + (this.#current?.items.length ?? 0),
      batches: this.#batches,
      batchedItems: this.#batchedItems,
      failedBatches: this.#failedBatches,
      mismatchedBatches: this.#mismatchedBatches,
      rejectedItems: this.#rejectedItems,
      deduped: this.#deduped,
      overloaded: this.#overloaded,
      aborted: this.#aborted,
      timedOut: this.#timedOut,
      cacheHits: this.#cacheHits,
      cacheMisses: this.#cacheMisses,
      cacheSize: this.#cache?.size ?? 0,
      avgBatchMs: this.#avgBatchMs,
    };
  }

  // --- queueing ------------------------------------------------------------------------------------

  #enqueue(item: T, key: unknown, cache: boolean, options: BatchAddOptions | undefined): Promise<R> {
    if (this.#closed) return Promise.reject(new ClosedError('RequestBatcher'));
    let signal: AbortSignal | undefined;
    let watched = this.#timeoutMs !== Infinity;
    if (options !== undefined) {
      signal = options.signal;
      if (signal?.aborted) {
        this.#aborted++;
        return Promise.reject(signal.reason);
      }
      if (options.timeoutMs !== undefined) {
        try {
          timeout('options.timeoutMs', options.timeoutMs);
        } catch (error) {
          return Promise.reject(error);
        }
        watched = true;
      }
      watched ||= signal !== undefined;
    }
    const dedupe = key !== undefined || cache;
    let batch = this.#current;
    if (dedupe && batch !== null && batch.keys !== null) {
      const index = batch.keys.get(key);
      if (index !== undefined) return this.#join(batch, index, key, cache, options);
    }
    if (this.#queued() >= this.#maxQueueSize) return this.#overload();
    if (batch === null) batch = this.#open();
    const index = batch.items.length;
    batch.items.push(item);
    const promise = pending<R>(batch.callbacks);
    if (dedupe || watched) {
      const extra = extraOf(batch, index, key);
      extra.cache = cache;
      if (dedupe) {
        batch.keys ??= new Map();
        batch.keys.set(key, index);
      }
      if (watched) this.#watch(extra, extra, options);
    }
    if (index + 1 >= this.#maxBatchSize) this.#seal(batch);
    return promise;
  }

  #updateRoom(): void {
    const batch = this.#current;
    if (batch !== null && this.#plain) {
      batch.room = Math.min(this.#maxBatchSize, this.#maxQueueSize - this.#queuedSealed);
    }
  }

  #queued(): number {
    const current = this.#current;
    return this.#queuedSealed + (current === null ? 0 : current.items.length - current.cancelled);
  }

  #overload(): Promise<never> {
    this.#overloaded++;
    return Promise.reject(
      new OverloadedError({
        component: 'RequestBatcher',
        queueSize: this.#queued(),
        maxQueueSize: this.#maxQueueSize,
        retryAfterMs: Math.max(1, Math.ceil(this.#avgBatchMs)),
      }),
    );
  }

  /** Another caller of an item already in the forming batch: shares its result. */
  #join(
    batch: Batch<T, R>,
    index: number,
    key: unknown,
    cache: boolean,
    options: BatchAddOptions | undefined,
  ): Promise<R> {
    this.#deduped++;
    const extra = extraOf(batch, index, key);
    if (cache) extra.cache = true;
    const caller: Caller<R> = {
      resolve: noop,
      reject: noop,
      done: false,
      signal: undefined,
      onAbort: undefined,
      timer: undefined,
    };
    const promise = new Promise<R>((resolve, reject) => {
      caller.resolve = resolve;
      caller.reject = reject;
    });
    extra.live++;
    extra.more ??= [];
    extra.more.push(caller);
    this.#watch(extra, caller, options);
    return promise;
  }

  /** Installs a caller's abort listener and timeout; only callers that asked for them pay for them. */
  #watch(extra: Extra<T, R>, caller: Caller<R>, options: BatchAddOptions | undefined): void {
    const signal = options?.signal;
    if (signal !== undefined) {
      caller.signal = signal;
      caller.onAbort = () => {
        this.#aborted++;
        this.#drop(extra, caller, signal.reason);
      };
      signal.addEventListener('abort', caller.onAbort, { once: true });
    }
    const ms = options?.timeoutMs ?? this.#timeoutMs;
    if (ms !== Infinity) {
      // Not unref()ed: the caller awaits it; it is cleared as soon as the caller is answered.
      caller.timer = setTimeout(() => {
        this.#timedOut++;
        this.#drop(extra, caller, new TimeoutError('batched item', ms));
      }, ms);
    }
  }

  /** A caller gave up: reject it, and take its item out of a batch not yet sent once nobody waits for it. */
  #drop(extra: Extra<T, R>, caller: Caller<R>, reason: unknown): void {
    if (caller.done) return;
    settle(caller, undefined, reason, true);
    const batch = extra.batch;
    if (--extra.live > 0 || batch.state >= 2 || extra.cancelled) return;
    extra.cancelled = true;
    batch.cancelled++;
    if (batch.state === 1) this.#queuedSealed--;
    if (batch.keys !== null && batch.keys.get(extra.key) === extra.index) {
      batch.keys.delete(extra.key);
    }
  }

  #open(): Batch<T, R> {
    const batch = newBatch<T, R>();
    this.#current = batch;
    this.#updateRoom();
    if (this.#maxWaitMs === 0) {
      // After every pending promise callback of this tick has had its chance to add, like dataloader. One
      // pending tick at most, holding no batch: while callers keep adding from promise callbacks the tick
      // cannot run, and a closure per batch would pin every batch in memory until it does (measured: 40x
      // slower, mostly GC).
      if (!this.#tickPending) {
        this.#tickPending = true;
        resolved.then(this.#scheduleTick);
      }
    } else {
      // Not unref()ed: callers are awaiting this flush, and the process must not exit under them.
      batch.timer = setTimeout(() => {
        batch.timer = undefined;
        if (batch.state === 0) this.#due(batch);
      }, this.#maxWaitMs);
    }
    return batch;
  }

  /** The forming batch has waited long enough: sent now when a slot is free, else as soon as one frees. */
  #due(batch: Batch<T, R>): void {
    if (this.#running.size < this.#maxConcurrent && this.#sealed.length === 0) this.#seal(batch);
    else batch.due = true;
  }

  #seal(batch: Batch<T, R>): void {
    if (batch.timer !== undefined) {
      clearTimeout(batch.timer);
      batch.timer = undefined;
    }
    batch.state = 1;
    batch.keys = null;
    this.#addedSealed += batch.items.length;
    this.#queuedSealed += batch.items.length - batch.cancelled;
    if (this.#current === batch) this.#current = null;
    this.#sealed.push(batch);
    this.#pump();
  }

  #pump(): void {
    while (this.#running.size < this.#maxConcurrent && this.#sealed.length > 0) {
      this.#run(this.#sealed.shift()!);
    }
    const current = this.#current;
    if (current?.due && this.#running.size < this.#maxConcurrent) this.#seal(current);
  }

  // --- processing ----------------------------------------------------------------------------------

  #run(batch: Batch<T, R>): void {
    if (batch.cancelled > 0) compact(batch);
    batch.state = 2;
    const n = batch.items.length;
    this.#queuedSealed -= n;
    this.#updateRoom();
    if (n === 0) {
      this.#finish(batch);
      return;
    }
    this.#running.add(batch);
    this.#batches++;
    this.#batchedItems += n;
    // Timing a batch costs two clock reads: batches far faster than that are timed one in 8, enough for
    // the moving average; a no-op span is not made at all while no tracer provider is registered.
    const avg = this.#avgBatchMs;
    const started = avg === 0 || avg > FAST_BATCH_MS || (this.#batches & 7) === 0 ? this.#clock.now() : -1;
    batch.span = startSpan('clawperf.batcher.batch', { attributes: { 'clawperf.batch.size': n } });
    let out: Promise<ReadonlyArray<R | Error>> | ReadonlyArray<R | Error>;
    try {
      out = this.#processor(batch.items);
    } catch (error) {
      this.#failed(batch, error, started);
      return;
    }
    if (isThenable(out)) {
      out.then(
        (results) => this.#deliver(batch, results, started),
        (error) => this.#failed(batch, error, started),
      );
    } else {
      this.#deliver(batch, out, started);
    }
  }

  #deliver(batch: Batch<T, R>, results: ReadonlyArray<R | Error>, started: number): void {
    if (!Array.isArray(results)) {
      this.#failed(
        batch,
        new TypeError(`the batch processor must return an array, got ${typeof results}`),
        started,
      );
      return;
    }
    const { callbacks, extras } = batch;
    const n = callbacks.length >> 1;
    const got = results.length;
    if (got === n && extras === null) {
      for (let i = 0; i < n; i++) {
        const value = results[i];
        if (value instanceof Error) {
          this.#rejectedItems++;
          callbacks[2 * i + 1]!(value);
        } else {
          callbacks[2 * i]!(value as R);
        }
      }
      this.#finish(batch, started);
      return;
    }
    if (got !== n) this.#mismatchedBatches++;
    for (let i = 0; i < n; i++) {
      let failed = false;
      let value: unknown;
      if (i >= got) {
        failed = true;
        value = new BatchItemError(
          `the batch processor returned ${got} results for ${n} items; item ${i} got none`,
          i,
        );
      } else {
        value = results[i];
        failed = value instanceof Error;
      }
      if (failed) this.#rejectedItems++;
      const extra = extras === null ? undefined : extras[i];
      if (extra !== undefined) this.#settleExtra(extra, value, failed);
      else callbacks[failed ? 2 * i + 1 : 2 * i]!(value as R);
    }
    this.#finish(batch, started);
  }

  #failed(batch: Batch<T, R>, error: unknown, started: number): void {
    const n = batch.callbacks.length >> 1;
    failSpan(batch.span, error);
    this.#failedBatches++;
    this.#rejectedItems += n;
    const message = `a batch of ${n} items failed: ${error instanceof Error ? error.message : String(error)}`;
    for (let i = 0; i < n; i++) {
      const itemError = new BatchItemError(message, i, { cause: error });
      const extra = batch.extras?.[i];
      if (extra !== undefined) this.#settleExtra(extra, itemError, true);
      else batch.callbacks[2 * i + 1]!(itemError);
    }
    this.#finish(batch, started);
  }

  #settleExtra(extra: Extra<T, R>, value: unknown, failed: boolean): void {
    if (!failed && extra.cache && this.#cache !== undefined && value !== undefined && value !== null) {
      this.#cache.set(extra.key as object, value as object);
    }
    if (!extra.done) settle(extra, value as R, value, failed);
    const more = extra.more;
    if (more !== null) for (const caller of more) if (!caller.done) settle(caller, value as R, value, failed);
  }

  #finish(batch: Batch<T, R>, started?: number): void {
    if (started !== undefined && started >= 0) {
      const ms = this.#clock.now() - started;
      this.#avgBatchMs = this.#avgBatchMs === 0 ? ms : this.#avgBatchMs * 0.8 + ms * 0.2;
    }
    batch.state = 3;
    batch.span.end();
    this.#running.delete(batch);
    batch.whenDone?.resolve();
    this.#pump();
  }
}

/** Batches faster than this (ms) are timed one in 8. */
const FAST_BATCH_MS = 0.05;

function isThenable<V>(value: unknown): value is Promise<V> {
  return (
    value !== null && typeof value === 'object' && typeof (value as { then?: unknown }).then === 'function'
  );
}

function timeout(name: string, value: unknown): number {
  return check.integer(name, value, 1, true);
}

function noop(): void {}
