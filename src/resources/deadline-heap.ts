/**
 * The deadline heap: a binary min-heap of waiter slots ordered by deadline, for the waiters of a
 * {@link BackpressureController} that bring their own timeout (those with the default one wait in a plain
 * FIFO lane, already in deadline order). Slots are numbers; each slot's deadline is `deadline[slot]` and its
 * place in the heap `position[slot]`, so removing any waiter (an abort, an admission) takes O(log n).
 *
 * @module
 */

/** `position[slot]` of a slot not in the heap. */
export const NOT_IN_HEAP = -1;

/** Adds `slot`. */
export function heapPush(heap: number[], position: Int32Array, deadline: Float64Array, slot: number): void {
  heap.push(slot);
  siftUp(heap, position, deadline, heap.length - 1, slot);
}

/** Removes `slot`, wherever it is in the heap. */
export function heapRemove(heap: number[], position: Int32Array, deadline: Float64Array, slot: number): void {
  const i = position[slot]!;
  const last = heap.pop()!;
  if (last !== slot) {
    heap[i] = last;
    position[last] = i;
    if (i > 0 && deadline[last]! < deadline[heap[(i - 1) >> 1]!]!) siftUp(heap, position, deadline, i, last);
    else siftDown(heap, position, deadline, i, last);
  }
  position[slot] = NOT_IN_HEAP;
}

function siftUp(heap: number[], position: Int32Array, deadline: Float64Array, i: number, slot: number): void {
  const key = deadline[slot]!;
  while (i > 0) {
    const parent = (i - 1) >> 1;
    const p = heap[parent]!;
    if (deadline[p]! <= key) break;
    heap[i] = p;
    position[p] = i;
    i = parent;
  }
  heap[i] = slot;
  position[slot] = i;
}

function siftDown(
  heap: number[],
  position: Int32Array,
  deadline: Float64Array,
  i: number,
  slot: number,
): void {
  const key = deadline[slot]!;
  const n = heap.length;
  for (;;) {
    let child = 2 * i + 1;
    if (child >= n) break;
    if (child + 1 < n && deadline[heap[child + 1]!]! < deadline[heap[child]!]!) child++;
    const c = heap[child]!;
    if (deadline[c]! >= key) break;
    heap[i] = c;
    position[c] = i;
    i = child;
  }
  heap[i] = slot;
  position[slot] = i;
}
