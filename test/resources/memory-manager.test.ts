import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { afterEach, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { getHeapStatistics } from 'node:v8';
import { ClosedError } from '../../src/errors.ts';
import { ManualClock } from '../../src/internal/clock.ts';
import {
  type MemoryLevelChange,
  MemoryManager,
  type MemoryManagerOptions,
  type MemoryUsageSample,
} from '../../src/resources/index.ts';
import { watchTimers } from '../helpers/timers.ts';

const LIMIT = 1_000_000;

/** A heap whose use the test sets, as a ratio of LIMIT. */
function fakeHeap() {
  const heap = {
    usage: 0.1,
    reads: 0,
    read: (): MemoryUsageSample => {
      heap.reads++;
      const heapUsed = Math.round(heap.usage * LIMIT);
      return { heapUsed, heapTotal: heapUsed, rss: heapUsed * 2, external: 0, arrayBuffers: 0 };
    },
  };
  return heap;
}

const open: MemoryManager[] = [];
function manager(options: MemoryManagerOptions = {}) {
  const heap = fakeHeap();
  const m = new MemoryManager({ maxHeapBytes: LIMIT, memoryUsage: heap.read, ...options });
  open.push(m);
  const events: string[] = [];
  for (const event of ['warning', 'critical', 'recovered'] as const) {
    m.on(event, (e: MemoryLevelChange) => events.push(`${event}:${e.previous}->${e.level}`));
  }
  return { m, heap, events };
}

afterEach(async () => {
  for (const m of open.splice(0)) await m.close();
});

describe('the limit', () => {
  it('defaults to the heap limit the process really has', async () => {
    const m = new MemoryManager();
    open.push(m);
    assert.equal(m.limit, getHeapStatistics().heap_size_limit);
    assert.equal(m.getMemoryReport().limit, m.limit);
  });

  it('follows --max-old-space-size instead of a hard-coded 1024 MB, and its timer never keeps the process alive', async () => {
    const entry = fileURLToPath(new URL('../../src/resources/index.ts', import.meta.url));
    const script = `import { MemoryManager } from ${JSON.stringify(entry)};
      const m = new MemoryManager({ intervalMs: 1 });
      console.log(JSON.stringify({ limit: m.limit, v8: (await import('node:v8')).getHeapStatistics().heap_size_limit }));`;
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--max-old-space-size=300', '--import', 'tsx', '--input-type=module', '-e', script],
      { timeout: 30_000 },
    );
    const { limit, v8 } = JSON.parse(stdout) as { limit: number; v8: number };
    assert.equal(limit, v8);
    assert.notEqual(limit, 1024 * 1024 * 1024);
    assert.ok(limit < 400 * 1024 * 1024, `limit ${limit}`);
  });
});

describe('levels with hysteresis', () => {
  it('emits an event when a level is entered, recovered when it is left, and nothing while it stays', async () => {
    const { m, heap, events } = manager({ warningRatio: 0.8, criticalRatio: 0.9, hysteresisRatio: 0.05 });
    const levels: string[] = [];
    for (const usage of [0.5, 0.8, 0.85, 0.79, 0.76, 0.8, 0.9, 0.95, 0.86, 0.84, 0.81, 0.9, 0.74, 0.5]) {
      heap.usage = usage;
      levels.push(await m.check());
    }
    assert.deepEqual(levels, [
      'normal',
      'warning',
      'warning',
      'warning',
      'warning',
      'warning',
      'critical',
      'critical',
      'critical',
      'warning',
      'warning',
      'critical',
      'normal',
      'normal',
    ]);
    assert.deepEqual(events, [
      'warning:normal->warning',
      'critical:warning->critical',
      'recovered:critical->warning',
      'critical:warning->critical',
      'recovered:critical->normal',
    ]);
    const stats = m.stats();
    assert.equal(stats.warnings, 1);
    assert.equal(stats.criticals, 2);
    assert.equal(stats.recoveries, 2);
    assert.equal(stats.checks, 14);
  });

  it('does not repeat a warning on every interval while usage stays high', async () => {
    const { m, heap, events } = manager();
    heap.usage = 0.85;
    for (let i = 0; i < 20; i++) await m.check();
    assert.deepEqual(events, ['warning:normal->warning']);
  });

  it('carries usage, heapUsed and limit in the event', async () => {
    const { m, heap } = manager();
    heap.usage = 0.97;
    const [event] = await Promise.all([once(m, 'critical'), m.check()]);
    assert.deepEqual(event[0], {
      level: 'critical',
      previous: 'normal',
      usage: 0.97,
      heapUsed: 970_000,
      limit: LIMIT,
    });
  });
});

