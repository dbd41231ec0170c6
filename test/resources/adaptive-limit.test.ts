import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ManualClock } from '../../src/internal/clock.ts';
import { AdaptiveLimit, BackpressureController } from '../../src/resources/index.ts';

/**
 * The dependency from the issue, on simulated time: a call takes 10 ms while at most 20 calls are in
 * flight, plus 2 ms for every call beyond 20.
 */
function simulatedDependency(clock: ManualClock) {
  let inFlight = 0;
  return async () => {
    inFlight++;
    await clock.sleep(10 + 2 * Math.max(0, inFlight - 20));
    inFlight--;
  };
}

const percentile = (values: number[], p: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!;
};

/** 200 callers, each calling the dependency through the controller again as soon as its call returns. */
async function underSteadyLoad(initialLimit: number) {
  const clock = new ManualClock();
  const gate = new BackpressureController({
    maxConcurrency: { initialLimit },
    maxQueueSize: 1_000,
    queueTimeoutMs: 60_000,
    clock,
  });
  const dependency = simulatedDependency(clock);
  let stop = false;
  const waits: { at: number; ms: number }[] = [];
  const caller = async () => {
    while (!stop) {
      const queuedAt = clock.now();
      await gate.run(async () => {
        waits.push({ at: clock.now(), ms: clock.now() - queuedAt });
        await dependency();
      });
    }
  };
  const callers = Array.from({ length: 200 }, caller);
  const limits: { at: number; limit: number }[] = [];
  while (clock.now() < 20_000) {
    await clock.advance(100);
    limits.push({ at: clock.now(), limit: gate.limit });
  }
  stop = true;
  await clock.advance(10_000);
  await Promise.all(callers);
  const stats = gate.stats();
  await gate.close();
  return { limits, waits, stats };
}

describe('adaptive limit against the simulated dependency (200 callers, 10 ms up to 20 in flight, +2 ms each beyond)', () => {
  for (const initialLimit of [5, 100]) {
    it(`settles between 15 and 30 within 10 simulated seconds from a limit of ${initialLimit}, and stays`, async () => {
      const { limits, waits, stats } = await underSteadyLoad(initialLimit);
      const settled = limits.filter((l) => l.at >= 10_000);
      const outside = settled.filter((l) => l.limit < 15 || l.limit > 30);
      assert.deepEqual(outside, [], `limits from 10 s to 20 s: ${settled.map((l) => l.limit).join(',')}`);
      const firstSecond = limits.filter((l) => l.at <= 1_000).map((l) => l.limit);
      assert.ok(firstSecond.includes(initialLimit), `starts from ${initialLimit}: ${firstSecond.join(',')}`);
      assert.equal(stats.adaptive_baselineMs, 10, 'the baseline is the no-load latency');
      assert.equal(stats.rejected + stats.timedOut, 0);
      // Queue wait stays bounded: with the limit in [15, 30] and calls of 10-30 ms, 200 callers wait at most
      // about 200 / 15 * 30 ms = 400 ms; the second half of the run is no worse than the first.
      const first = percentile(
        waits.filter((w) => w.at >= 10_000 && w.at < 15_000).map((w) => w.ms),
        0.99,
      );
      const second = percentile(
        waits.filter((w) => w.at >= 15_000 && w.at < 20_000).map((w) => w.ms),
        0.99,
      );
      assert.ok(first <= 400 && second <= 400, `queue wait p99 ${first} ms then ${second} ms`);
      assert.ok(second <= first * 1.2, `queue wait p99 grew from ${first} ms to ${second} ms`);
    });
  }
});

