import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CircuitOpenError } from '../../src/errors.ts';
import { CIRCUIT_STATE_CODE, CircuitBreaker, type CircuitState } from '../../src/internal/circuit-breaker.ts';
import { ManualClock } from '../../src/internal/clock.ts';

const fail = () => Promise.reject(new Error('down'));
const ok = () => Promise.resolve('up');

function breaker(clock = new ManualClock()) {
  const changes: string[] = [];
  const b = new CircuitBreaker({
    name: 'redis',
    failureThreshold: 3,
    cooldownMs: 1_000,
    clock,
    onStateChange: (s: CircuitState, p: CircuitState) => changes.push(`${p}->${s}`),
  });
  return { b, clock, changes };
}

describe('CircuitBreaker', () => {
  it('defaults to 5 failures and a 5 s cooldown', async () => {
    const clock = new ManualClock();
    const b = new CircuitBreaker({ clock });
    for (let i = 0; i < 4; i++) await assert.rejects(b.run(fail), /down/);
    assert.equal(b.state, 'closed');
    await assert.rejects(b.run(fail), /down/);
    assert.equal(b.state, 'open');
    await clock.advance(4_999);
    assert.equal(b.state, 'open');
    await clock.advance(1);
    assert.equal(b.state, 'half-open');
  });

  it('opens after the threshold of consecutive failures, and a success resets the count', async () => {
    const { b } = breaker();
    await assert.rejects(b.run(fail));
    await assert.rejects(b.run(fail));
    await b.run(ok);
    await assert.rejects(b.run(fail));
    await assert.rejects(b.run(fail));
    assert.equal(b.state, 'closed');
    await assert.rejects(b.run(fail));
    assert.equal(b.state, 'open');
  });

  it('refuses calls while open without calling the dependency', async () => {
    const { b } = breaker();
    for (let i = 0; i < 3; i++) await assert.rejects(b.run(fail));
    let called = 0;
    const error = await b
      .run(async () => {
        called++;
      })
      .catch((e: unknown) => e);
    assert.ok(error instanceof CircuitOpenError);
    assert.equal(error.retryAfterMs, 1_000);
    assert.equal(called, 0);
    assert.equal(b.stats().rejected, 1);
  });

  it('lets exactly one probe through when half-open; its success closes the circuit', async () => {
    const { b, clock, changes } = breaker();
    for (let i = 0; i < 3; i++) await assert.rejects(b.run(fail));
    await clock.advance(1_000);
    const probe = b.acquire();
    assert.ok(probe);
    assert.equal(b.acquire(), undefined, 'a second caller during the probe is refused');
    probe.success();
    assert.equal(b.state, 'closed');
    assert.deepEqual(changes, ['closed->open', 'open->half-open', 'half-open->closed']);
  });

  it('reopens for a new cooldown when the probe fails', async () => {
    const { b, clock } = breaker();
    for (let i = 0; i < 3; i++) await assert.rejects(b.run(fail));
    await clock.advance(1_000);
    await assert.rejects(b.run(fail), /down/);
    assert.equal(b.state, 'open');
    assert.equal(b.retryAfterMs(), 1_000);
    assert.equal(b.stats().opens, 2);
  });

  it('reports its state as a number in stats()', async () => {
    const { b } = breaker();
    assert.equal(b.stats().state, CIRCUIT_STATE_CODE.closed);
    for (let i = 0; i < 3; i++) await assert.rejects(b.run(fail));
    assert.deepEqual(b.stats(), {
      state: CIRCUIT_STATE_CODE.open,
      failures: 3,
      successes: 0,
      rejected: 0,
      opens: 1,
    });
    for (const v of Object.values(b.stats())) assert.equal(typeof v, 'number');
  });

  it('contains a throwing state listener', async () => {
    const b = new CircuitBreaker({
      failureThreshold: 1,
      onStateChange: () => {
        throw new Error('listener bug');
      },
    });
    await assert.rejects(b.run(fail), /down/);
    assert.equal(b.state, 'open');
  });

  it('rejects bad options with a TypeError naming the option', () => {
    assert.throws(
      () => new CircuitBreaker({ failureThreshold: 0 }),
      /options\.failureThreshold must be an integer >= 1, got 0/,
    );
    assert.throws(
      () => new CircuitBreaker({ cooldownMs: -5 }),
      /options\.cooldownMs must be a finite number >= 0, got -5/,
    );
    assert.throws(
      () => new CircuitBreaker({ probeLeaseMs: Number.NaN }),
      /options\.probeLeaseMs must be a finite number >= 0, got NaN/,
    );
  });
});

