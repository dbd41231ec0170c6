/**
 * clawperf/resources in one minute: a burst of 30 callers hits a slow dependency (100 ms a call) behind a
 * BackpressureController that runs 4 at a time and lets 10 wait at most 300 ms; then a MemoryManager report.
 * Run with `npm run example`.
 */
import { OverloadedError, QueueTimeoutError } from '../src/errors.ts';
import { BackpressureController, MemoryManager } from '../src/resources/index.ts';

const slowDependency = (id: number) =>
  new Promise<string>((resolve) => setTimeout(resolve, 100, `answer ${id}`));

const gate = new BackpressureController({ maxConcurrency: 4, maxQueueSize: 10, queueTimeoutMs: 300 });
const outcomes = { served: 0, overloaded: 0, timedOut: 0 };
let retryHintMs = 0;

const burst = Array.from({ length: 30 }, async (_, id) => {
  try {
    // Every fifth caller is a paying customer: it jumps the queue, never a running call.
    await gate.run(() => slowDependency(id), { priority: id % 5 === 0 ? 1 : 0 });
    outcomes.served++;
  } catch (error) {
    if (error instanceof OverloadedError) {
      outcomes.overloaded++;
      retryHintMs = error.retryAfterMs;
    } else if (error instanceof QueueTimeoutError) outcomes.timedOut++;
    else throw error;
  }
});
await Promise.all(burst);

console.log('30 callers, 4 at a time, 10 may wait up to 300 ms:');
console.log(
  `  served ${outcomes.served}, refused at once ${outcomes.overloaded}, timed out ${outcomes.timedOut}`,
);
console.log(`  last retry hint: ${retryHintMs} ms`);
const s = gate.stats();
console.log(
  `  stats: admitted ${s.admitted}, queued ${s.queuedTotal}, rejected ${s.rejected}, timedOut ${s.timedOut},`,
);
console.log(
  `         mean queue wait ${(s.queueWaitMsTotal / Math.max(1, s.admittedAfterWait)).toFixed(1)} ms`,
);

const memory = new MemoryManager({ warningRatio: 0.8, criticalRatio: 0.95 });
memory.onCleanup((level) => console.log(`  memory ${level}: a cache would be trimmed here`));
console.log(`\nmemory level now: ${await memory.check()}`);
const report = memory.getMemoryReport();
const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MB`;
console.log(`  heap ${mb(report.heapUsed)} of ${mb(report.limit)} (${(report.usage * 100).toFixed(1)} %),`);
console.log(`  rss ${mb(report.rss)}, old space ${mb(report.heapSpaces.old_space?.used ?? 0)},`);
console.log(
  `  event loop busy ${(report.eventLoopUtilization * 100).toFixed(1)} % since the manager started`,
);

await Promise.all([gate.close(), memory.close()]);