describe('adaptive limit through acquire()', () => {
  it('measures the time a slot is held, from admission to release', async () => {
    const clock = new ManualClock();
    const gate = new BackpressureController({
      maxConcurrency: { initialLimit: 8, minLimit: 2, probeSamples: 4 },
      clock,
    });
    assert.equal(gate.limit, 2, 'the baseline is measured at minLimit');
    for (let i = 0; i < 4; i++) {
      const release = await gate.acquire();
      await clock.advance(25);
      release();
      release();
    }
    const stats = gate.stats();
    assert.equal(stats.adaptive_baselineMs, 25);
    assert.equal(stats.adaptive_probes, 1);
    assert.equal(gate.limit, 8);
    assert.equal(stats.processing, 0);
    await gate.close();
  });
});

/** Feeds `n` samples of `rttMs` each, one every ms, with `inFlight` calls running; returns the end time. */
function feed(limit: AdaptiveLimit, from: number, n: number, rttMs: number, inFlight: number): number {
  let t = from;
  for (let i = 0; i < n; i++) {
    t += 1;
    limit.onSample(t - rttMs, t, inFlight);
  }
  return t;
}

describe('AdaptiveLimit', () => {
  it('holds concurrency at minLimit until the baseline is measured, then uses initialLimit', () => {
    const limit = new AdaptiveLimit({ initialLimit: 40, minLimit: 3, probeSamples: 50 });
    assert.equal(limit.limit, 3);
    assert.equal(limit.probing, true);
    feed(limit, 0, 49, 10, 3);
    assert.equal(limit.limit, 3);
    feed(limit, 49, 1, 10, 3);
    assert.equal(limit.probing, false);
    assert.equal(limit.limit, 40);
    assert.equal(limit.stats().baselineMs, 10);
  });

  it('grows while latency stays at the baseline and the limit is in use, up to maxLimit', () => {
    const limit = new AdaptiveLimit({ initialLimit: 10, maxLimit: 50, probeIntervalMs: 1e9 });
    let t = feed(limit, 0, 50, 10, 3);
    let previous = limit.limit;
    for (let i = 0; i < 40; i++) {
      t = feed(limit, t, 110, 10, limit.limit);
      assert.ok(limit.limit >= previous);
      previous = limit.limit;
    }
    assert.equal(limit.limit, 50);
  });

  it('does not grow while the limit is not in use', () => {
    const limit = new AdaptiveLimit({ initialLimit: 20, probeIntervalMs: 1e9 });
    let t = feed(limit, 0, 50, 10, 3);
    for (let i = 0; i < 20; i++) t = feed(limit, t, 110, 10, 4);
    assert.equal(limit.limit, 20);
  });

  it('shrinks when latency rises over the baseline, never below minLimit', () => {
    const limit = new AdaptiveLimit({ initialLimit: 100, minLimit: 5, probeIntervalMs: 1e9 });
    let t = feed(limit, 0, 50, 10, 3);
    let previous = limit.limit;
    for (let i = 0; i < 60; i++) {
      t = feed(limit, t, 110, 100, limit.limit);
      assert.ok(limit.limit <= previous);
      previous = limit.limit;
    }
    assert.equal(limit.limit, 5);
  });

  it('measures the baseline again after probeIntervalMs, ignoring calls started before the probe', () => {
    const limit = new AdaptiveLimit({ initialLimit: 20, probeIntervalMs: 1_000, probeJitterRatio: 0 });
    let t = feed(limit, 0, 50, 10, 3);
    assert.equal(limit.stats().baselineMs, 10);
    while (!limit.probing) t = feed(limit, t, 10, 10, limit.limit);
    assert.ok(t >= 1_000);
    assert.equal(limit.limit, limit.minLimit);
    // Calls that started before the probe ran at full concurrency: they must not count.
    for (let i = 0; i < 60; i++) limit.onSample(t - 500, t + i, 3);
    assert.equal(limit.probing, true);
    t = feed(limit, t + 100, 50, 30, 3);
    assert.equal(limit.probing, false);
    assert.equal(limit.stats().baselineMs, 30, 'the dependency got slower: the baseline follows');
    assert.equal(limit.stats().probes, 2);
  });

  it('throws a TypeError naming the option for bad options', () => {
    const bad: [string, object][] = [
      ['minLimit', { minLimit: 0 }],
      ['maxLimit', { minLimit: 10, maxLimit: 5 }],
      ['initialLimit', { initialLimit: 2000 }],
      ['initialLimit', { initialLimit: Number.NaN }],
      ['updateIntervalMs', { updateIntervalMs: -1 }],
      ['bufferRatio', { bufferRatio: Number.NaN }],
      ['smoothing', { smoothing: 0 }],
      ['smoothing', { smoothing: 1.5 }],
      ['probeSamples', { probeSamples: 0 }],
      ['probeJitterRatio', { probeJitterRatio: 2 }],
      ['random', { random: 5 }],
    ];
    for (const [name, options] of bad) {
      assert.throws(
        () => new AdaptiveLimit(options),
        (e: unknown) => e instanceof TypeError && e.message.startsWith(`options.${name} must be`),
        `${name}: ${JSON.stringify(options)}`,
      );
    }
  });
});

