/**
 * A batch of a {@link RequestBatcher}: its items and their callers' callbacks in parallel arrays, the extra
 * record an item needs only when its caller asked for more (a signal, a timeout, a key, the cache), and the
 * small operations on them.
 *
 * @module
 */
import type { Span } from '@opentelemetry/api';
import { NO_SPAN } from '../internal/telemetry.ts';

/** One caller waiting for an item's result. */
export interface Caller<R> {
  resolve: (result: R) => void;
  reject: (error: unknown) => void;
  done: boolean;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  timer: ReturnType<typeof setTimeout> | undefined;
}

/** What an item needs beyond its result callbacks: only items added with a signal, timeout, key or cache. */
export interface Extra<T, R> extends Caller<R> {
  readonly batch: Batch<T, R>;
  /** Position in the batch until it is sent. */
  readonly index: number;
  readonly key: unknown;
  /** Further callers of a deduplicated item. */
  more: Caller<R>[] | null;
  /** Callers still waiting. */
  live: number;
  cancelled: boolean;
  cache: boolean;
}

/**
 * A batch keeps its items and their callbacks in parallel arrays, so a plain `add` allocates no object of
 * its own beyond its promise, and the items array goes to the processor as it is.
 */
export interface Batch<T, R> {
  readonly items: T[];
  /** Each item's resolve and reject, interleaved: item i at 2i and 2i + 1 (one array to grow, not two). */
  readonly callbacks: ((value: unknown) => void)[];
  extras: (Extra<T, R> | undefined)[] | null;
  keys: Map<unknown, number> | null;
  /**
   * Items `add`'s fast path may still take: 0 unless the batcher is plain, else bounded by `maxBatchSize`
   * and the queue's room when last computed (room only grows while a batch forms, so this errs safe).
   */
  room: number;
  cancelled: number;
  /** 0 forming, 1 sealed, 2 running, 3 done. */
  state: number;
  /**
   * Its wait is over but every processor slot was busy: it keeps forming (up to `maxBatchSize`) and is sent
   * the moment a slot frees, instead of queueing as a small sealed batch.
   */
  due: boolean;
  timer: ReturnType<typeof setTimeout> | undefined;
  whenDone: { promise: Promise<void>; resolve: () => void } | undefined;
  /** Covers the processor call; a no-op span while tracing is off. */
  span: Span;
}

/** An empty batch, forming. */
export function newBatch<T, R>(): Batch<T, R> {
  return {
    items: [],
    callbacks: [],
    extras: null,
    keys: null,
    room: 0,
    cancelled: 0,
    state: 0,
    due: false,
    timer: undefined,
    whenDone: undefined,
    span: NO_SPAN,
  };
}

/**
 * A promise whose callbacks land in the batch. The executor is a literal rather than one stored function
 * per batch, so the optimizer can inline it into the Promise constructor.
 */
export function pending<R>(callbacks: ((value: unknown) => void)[]): Promise<R> {
  return new Promise<R>((resolve, reject) => {
    callbacks.push(resolve as (value: unknown) => void, reject);
  });
}

/** The extra record of item `index`, made the first time it is needed. */
export function extraOf<T, R>(batch: Batch<T, R>, index: number, key: unknown): Extra<T, R> {
  batch.extras ??= [];
  const extras = batch.extras;
  let extra = extras[index];
  if (extra === undefined) {
    extra = {
      resolve: batch.callbacks[2 * index]!,
      reject: batch.callbacks[2 * index + 1]!,
      done: false,
      signal: undefined,
      onAbort: undefined,
      timer: undefined,
      batch,
      index,
      key,
      more: null,
      live: 1,
      cancelled: false,
      cache: false,
    };
    extras[index] = extra;
  }
  return extra;
}

/** Answers a caller, and drops its abort listener and timeout. */
export function settle<R>(caller: Caller<R>, result: R | undefined, error: unknown, failed: boolean): void {
  caller.done = true;
  if (caller.onAbort !== undefined) caller.signal!.removeEventListener('abort', caller.onAbort);
  if (caller.timer !== undefined) clearTimeout(caller.timer);
  if (failed) caller.reject(error);
  else caller.resolve(result as R);
}

/** Removes the items every caller gave up on before the batch was sent. */
export function compact<T, R>(batch: Batch<T, R>): void {
  const { items, callbacks } = batch;
  const extras = batch.extras!;
  let j = 0;
  for (let i = 0; i < items.length; i++) {
    const extra = extras[i];
    if (extra?.cancelled) continue;
    items[j] = items[i]!;
    callbacks[2 * j] = callbacks[2 * i]!;
    callbacks[2 * j + 1] = callbacks[2 * i + 1]!;
    extras[j] = extra;
    j++;
  }
  items.length = extras.length = j;
  callbacks.length = 2 * j;
}

/** Resolves when the batch is done. */
export function whenDone<T, R>(batch: Batch<T, R>): Promise<void> {
  if (batch.whenDone === undefined) {
    let resolve!: () => void;
    const promise = new Promise<void>((r) => {
      resolve = r;
    });
    batch.whenDone = { promise, resolve };
  }
  return batch.whenDone.promise;
}
