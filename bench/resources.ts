/**
 * BackpressureController against p-queue and p-limit: 64 callers through a limit of 10, each running an
 * async no-op, so the figure is the admission machinery itself. The ceiling is the task awaited with no
 * admission control at all. Then the heap one queued waiter costs, with 100,000 waiting.
 */
import pLimit from 'p-limit';
import PQueue from 'p-queue';
import { BackpressureController } from '../src/resources/index.ts';
import { compare, heapPerItem } from './harness.ts';

const CALLERS = 64;
const LIMIT = 10;
const WAITERS = 100_000;

const task = async () => {};

// Our controller keeps its guarantees on: a bounded queue and a queue timeout (p-queue and p-limit have
// neither, so they do less work per call).
const controller = new BackpressureController({ maxConcurrency: LIMIT, maxQueueSize: 1_000 });
const queue = new PQueue({ concurrency: LIMIT });
const limit = pLimit(LIMIT);

await compare(
  { title: `an async no-op through a limit of ${LIMIT}, ${CALLERS} callers`, concurrency: CALLERS },
  [
    {
      name: 'clawperf BackpressureController.run (queue bound 1000, queue timeout 30 s)',
      op: () => controller.run(task),
    },
    { name: 'p-queue 8 add (unbounded queue, no timeout)', op: () => queue.add(task) },
    { name: 'p-limit 6 (unbounded queue, no timeout)', op: () => limit(task) },
    { name: 'ceiling: the task awaited directly, no limit', op: task },
  ],
);
await controller.close();

/** Heap (and off-heap typed-array) bytes per waiter, with `WAITERS` callers queued behind one held slot. */
async function perWaiter(enqueue: () => unknown): Promise<{ heap: number; offHeap: number }> {
  const before = process.memoryUsage().arrayBuffers;
  const heap = await heapPerItem(WAITERS, enqueue);
  return { heap, offHeap: (process.memoryUsage().arrayBuffers - before) / WAITERS };
}

const never = () => new Promise<void>(() => {});
const acquireGate = new BackpressureController({ maxConcurrency: 1, maxQueueSize: WAITERS });
await acquireGate.acquire();
const runGate = new BackpressureController({ maxConcurrency: 1, maxQueueSize: WAITERS });
await runGate.acquire();
const peerQueue = new PQueue({ concurrency: 1 });
void peerQueue.add(never);
const peerLimit = pLimit(1);
void peerLimit(never);

const rows: [string, { heap: number; offHeap: number }][] = [
  ['clawperf BackpressureController.acquire()', await perWaiter(() => acquireGate.acquire())],
  ['clawperf BackpressureController.run(fn)', await perWaiter(() => runGate.run(task))],
  ['p-queue 8 add(fn)', await perWaiter(() => peerQueue.add(task))],
  ['p-limit 6 limit(fn)', await perWaiter(() => peerLimit(task))],
];
console.log(`\n### Memory per queued waiter (${WAITERS.toLocaleString('en-US')} waiting)\n`);
console.log('| waiter | heap bytes | off-heap bytes (typed arrays) |\n|---|---:|---:|');
for (const [name, { heap, offHeap }] of rows) {
  console.log(`| ${name} | ${Math.round(heap)} | ${Math.round(offHeap)} |`);
}
// The waiters above are never served; the timers are unref()ed, so the process ends here.