describe('failures and the adaptive limit', () => {
  class Overloaded extends Error {}

  /** A gate whose baseline (10 ms calls) is measured, then 1,000 calls of `task`, 20 at a time. */
  async function after(task: (clock: ManualClock) => Promise<void>) {
    const clock = new ManualClock();
    const gate = new BackpressureController({
      maxConcurrency: 'adaptive',
      maxQueueSize: 10_000,
      clock,
      overloaded: (error) => error instanceof Overloaded,
    });
    /** Runs `n` calls of `fn` through the gate, moving the clock until every one has ended. */
    const batch = async (n: number, fn: () => Promise<void>) => {
      let ended = 0;
      for (let i = 0; i < n; i++) {
        gate
          .run(fn)
          .catch(() => {})
          .finally(() => {
            ended++;
          });
      }
      while (ended < n) await clock.advance(5);
    };
    // The baseline: 10 ms calls until it is measured and the limit has left its probing floor.
    for (let i = 0; i < 20 && (gate.stats().adaptive_updates ?? 0) === 0; i++) {
      await batch(30, () => clock.sleep(10));
    }
    const before = gate.limit;
    for (let round = 0; round < 50; round++) await batch(20, () => task(clock));
    const limit = gate.limit;
    await gate.close();
    return { before, limit };
  }

  it('does not count instant failures (an outage) as fast calls that raise the limit', async () => {
    const instant = await after(async () => {
      throw new Error('503 at once');
    });
    assert.equal(instant.limit, instant.before);
    // The same number of instant successes does raise it: the failures were left out, not the calls.
    const fast = await after(async () => {});
    assert.ok(fast.limit > fast.before, `${fast.before} -> ${fast.limit}`);
  });

  it('halves the limit on refusals for overload, once per update interval however many come at once', async () => {
    const clock = new ManualClock();
    const limit = new AdaptiveLimit({
      initialLimit: 40,
      minLimit: 3,
      probeSamples: 1,
      updateIntervalMs: 100,
    });
    limit.onSample(clock.now(), clock.now() + 10, 1);
    assert.equal(limit.limit, 40);
    for (let i = 0; i < 10; i++) limit.onDrop(clock.now() + 10);
    assert.equal(limit.limit, 20);
    limit.onDrop(clock.now() + 110);
    assert.equal(limit.limit, 10);
    for (let i = 0; i < 5; i++) limit.onDrop(clock.now() + 210 + 100 * i);
    assert.equal(limit.limit, 3, 'never below minLimit');
  });

  it('lowers the limit of a gate whose calls are refused for overload', async () => {
    const refused = await after(async () => {
      throw new Overloaded('503 overloaded');
    });
    assert.ok(refused.limit < refused.before, `${refused.before} -> ${refused.limit}`);
  });

  it('counts a slow failure (a timeout) like a slow call', async () => {
    const slow = await after(async (clock) => {
      await clock.sleep(100);
      throw new Error('timed out');
    });
    assert.ok(slow.limit < slow.before, `${slow.before} -> ${slow.limit}`);
  });
});
