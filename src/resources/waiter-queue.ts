/**
 * The waiter queue of a {@link BackpressureController}: callers waiting for a slot, in preallocated parallel
 * arrays linked by index, so waiting allocates nothing but the caller's promise.
 *
 * Each waiter is in two lists at once: its priority level's FIFO (for the order of admission), and either
 * the lane of waiters with the default timeout (a FIFO, so already in deadline order) or the deadline heap
 * of those with their own.
 *
 * @module
 */
import { heapPush, heapRemove, NOT_IN_HEAP } from './deadline-heap.ts';

/** No waiter: an empty list's head, the end of a list. */
export const NONE = -1;

const INITIAL_CAPACITY = 16;

export type Resolve = (value: unknown) => void;
export type Task = () => unknown;

/** One doubly linked list threaded through the slot arrays: a priority level's FIFO or the timeout lane. */
interface List {
  head: number;
  tail: number;
}

interface Level extends List {
  priority: number;
}

/** Waiters by priority (higher first, first-in first-out within one), each until its deadline. */
export class WaiterQueue {
  readonly #defaultPriority: number;
  #size = 0;

  // Waiter slots: parallel arrays indexed by slot, grown by doubling, free slots chained through #next.
  #capacity = 0;
  #next = new Int32Array(0);
  #prev = new Int32Array(0);
  #laneNext = new Int32Array(0);
  #lanePrev = new Int32Array(0);
  #heapIndex = new Int32Array(0);
  #enqueuedAt = new Float64Array(0);
  #deadline = new Float64Array(0);
  #priority = new Float64Array(0);
  #resolvers: (Resolve | undefined)[] = [];
  #tasks: (Task | undefined)[] = [];
  #abortHooks: ((() => void) | undefined)[] = [];
  #signals: (AbortSignal | undefined)[] = [];
  #free = NONE;

  // Priority levels, highest first; the default level always exists.
  readonly #levels: Level[];
  // Waiters with the default timeout, oldest first: their deadlines are in order, so the head expires first.
  readonly #lane: List = { head: NONE, tail: NONE };
  // Waiters with their own timeout: a binary min-heap of slots by deadline.
  readonly #heap: number[] = [];

  constructor(defaultPriority: number) {
    this.#defaultPriority = defaultPriority;
    this.#levels = [{ priority: defaultPriority, head: NONE, tail: NONE }];
  }

  /** Waiters in the queue. */
  get size(): number {
    return this.#size;
  }

