import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import { describe, it } from 'node:test';
import { ClosedError, OverloadedError, QueueTimeoutError } from '../../src/errors.ts';
import { ManualClock } from '../../src/internal/clock.ts';
import { BackpressureController, type Release } from '../../src/resources/index.ts';

/** Lets every pending promise callback run. */
const flush = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Records when a promise settles, so a test can ask whether it has yet. */
function track<T>(promise: Promise<T>) {
  const t = { settled: false, value: undefined as T | undefined, error: undefined as unknown };
  promise.then(
    (value) => {
      t.settled = true;
      t.value = value;
    },
    (error) => {
      t.settled = true;
      t.error = error;
    },
  );
  return t;
}

/** A deterministic PRNG (mulberry32), so the model test replays the same operations every run. */
function prng(seed: number) {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('admission up to maxConcurrency', () => {
  it('admits maxConcurrency callers at once and queues the next', async () => {
    const gate = new BackpressureController({ maxConcurrency: 2 });
    const a = await gate.acquire();
    const b = await gate.acquire();
    const c = track(gate.acquire());
    await flush();
    assert.equal(c.settled, false);
    assert.deepEqual([gate.processing, gate.queued], [2, 1]);
    a();
    await flush();
    assert.equal(c.settled, true);
    assert.deepEqual([gate.processing, gate.queued], [2, 0]);
    b();
    c.value!();
    assert.equal(gate.processing, 0);
    await gate.close();
  });

  it('run() gives the slot back whether fn resolves, rejects, throws or returns a plain value', async () => {
    const gate = new BackpressureController({ maxConcurrency: 1 });
    assert.equal(await gate.run(async () => 'ok'), 'ok');
    await assert.rejects(
      gate.run(async () => {
        throw new Error('boom');
      }),
      /boom/,
    );
    await assert.rejects(
      gate.run(() => {
        throw new Error('sync boom');
      }),
      /sync boom/,
    );
    assert.equal(await gate.run(() => 42), 42);
    assert.equal(gate.processing, 0);
    await gate.close();
  });

  it('run() of a queued fn also gives the slot back on every outcome', async () => {
    const gate = new BackpressureController({ maxConcurrency: 1 });
    const hold = await gate.acquire();
    const ok = gate.run(async () => 'ok');
    const rejects = gate.run(async () => {
      throw new Error('boom');
    });
    const throws = gate.run(() => {
      throw new Error('sync boom');
    });
    const plain = gate.run(() => 7);
    assert.equal(gate.queued, 4);
    hold();
    assert.equal(await ok, 'ok');
    await assert.rejects(rejects, /boom/);
    await assert.rejects(throws, /sync boom/);
    assert.equal(await plain, 7);
    assert.deepEqual([gate.processing, gate.queued], [0, 0]);
    await gate.close();
  });

  it('releasing twice is a no-op: it frees one slot, not two', async () => {
    const gate = new BackpressureController({ maxConcurrency: 1 });
    const release = await gate.acquire();
    const w1 = track(gate.acquire());
    const w2 = track(gate.acquire());
    release();
    release();
    await flush();
    assert.equal(w1.settled, true);
    assert.equal(w2.settled, false, 'a second release must not admit another waiter');
    assert.equal(gate.processing, 1);
    w1.value!();
    await flush();
    w2.value!();
    w2.value!();
    assert.equal(gate.processing, 0, 'processing never goes negative');
    await gate.close();
  });
});

describe('the queue bound', () => {
  it('counts waiters apart from running calls and refuses the one past maxQueueSize at once', async () => {
    const gate = new BackpressureController({ maxConcurrency: 2, maxQueueSize: 3 });
    const running = [await gate.acquire(), await gate.acquire()];
    const waiting = [gate.acquire(), gate.acquire(), gate.acquire()];
    assert.deepEqual([gate.processing, gate.queued], [2, 3]);
    const error = await gate.acquire().then(
      () => assert.fail('should be refused'),
      (e: unknown) => e,
    );
    assert.ok(error instanceof OverloadedError);
    assert.equal(error.code, 'ERR_CLAWPERF_OVERLOADED');
    assert.equal(error.queueSize, 3);
    assert.equal(error.maxQueueSize, 3);
    assert.ok(error.retryAfterMs >= 1);
    assert.equal(gate.stats().rejected, 1);
    for (const r of running) r();
    for (const w of waiting) (await w)();
    assert.deepEqual([gate.processing, gate.queued], [0, 0]);
    await gate.close();
  });

  it('with maxQueueSize 0 refuses as soon as every slot is taken', async () => {
    const gate = new BackpressureController({ maxConcurrency: 1, maxQueueSize: 0 });
    const release = await gate.acquire();
    await assert.rejects(
      gate.run(async () => 1),
      OverloadedError,
    );
    release();
    assert.equal(await gate.run(async () => 1), 1);
    await gate.close();
  });

  it('retryAfterMs is the time until the oldest waiter times out before anyone has been admitted', async () => {
    const clock = new ManualClock();
    const gate = new BackpressureController({
      maxConcurrency: 1,
      maxQueueSize: 1,
      queueTimeoutMs: 300,
      clock,
    });
    const release = await gate.acquire();
    const waiting = gate.acquire();
    await clock.advance(100);
    const error = await gate.acquire().catch((e: OverloadedError) => e);
    assert.ok(error instanceof OverloadedError);
    assert.equal(error.retryAfterMs, 200);
    release();
    (await waiting)();
    await gate.close();
  });

  it('retryAfterMs follows the queue wait callers have seen', async () => {
    const clock = new ManualClock();
    const gate = new BackpressureController({ maxConcurrency: 1, maxQueueSize: 1, clock });
    for (let i = 0; i < 30; i++) {
      const release = await gate.acquire();
      const next = gate.acquire();
      await clock.advance(200);
      release();
      (await next)();
    }
    const release = await gate.acquire();
    const waiting = gate.acquire();
    const error = await gate.acquire().catch((e: OverloadedError) => e);
    assert.ok(error instanceof OverloadedError);
    assert.ok(error.retryAfterMs >= 100 && error.retryAfterMs <= 200, `retryAfterMs ${error.retryAfterMs}`);
    release();
    (await waiting)();
    await gate.close();
  });
});

describe('fairness', () => {
  it('serves waiters first-in first-out', async () => {
    const gate = new BackpressureController({ maxConcurrency: 1 });
    const hold = await gate.acquire();
    const order: number[] = [];
    const all = Array.from({ length: 20 }, (_, i) =>
      gate.run(async () => {
        order.push(i);
      }),
    );
    hold();
    await Promise.all(all);
    assert.deepEqual(
      order,
      Array.from({ length: 20 }, (_, i) => i),
    );
    await gate.close();
  });

  it('hands a released slot to the oldest waiter: a newcomer in the same tick cannot barge', async () => {
    const gate = new BackpressureController({ maxConcurrency: 1 });
    const hold = await gate.acquire();
    const order: string[] = [];
    const waiter = gate.run(async () => void order.push('waiter'));
    hold();
    const newcomer = gate.run(async () => void order.push('newcomer'));
    assert.equal(gate.queued, 1, 'the newcomer queues even though a slot was just released');
    await Promise.all([waiter, newcomer]);
    assert.deepEqual(order, ['waiter', 'newcomer']);
    await gate.close();
  });

  it('serves higher priorities first and first-in first-out within a priority', async () => {
    const gate = new BackpressureController({ maxConcurrency: 1 });
    const hold = await gate.acquire();
    const order: string[] = [];
    const add = (name: string, priority?: number) =>
      gate.run(async () => void order.push(name), priority === undefined ? undefined : { priority });
    const all = [
      add('a0'),
      add('b5', 5),
      add('c-1', -1),
      add('d5', 5),
      add('e0', 0),
      add('f9', 9),
      add('g-1', -1),
    ];
    hold();
    await Promise.all(all);
    assert.deepEqual(order, ['f9', 'b5', 'd5', 'a0', 'e0', 'c-1', 'g-1']);
    await gate.close();
  });

  it('reuses a priority level after it has emptied', async () => {
    const gate = new BackpressureController({ maxConcurrency: 1 });
    for (let round = 0; round < 3; round++) {
      const hold = await gate.acquire();
      const order: number[] = [];
      const all = [3, 7, 3, 7].map((p, i) => gate.run(async () => void order.push(i), { priority: p }));
      hold();
      await Promise.all(all);
      assert.deepEqual(order, [1, 3, 0, 2]);
    }
    await gate.close();
  });
});

describe('queue timeout', () => {
  it('refuses a waiter with QueueTimeoutError after queueTimeoutMs and frees its place', async () => {
    const clock = new ManualClock();
    const gate = new BackpressureController({
      maxConcurrency: 1,
      maxQueueSize: 1,
      queueTimeoutMs: 100,
      clock,
    });
    const hold = await gate.acquire();
    const waiter = track(gate.acquire());
    await assert.rejects(gate.acquire(), OverloadedError);
    await clock.advance(99);
    assert.equal(waiter.settled, false);
    await clock.advance(1);
    assert.ok(waiter.error instanceof QueueTimeoutError);
    assert.equal((waiter.error as QueueTimeoutError).timeoutMs, 100);
    assert.equal(gate.queued, 0);
    const next = track(gate.acquire());
    assert.equal(gate.queued, 1, 'the freed place takes a new waiter');
    hold();
    await flush();
    assert.equal(next.settled, true);
    assert.equal(gate.processing, 1, 'the timed-out waiter never took a slot');
    next.value!();
    assert.equal(gate.stats().timedOut, 1);
    await gate.close();
  });

  it('uses one timer for all waiters and does not poll', async () => {
    const clock = new ManualClock();
    const gate = new BackpressureController({ maxConcurrency: 1, queueTimeoutMs: 1_000, clock });
    const hold = await gate.acquire();
    const waiters = Array.from({ length: 500 }, () => track(gate.acquire()));
    assert.equal(clock.pending, 1, 'one timer for 500 waiters');
    await clock.advance(999);
    assert.equal(clock.pending, 1, 'nothing fired while no deadline passed');
    assert.equal(gate.stats().timedOut, 0);
    await clock.advance(1);
    assert.equal(gate.stats().timedOut, 500);
    assert.ok(waiters.every((w) => w.error instanceof QueueTimeoutError));
    assert.equal(clock.pending, 0, 'no timer left once the queue is empty');
    hold();
    await gate.close();
  });

  it('times waiters out on the real clock too, with an unref()ed timer that never holds the process open', async () => {
    const gate = new BackpressureController({ maxConcurrency: 1, queueTimeoutMs: 20 });
    const hold = await gate.acquire();
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const before = timers();
    const waiters = Array.from({ length: 50 }, (_, i) =>
      gate.acquire(i % 2 ? { timeoutMs: 10 + i } : undefined),
    );
    assert.equal(timers(), before, 'no timer that keeps the process alive');
    // The gate's own timer is unref()ed: the test keeps the loop alive while it waits.
    const keepAlive = setInterval(() => {}, 1_000);
    const outcomes = await Promise.allSettled(waiters);
    clearInterval(keepAlive);
    assert.ok(outcomes.every((o) => o.status === 'rejected' && o.reason instanceof QueueTimeoutError));
    assert.equal(gate.stats().timedOut, 50);
    hold();
    await gate.close();
  });

  it('honours per-call timeoutMs, shortest deadline first, next to the default', async () => {
    const clock = new ManualClock();
    const gate = new BackpressureController({ maxConcurrency: 1, queueTimeoutMs: 500, clock });
    const hold = await gate.acquire();
    const expired: string[] = [];
    const add = (name: string, timeoutMs?: number) =>
      gate.acquire(timeoutMs === undefined ? undefined : { timeoutMs }).catch((e) => {
        assert.ok(e instanceof QueueTimeoutError);
        expired.push(`${name}@${clock.now()}`);
      });
    const all = [add('default'), add('t300', 300), add('t100', 100), add('t900', 900), add('t200', 200)];
    await clock.advance(1_000);
    await Promise.all(all);
    assert.deepEqual(expired, ['t100@100', 't200@200', 't300@300', 'default@500', 't900@900']);
    hold();
    await gate.close();
  });

  it('admits a waiter whose slot frees before its deadline, and then no timeout fires for it', async () => {
    const clock = new ManualClock();
    const gate = new BackpressureController({ maxConcurrency: 1, queueTimeoutMs: 100, clock });
    const hold = await gate.acquire();
    const waiter = track(gate.acquire({ timeoutMs: 50 }));
    await clock.advance(10);
    hold();
    await clock.advance(200);
    assert.equal(typeof waiter.value, 'function');
    assert.equal(gate.stats().timedOut, 0);
    waiter.value!();
    await gate.close();
  });
});

describe('abort', () => {
  it('removes an aborted waiter, rejects it with signal.reason and frees its place', async () => {
    const gate = new BackpressureController({ maxConcurrency: 1, maxQueueSize: 1 });
    const hold = await gate.acquire();
    const controller = new AbortController();
    const waiter = gate.acquire({ signal: controller.signal });
    const reason = new Error('client went away');
    controller.abort(reason);
    await assert.rejects(waiter, (e) => e === reason);
    assert.equal(gate.queued, 0);
    assert.equal(getEventListeners(controller.signal, 'abort').length, 0);
    const next = gate.acquire();
    hold();
    (await next)();
    assert.equal(gate.processing, 0);
    assert.equal(gate.stats().aborted, 1);
    await gate.close();
  });

  it('rejects at once when the signal has already aborted, even with a slot free', async () => {
    const gate = new BackpressureController({ maxConcurrency: 1 });
    const signal = AbortSignal.abort(new Error('too late'));
    let ran = false;
    await assert.rejects(
      gate.run(
        async () => {
          ran = true;
        },
        { signal },
      ),
      /too late/,
    );
    assert.equal(ran, false);
    assert.equal(gate.processing, 0);
    await gate.close();
  });

  it('stops listening to the signal once the waiter is admitted or timed out', async () => {
    const clock = new ManualClock();
    const gate = new BackpressureController({ maxConcurrency: 1, queueTimeoutMs: 100, clock });
    const hold = await gate.acquire();
    const controller = new AbortController();
    const admitted = gate.acquire({ signal: controller.signal });
    hold();
    const release = await admitted;
    assert.equal(getEventListeners(controller.signal, 'abort').length, 0);
    const timedOut = gate.acquire({ signal: controller.signal });
    await clock.advance(100);
    await assert.rejects(timedOut, QueueTimeoutError);
    assert.equal(getEventListeners(controller.signal, 'abort').length, 0);
    controller.abort();
    release();
    assert.equal(gate.stats().aborted, 0);
    await gate.close();
  });
});

describe('close', () => {
  it('refuses every waiter and every later call with ClosedError, and is idempotent', async () => {
    const gate = new BackpressureController({ maxConcurrency: 1 });
    const hold = await gate.acquire();
    const waiters = [gate.acquire(), gate.run(async () => 1), gate.acquire({ priority: 3 })];
    await gate.close();
    for (const w of waiters) await assert.rejects(w, ClosedError);
    await assert.rejects(gate.acquire(), ClosedError);
    await assert.rejects(
      gate.run(async () => 1),
      ClosedError,
    );
    await gate.close();
    hold();
    assert.equal(gate.processing, 0);
  });

  it('clears the timeout timer so nothing fires after close', async () => {
    const clock = new ManualClock();
    const gate = new BackpressureController({ maxConcurrency: 1, queueTimeoutMs: 100, clock });
    await gate.acquire();
    const waiter = gate.acquire().catch((e) => e);
    await gate.close();
    assert.ok((await waiter) instanceof ClosedError);
    await clock.advance(1_000);
    assert.equal(gate.stats().timedOut, 0);
  });
});

describe('stats', () => {
  it('holds numbers only, lists its growing fields, and counts queue wait time', async () => {
    const clock = new ManualClock();
    const gate = new BackpressureController({ maxConcurrency: 1, clock });
    const hold = await gate.acquire();
    const next = gate.acquire();
    await clock.advance(40);
    hold();
    (await next)();
    const stats = gate.stats();
    for (const [key, value] of Object.entries(stats)) assert.equal(typeof value, 'number', key);
    for (const key of gate.statsCounters.filter((k) => !k.startsWith('adaptive_')))
      assert.ok(key in stats, key);
    assert.equal(stats.admitted, 2);
    assert.equal(stats.queuedTotal, 1);
    assert.equal(stats.admittedAfterWait, 1);
    assert.equal(stats.queueWaitMsTotal, 40);
    assert.equal(stats.processing, 0);
    assert.equal(stats.limit, 1);
    await gate.close();
  });
});

describe('the system clock', () => {
  it('never reuses a clock reading across a wait for timers or I/O', async () => {
    const gate = new BackpressureController({ maxConcurrency: 1 });
    const hold = await gate.acquire();
    // Enqueue from an immediate callback, then release from a timer callback 30 ms later: a reading cached
    // in the first must not stand in for the time in the second.
    const { waiter } = await new Promise<{ waiter: Promise<Release> }>((resolve) =>
      setImmediate(() => resolve({ waiter: gate.acquire() })),
    );
    await new Promise<void>((resolve) =>
      setTimeout(() => {
        hold();
        resolve();
      }, 30),
    );
    (await waiter)();
    assert.ok(gate.stats().queueWaitMsTotal >= 25, `measured ${gate.stats().queueWaitMsTotal} ms`);
    await gate.close();
  });
});

describe('options', () => {
  it('throws a TypeError naming the option for bad constructor options', () => {
    const bad: [string, object][] = [
      ['maxConcurrency', { maxConcurrency: 0 }],
      ['maxConcurrency', { maxConcurrency: -1 }],
      ['maxConcurrency', { maxConcurrency: Number.NaN }],
      ['maxConcurrency', { maxConcurrency: 2.5 }],
      ['maxConcurrency', { maxConcurrency: 'fast' }],
      ['maxQueueSize', { maxQueueSize: -1 }],
      ['maxQueueSize', { maxQueueSize: Number.NaN }],
      ['maxQueueSize', { maxQueueSize: 1.5 }],
      ['queueTimeoutMs', { queueTimeoutMs: 0 }],
      ['queueTimeoutMs', { queueTimeoutMs: -5 }],
      ['queueTimeoutMs', { queueTimeoutMs: Number.POSITIVE_INFINITY }],
      ['clock', { clock: {} }],
      ['maxConcurrency.minLimit', { maxConcurrency: { minLimit: 0 } }],
      ['maxConcurrency.smoothing', { maxConcurrency: { smoothing: 2 } }],
    ];
    for (const [name, options] of bad) {
      assert.throws(
        () => new BackpressureController(options),
        (e: unknown) => e instanceof TypeError && e.message.startsWith(`options.${name} must be`),
        `${name}: ${JSON.stringify(options)}`,
      );
    }
  });

  it('rejects with a TypeError naming the per-call option', async () => {
    const gate = new BackpressureController({ maxConcurrency: 1 });
    await assert.rejects(gate.acquire({ priority: Number.NaN }), /^TypeError: options\.priority must be/);
    await assert.rejects(gate.acquire({ timeoutMs: -1 }), /^TypeError: options\.timeoutMs must be/);
    await assert.rejects(gate.acquire({ signal: {} as AbortSignal }), /^TypeError: options\.signal must be/);
    await assert.rejects(gate.run(undefined as unknown as () => void), /^TypeError: fn/);
    assert.equal(gate.processing, 0);
    await gate.close();
  });
});

describe('the queue against a reference model', () => {
  it('admits, times out and aborts exactly as a plain sorted list would, over 3,000 random operations', async () => {
    const random = prng(42);
    const clock = new ManualClock();
    const gate = new BackpressureController({
      maxConcurrency: 3,
      maxQueueSize: 40,
      queueTimeoutMs: 50,
      clock,
    });
    interface Entry {
      id: number;
      priority: number;
      deadline: number;
      abort: AbortController;
    }
    const model: Entry[] = [];
    let modelRunning = 0;
    const holders: Release[] = [];
    const admitted: number[] = [];
    const expected: number[] = [];
    let rejected = 0;
    let expectedRejected = 0;
    let id = 0;
    const admitFromModel = () => {
      while (modelRunning < 3 && model.length > 0) {
        let best = 0;
        for (let i = 1; i < model.length; i++) if (model[i]!.priority > model[best]!.priority) best = i;
        expected.push(model.splice(best, 1)[0]!.id);
        modelRunning++;
      }
    };
    for (let step = 0; step < 3_000; step++) {
      const r = random();
      if (r < 0.5) {
        const entry: Entry = {
          id: id++,
          priority: Math.floor(random() * 3),
          deadline: 0,
          abort: new AbortController(),
        };
        const timeoutMs = random() < 0.3 ? 10 + Math.floor(random() * 60) : 50;
        entry.deadline = clock.now() + timeoutMs;
        if (modelRunning < 3 && model.length === 0) {
          expected.push(entry.id);
          modelRunning++;
        } else if (model.length >= 40) expectedRejected++;
        else model.push(entry);
        gate
          .acquire({ priority: entry.priority, timeoutMs, signal: entry.abort.signal })
          .then((release) => {
            admitted.push(entry.id);
            holders.push(release);
          })
          .catch((e) => {
            if (e instanceof OverloadedError) rejected++;
          });
      } else if (r < 0.8) {
        if (holders.length > 0) {
          await flush();
          holders.splice(Math.floor(random() * holders.length), 1)[0]!();
          modelRunning--;
          admitFromModel();
        }
      } else if (r < 0.9 && model.length > 0) {
        const victim = model.splice(Math.floor(random() * model.length), 1)[0]!;
        victim.abort.abort();
      } else {
        const ms = Math.floor(random() * 20);
        await clock.advance(ms);
        for (let i = model.length - 1; i >= 0; i--) if (model[i]!.deadline <= clock.now()) model.splice(i, 1);
      }
      await flush();
      assert.equal(gate.queued, model.length, `queued at step ${step}`);
    }
    await flush();
    assert.deepEqual(admitted, expected);
    assert.equal(rejected, expectedRejected);
    assert.ok(expected.length > 500, `a meaningful run (${expected.length} admissions)`);
    for (const release of holders) release();
    await gate.close();
  });
});