describe('CircuitBreaker probes cannot wedge the circuit', () => {
  async function halfOpen(probeLeaseMs?: number) {
    const clock = new ManualClock();
    const b = new CircuitBreaker({ failureThreshold: 1, cooldownMs: 1_000, probeLeaseMs, clock });
    await assert.rejects(b.run(fail));
    await clock.advance(1_000);
    return { b, clock };
  }

  it('a released probe (no verdict: a 429, a caller that gave up) lets the next caller probe', async () => {
    const { b } = await halfOpen();
    const probe = b.acquire();
    assert.ok(probe);
    probe.release();
    assert.equal(b.state, 'half-open');
    const next = b.acquire();
    assert.ok(next, 'the slot is free again');
    next.success();
    assert.equal(b.state, 'closed');
  });

  it('a probe that never reports loses its slot when its lease runs out', async () => {
    const { b, clock } = await halfOpen(300);
    assert.ok(b.acquire(), 'the probe, which is then forgotten');
    await clock.advance(299);
    assert.equal(b.acquire(), undefined, 'refused while the lease holds');
    await clock.advance(1);
    const next = b.acquire();
    assert.ok(next, 'the next caller probes once the lease ran out');
    next.success();
    assert.equal(b.state, 'closed');
  });

  it('the lease defaults to the cooldown', async () => {
    const { b, clock } = await halfOpen();
    assert.ok(b.acquire());
    await clock.advance(999);
    assert.equal(b.acquire(), undefined);
    await clock.advance(1);
    assert.ok(b.acquire());
  });

  it('an expired probe that reports late decides nothing', async () => {
    const { b, clock } = await halfOpen(100);
    const late = b.acquire();
    assert.ok(late);
    await clock.advance(100);
    const current = b.acquire();
    assert.ok(current);
    late.failure();
    assert.equal(b.state, 'half-open', 'the late failure did not reopen the circuit');
    assert.equal(b.acquire(), undefined, 'and did not free the current probe');
    current.success();
    assert.equal(b.state, 'closed');
  });

  it('only the first report of a permit counts, so release() in a finally is safe', async () => {
    const { b } = await halfOpen();
    const probe = b.acquire();
    assert.ok(probe);
    probe.failure();
    probe.release();
    probe.success();
    assert.equal(b.state, 'open');
    assert.equal(b.stats().failures, 2);
    assert.equal(b.stats().successes, 0);
  });

  it('a call let through while closed cannot close or reopen a half-open circuit', async () => {
    const clock = new ManualClock();
    const b = new CircuitBreaker({ failureThreshold: 2, cooldownMs: 1_000, clock });
    const early = b.acquire();
    assert.ok(early);
    await assert.rejects(b.run(fail));
    await assert.rejects(b.run(fail));
    await clock.advance(1_000);
    const probe = b.acquire();
    assert.ok(probe);
    early.success();
    assert.equal(b.state, 'half-open', 'an old success is not the probe');
    assert.equal(b.acquire(), undefined);
    probe.failure();
    assert.equal(b.state, 'open');
  });

  it('reset() closes the circuit and ignores the probe that was under way', async () => {
    const { b } = await halfOpen();
    const probe = b.acquire();
    assert.ok(probe);
    b.reset();
    probe.failure();
    assert.equal(b.state, 'closed');
  });
});