  /**
   * Adds a waiter and returns its slot. `ownTimeout`: its timeout is not the default one, so its deadline
   * goes to the heap rather than the lane.
   */
  add(
    task: Task | undefined,
    priority: number,
    enqueuedAt: number,
    deadline: number,
    ownTimeout: boolean,
  ): number {
    if (this.#free === NONE) this.#grow();
    const slot = this.#free;
    this.#free = this.#next[slot]!;
    this.#enqueuedAt[slot] = enqueuedAt;
    this.#deadline[slot] = deadline;
    this.#priority[slot] = priority;
    this.#tasks[slot] = task;
    append(this.#next, this.#prev, this.#levelFor(priority), slot);
    if (ownTimeout) {
      heapPush(this.#heap, this.#heapIndex, this.#deadline, slot);
    } else {
      this.#heapIndex[slot] = NOT_IN_HEAP;
      append(this.#laneNext, this.#lanePrev, this.#lane, slot);
    }
    this.#size++;
    return slot;
  }

  /** Sets the function that settles a waiter's promise. */
  setResolver(slot: number, resolve: Resolve): void {
    this.#resolvers[slot] = resolve;
  }

  /** Listens to a waiter's signal until the waiter leaves the queue. */
  watch(slot: number, signal: AbortSignal, onAbort: () => void): void {
    this.#signals[slot] = signal;
    this.#abortHooks[slot] = onAbort;
    signal.addEventListener('abort', onAbort, { once: true });
  }

  /** The waiter to admit next: highest priority, oldest; `NONE` when the queue is empty. */
  first(): number {
    const levels = this.#levels;
    for (let i = 0; i < levels.length; i++) {
      const head = levels[i]!.head;
      if (head !== NONE) return head;
    }
    return NONE;
  }

  task(slot: number): Task | undefined {
    return this.#tasks[slot];
  }

  enqueuedAt(slot: number): number {
    return this.#enqueuedAt[slot]!;
  }

  /** The waiter's own timeout, ms; undefined for one with the default timeout. */
  ownTimeoutMs(slot: number): number | undefined {
    return this.#heapIndex[slot] === NOT_IN_HEAP
      ? undefined
      : this.#deadline[slot]! - this.#enqueuedAt[slot]!;
  }

  /** The earliest deadline of any waiter; Infinity when the queue is empty. */
  earliestDeadline(): number {
    const lane = this.#lane.head;
    const top = this.#heap[0];
    const a = lane === NONE ? Number.POSITIVE_INFINITY : this.#deadline[lane]!;
    return top === undefined ? a : Math.min(a, this.#deadline[top]!);
  }

  /** A waiter whose deadline is `now` or earlier (the lane's before the heap's); `NONE` when there is none. */
  expired(now: number): number {
    const lane = this.#lane.head;
    if (lane !== NONE && this.#deadline[lane]! <= now) return lane;
    const top = this.#heap[0];
    if (top !== undefined && this.#deadline[top]! <= now) return top;
    return NONE;
  }

  /** Takes a waiter out of every list, frees its slot, and returns the function that settles its promise. */
  remove(slot: number): Resolve {
    const level = this.#levelOf(slot);
    unlink(this.#next, this.#prev, level, slot);
    if (level.head === NONE && level.priority !== this.#defaultPriority) {
      this.#levels.splice(this.#levels.indexOf(level), 1);
    }
    if (this.#heapIndex[slot] === NOT_IN_HEAP) unlink(this.#laneNext, this.#lanePrev, this.#lane, slot);
    else heapRemove(this.#heap, this.#heapIndex, this.#deadline, slot);
    const signal = this.#signals[slot];
    if (signal !== undefined) {
      signal.removeEventListener('abort', this.#abortHooks[slot]!);
      this.#signals[slot] = undefined;
      this.#abortHooks[slot] = undefined;
    }
    const resolve = this.#resolvers[slot]!;
    this.#resolvers[slot] = undefined;
    this.#tasks[slot] = undefined;
    this.#next[slot] = this.#free;
    this.#free = slot;
    this.#size--;
    return resolve;
  }

  #levelOf(slot: number): Level {
    const levels = this.#levels;
    if (levels.length === 1) return levels[0]!;
    const priority = this.#priority[slot]!;
    let i = 0;
    while (levels[i]!.priority !== priority) i++;
    return levels[i]!;
  }

  #levelFor(priority: number): Level {
    const levels = this.#levels;
    let i = 0;
    while (i < levels.length && levels[i]!.priority > priority) i++;
    const found = levels[i];
    if (found !== undefined && found.priority === priority) return found;
    const level: Level = { priority, head: NONE, tail: NONE };
    levels.splice(i, 0, level);
    return level;
  }

  #grow(): void {
    const old = this.#capacity;
    const capacity = old === 0 ? INITIAL_CAPACITY : old * 2;
    this.#next = resize(this.#next, capacity);
    this.#prev = resize(this.#prev, capacity);
    this.#laneNext = resize(this.#laneNext, capacity);
    this.#lanePrev = resize(this.#lanePrev, capacity);
    this.#heapIndex = resize(this.#heapIndex, capacity);
    this.#enqueuedAt = resize(this.#enqueuedAt, capacity);
    this.#deadline = resize(this.#deadline, capacity);
    this.#priority = resize(this.#priority, capacity);
    for (let i = old; i < capacity - 1; i++) this.#next[i] = i + 1;
    this.#next[capacity - 1] = this.#free;
    this.#free = old;
    this.#capacity = capacity;
  }
}

function append(next: Int32Array, prev: Int32Array, list: List, slot: number): void {
  next[slot] = NONE;
  prev[slot] = list.tail;
  if (list.tail === NONE) list.head = slot;
  else next[list.tail] = slot;
  list.tail = slot;
}

function unlink(next: Int32Array, prev: Int32Array, list: List, slot: number): void {
  const p = prev[slot]!;
  const n = next[slot]!;
  if (p === NONE) list.head = n;
  else next[p] = n;
  if (n === NONE) list.tail = p;
  else prev[n] = p;
}

function resize<A extends Int32Array | Float64Array>(array: A, capacity: number): A {
  const bigger = new (array.constructor as new (n: number) => A)(capacity);
  bigger.set(array);
  return bigger;
}