describe('cleanup handlers', () => {
  it('run on entering warning and critical, with the level, once per entry', async () => {
    const { m, heap } = manager();
    const calls: string[] = [];
    m.onCleanup((level) => void calls.push(level));
    heap.usage = 0.85;
    await m.check();
    await m.check();
    heap.usage = 0.99;
    await m.check();
    assert.deepEqual(calls, ['warning', 'critical']);
    assert.equal(m.stats().cleanupRuns, 2);
  });

  it('contain and count errors: a throwing or rejecting handler does not stop the others', async () => {
    const { m, heap } = manager();
    const ran: string[] = [];
    m.onCleanup(() => {
      throw new Error('sync');
    });
    m.onCleanup(async () => {
      throw new Error('async');
    });
    m.onCleanup(async () => void ran.push('third'));
    heap.usage = 0.9;
    assert.equal(await m.check(), 'warning');
    assert.deepEqual(ran, ['third']);
    assert.equal(m.stats().cleanupErrors, 2);
  });

  it('give up on a handler that hangs past cleanupTimeoutMs and count it', async () => {
    const clock = new ManualClock();
    const { m, heap } = manager({ cleanupTimeoutMs: 20, clock });
    let quickRan = false;
    m.onCleanup(() => new Promise<void>(() => {}));
    m.onCleanup(() => {
      quickRan = true;
    });
    heap.usage = 0.9;
    const checked = m.check();
    await clock.advance(20);
    assert.equal(await checked, 'warning');
    assert.equal(quickRan, true);
    assert.equal(m.stats().cleanupTimeouts, 1);
  });

  it('can be removed', async () => {
    const { m, heap } = manager();
    let calls = 0;
    const remove = m.onCleanup(() => void calls++);
    remove();
    heap.usage = 0.9;
    await m.check();
    assert.equal(calls, 0);
  });
});

describe('side effects it must not have', () => {
  it('emits on the instance, never on process', async () => {
    const { m, heap, events } = manager();
    const emitted: (string | symbol)[] = [];
    const original = process.emit;
    process.emit = function (this: NodeJS.Process, event: string | symbol, ...args: unknown[]) {
      emitted.push(event);
      return (original as (...a: unknown[]) => boolean).call(this, event, ...args);
    } as typeof process.emit;
    try {
      heap.usage = 0.99;
      await m.check();
      heap.usage = 0.1;
      await m.check();
    } finally {
      process.emit = original;
    }
    assert.deepEqual(events, ['critical:normal->critical', 'recovered:critical->normal']);
    assert.deepEqual(
      emitted.filter(
        (e) => String(e).includes('memory') || ['warning', 'critical', 'recovered'].includes(String(e)),
      ),
      [],
    );
  });

  it('never calls global.gc, even at critical', async () => {
    const { m, heap } = manager();
    const g = globalThis as { gc?: () => void };
    const saved = g.gc;
    let gcCalls = 0;
    g.gc = () => void gcCalls++;
    try {
      heap.usage = 0.99;
      await m.check();
      m.getMemoryReport();
    } finally {
      if (saved === undefined) delete g.gc;
      else g.gc = saved;
    }
    assert.equal(gcCalls, 0);
  });

  it('contains and counts a listener that throws', async () => {
    const { m, heap } = manager();
    m.on('warning', () => {
      throw new Error('listener');
    });
    heap.usage = 0.85;
    assert.equal(await m.check(), 'warning');
    assert.equal(m.stats().listenerErrors, 1);
  });
});

describe('the timer', () => {
  it('checks every intervalMs by itself', async () => {
    const clock = new ManualClock();
    const { m, heap } = manager({ intervalMs: 5, clock });
    heap.usage = 0.85;
    const warned = once(m, 'warning');
    await clock.advance(4);
    assert.equal(heap.reads, 0, 'no check before intervalMs');
    await clock.advance(1);
    const [event] = (await warned) as [MemoryLevelChange];
    assert.equal(event.level, 'warning');
    await clock.advance(10);
    assert.equal(heap.reads, 3, 'one check per interval');
  });

  it('stops on close(), which is idempotent; later calls reject with ClosedError', async () => {
    const clock = new ManualClock();
    const { m, heap } = manager({ intervalMs: 5, clock });
    await clock.advance(5);
    assert.equal(heap.reads, 1);
    await m.close();
    await clock.advance(30);
    assert.equal(heap.reads, 1, 'no check after close');
    assert.equal(clock.pending, 0, 'no timer left behind');
    await m.close();
    await assert.rejects(m.check(), ClosedError);
    assert.throws(() => m.onCleanup(() => {}), ClosedError);
  });

  it('on the real clock, is unref()ed: a waiting manager never holds the process open', async () => {
    const timers = watchTimers();
    let m: MemoryManager;
    try {
      m = manager({ intervalMs: 60_000 }).m;
    } finally {
      timers.restore();
    }
    assert.equal(timers.set.length, 1);
    assert.equal(timers.set[0]!.hasRef(), false);
    await m.close();
  });
});

describe('the memory report', () => {
  it('holds sizes, usage, level, heap spaces and event-loop utilization', async () => {
    const m = new MemoryManager();
    open.push(m);
    const report = m.getMemoryReport();
    for (const key of ['heapUsed', 'heapTotal', 'rss', 'external', 'arrayBuffers', 'limit'] as const) {
      assert.ok(Number.isFinite(report[key]) && report[key] >= 0, key);
    }
    assert.equal(report.usage, report.heapUsed / report.limit);
    assert.equal(report.level, 'normal');
    assert.ok(report.heapSpaces.old_space !== undefined);
    assert.ok(report.heapSpaces.old_space.used > 0);
    assert.ok(report.eventLoopUtilization >= 0 && report.eventLoopUtilization <= 1);
    for (const [key, value] of Object.entries(m.stats())) assert.equal(typeof value, 'number', key);
    for (const key of m.statsCounters) assert.ok(key in m.stats(), key);
  });
});

describe('options', () => {
  it('throws a TypeError naming the option for bad options', () => {
    const bad: [string, MemoryManagerOptions][] = [
      ['maxHeapBytes', { maxHeapBytes: -1 }],
      ['maxHeapBytes', { maxHeapBytes: Number.NaN }],
      ['warningRatio', { warningRatio: 1.5 }],
      ['warningRatio', { warningRatio: Number.NaN }],
      ['criticalRatio', { criticalRatio: -0.1 }],
      ['criticalRatio', { warningRatio: 0.9, criticalRatio: 0.8 }],
      ['hysteresisRatio', { hysteresisRatio: 0.9 }],
      ['intervalMs', { intervalMs: 0 }],
      ['cleanupTimeoutMs', { cleanupTimeoutMs: -1 }],
      ['memoryUsage', { memoryUsage: 3 as unknown as () => MemoryUsageSample }],
    ];
    for (const [name, options] of bad) {
      assert.throws(
        () => new MemoryManager(options),
        (e: unknown) => e instanceof TypeError && e.message.startsWith(`options.${name} must be`),
        `${name}: ${JSON.stringify(options)}`,
      );
    }
  });
});
