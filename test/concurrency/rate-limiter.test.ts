import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type Algorithm, RateLimiter, type RateLimiterOptions } from '../../src/concurrency/rate-limiter.ts';
import { ClosedError, InvalidKeyError, RateLimitedError } from '../../src/errors.ts';
import { ManualClock } from '../../src/internal/clock.ts';
import { watchTimers } from '../helpers/timers.ts';

const ALL: Algorithm[] = ['fixed-window', 'sliding-window', 'sliding-log', 'token-bucket', 'gcra'];

function limiter(options: RateLimiterOptions, clock = new ManualClock(0)) {
  return { clock, limiter: new RateLimiter({ sweepIntervalMs: 0, clock, ...options }) };
}

async function admitted(
  l: RateLimiter,
  key: string,
  calls: number,
  options?: { cost?: number; tokens?: number },
) {
  let n = 0;
  for (let i = 0; i < calls; i++) if ((await l.allow(key, options)).allowed) n++;
  return n;
}

describe('every algorithm admits its limit, refuses the rest, and says when to retry', () => {
  for (const algorithm of ALL) {
    it(`${algorithm}: 5 of 8 pass, the refusal's retryAfterMs is exact, and a retry then passes`, async () => {
      const { clock, limiter: l } = limiter({ algorithm, windowMs: 1_000, maxRequests: 5 });
      assert.equal(await admitted(l, 'k', 8), 5);
      const refused = await l.allow('k');
      assert.equal(refused.allowed, false);
      assert.equal(refused.status, 'limited');
      assert.equal(refused.reason, 'limit-exceeded');
      assert.equal(refused.remaining, 0);
      const wait = refused.retryAfterMs!;
      // The counter approximation can ask for up to two windows; the others for at most one.
      assert.ok(wait > 0 && wait <= (algorithm === 'sliding-window' ? 2_000 : 1_000), `retryAfterMs ${wait}`);
      await clock.advance(wait - 1);
      assert.equal((await l.allow('k')).allowed, false, 'still refused 1 ms before retryAfterMs');
      await clock.advance(1);
      assert.equal((await l.allow('k')).allowed, true, 'admitted at retryAfterMs');
      await l.close();
    });
  }

  it('fixed window: a new window admits the full limit again', async () => {
    const { clock, limiter: l } = limiter({ algorithm: 'fixed-window', windowMs: 1_000, maxRequests: 3 });
    assert.equal(await admitted(l, 'k', 5), 3);
    await clock.advance(1_000);
    assert.equal(await admitted(l, 'k', 5), 3);
    await l.close();
  });

  it('sliding window weights the previous window by the part still overlapping', async () => {
    const { clock, limiter: l } = limiter({ algorithm: 'sliding-window', windowMs: 1_000, maxRequests: 10 });
    assert.equal(await admitted(l, 'k', 10), 10);
    await clock.advance(1_500); // half of the previous window still counts: 5 of 10 used
    assert.equal(await admitted(l, 'k', 10), 5);
    await l.close();
  });

  it('sliding log is exact: entries leave exactly one window after they were written', async () => {
    const { clock, limiter: l } = limiter({ algorithm: 'sliding-log', windowMs: 1_000, maxRequests: 4 });
    assert.equal(await admitted(l, 'k', 2), 2);
    await clock.advance(600);
    assert.equal(await admitted(l, 'k', 4), 2);
    await clock.advance(400); // the first two expire now, the later two at 1600
    assert.equal(await admitted(l, 'k', 4), 2);
    await l.close();
  });

  it('sliding log after the wall clock steps back: the wait it gives is enough (seed: it said 1 ms)', async () => {
    let now = 10_000;
    const l = new RateLimiter({
      algorithm: 'sliding-log',
      windowMs: 1_000,
      maxRequests: 2,
      sweepIntervalMs: 0,
      clock: { now: () => now },
    });
    assert.equal((await l.allow('k')).allowed, true);
    now = 9_000; // an NTP step back
    assert.equal((await l.allow('k')).allowed, true);
    now = 10_500;
    const refused = await l.allow('k', { cost: 2 });
    assert.equal(refused.allowed, false);
    now += refused.retryAfterMs!;
    assert.equal(
      (await l.allow('k', { cost: 2 })).allowed,
      true,
      `admitted ${refused.retryAfterMs} ms later`,
    );
    await l.close();
  });

  it('token bucket and GCRA refill continuously at limit per window', async () => {
    for (const algorithm of ['token-bucket', 'gcra'] as const) {
      const { clock, limiter: l } = limiter({ algorithm, windowMs: 1_000, maxRequests: 10 });
      assert.equal(await admitted(l, 'k', 12), 10, algorithm);
      await clock.advance(300);
      assert.equal(await admitted(l, 'k', 5), 3, algorithm);
      await l.close();
    }
  });

  it('keys are limited independently', async () => {
    const { limiter: l } = limiter({ windowMs: 1_000, maxRequests: 2 });
    assert.equal(await admitted(l, 'a', 3), 2);
    assert.equal(await admitted(l, 'b', 3), 2);
    await l.close();
  });
});

describe('the fixed window advances (seed: resetTime never advanced, Retry-After went negative)', () => {
  it('retryAfterMs and resetMs stay within (0, windowMs] across many windows', async () => {
    const { clock, limiter: l } = limiter({ algorithm: 'fixed-window', windowMs: 1_000, maxRequests: 2 });
    for (let step = 0; step < 200; step++) {
      const r = await l.allow('client');
      assert.ok(r.resetMs > 0 && r.resetMs <= 1_000, `resetMs ${r.resetMs} at ${clock.now()}`);
      if (!r.allowed)
        assert.ok(r.retryAfterMs! > 0 && r.retryAfterMs! <= 1_000, `retryAfterMs ${r.retryAfterMs}`);
      await clock.advance(37);
    }
    await clock.advance(5_000);
    assert.equal(await admitted(l, 'client', 3), 2, 'a client is admitted again once its window has passed');
    await l.close();
  });
});

describe('a one-policy limiter answers as the same policy does among several', () => {
  // The one-policy memory path is written apart from the general one (the fixed window in full); a policy
  // that never binds beside it leaves the general path with the same decisions to report.
  for (const algorithm of ALL) {
    it(`${algorithm}: 2,000 random calls, the clock stepping forward and sometimes back`, async () => {
      let now = 1_700_000_000_000;
      const clock = { now: () => now };
      const single = new RateLimiter({
        algorithm,
        windowMs: 1_000,
        maxRequests: 5,
        sweepIntervalMs: 0,
        clock,
      });
      const several = new RateLimiter({
        policies: [
          { name: 'default', algorithm, windowMs: 1_000, limit: 5 },
          { name: 'loose', windowMs: 1_000, limit: 1e12 },
        ],
        sweepIntervalMs: 0,
        clock,
      });
      let seed = 42;
      const random = () => {
        seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
        return seed / 2 ** 31;
      };
      for (let i = 0; i < 2_000; i++) {
        const step = random();
        if (step < 0.05) now -= Math.floor(random() * 1_500);
        else if (step < 0.5) now += Math.floor(random() * 400);
        const key = `k${Math.floor(random() * 3)}`;
        const cost = Math.floor(random() * 4);
        const a = await single.allow(key, { cost });
        const b = await several.allow(key, { cost });
        const status = b.policies!.default!;
        const at = `call ${i} (${key}, cost ${cost}, t ${now})`;
        assert.equal(a.allowed, b.allowed, at);
        assert.equal(a.remaining, status.remaining, at);
        assert.equal(a.resetMs, status.resetMs, at);
        assert.equal(a.retryAfterMs, status.retryAfterMs, at);
      }
      await single.close();
      await several.close();
    });
  }
});

describe('several policies are checked all-or-nothing', () => {
  const policies = [
    { name: 'rpm', windowMs: 60_000, limit: 60 },
    { name: 'tpm', windowMs: 60_000, limit: 1_000, unit: 'tokens' as const },
    { name: 'tpd', windowMs: 86_400_000, limit: 1_500, unit: 'tokens' as const },
  ];

  it('a call refused by the token policy consumes nothing from the request policy', async () => {
    const { limiter: l } = limiter({ policies });
    const first = await l.allow('u', { tokens: 900 });
    assert.equal(first.allowed, true);
    assert.equal(first.policies!.rpm!.remaining, 59);
    for (let i = 0; i < 20; i++) {
      const r = await l.allow('u', { tokens: 200 });
      assert.equal(r.allowed, false);
      assert.equal(r.policy, 'tpm');
    }
    const after = await l.allow('u', { tokens: 100 });
    assert.equal(after.allowed, true);
    assert.equal(after.policies!.rpm!.remaining, 58, 'the 20 refused calls were not counted');
    assert.equal(after.policies!.tpm!.remaining, 0);
    assert.equal(after.policies!.tpd!.remaining, 500);
    await l.close();
  });

  it('the refusing policy with the longest wait decides the result', async () => {
    const { clock, limiter: l } = limiter({ policies });
    await l.allow('u', { tokens: 1_000 });
    await clock.advance(60_000);
    await l.allow('u', { tokens: 400 });
    const r = await l.allow('u', { tokens: 200 });
    assert.equal(r.allowed, false);
    assert.equal(r.policy, 'tpd');
    assert.equal(r.limit, 1_500);
    assert.ok(r.policies!.tpm!.retryAfterMs === undefined, 'tpm alone would admit it');
    assert.ok(r.retryAfterMs! > 60_000);
    await l.close();
  });

  it('cost counts against request policies and tokens against token policies', async () => {
    const { limiter: l } = limiter({ policies });
    const r = await l.allow('u', { cost: 3, tokens: 10 });
    assert.equal(r.policies!.rpm!.remaining, 57);
    assert.equal(r.policies!.tpm!.remaining, 990);
    await l.close();
  });
});

describe('reserve, then settle with the real usage', () => {
  const policies = [
    { name: 'rpm', windowMs: 60_000, limit: 10 },
    { name: 'tpm', windowMs: 60_000, limit: 10_000, unit: 'tokens' as const },
  ];
  for (const algorithm of ALL) {
    it(`${algorithm}: settling below the estimate refunds the difference, above it charges more`, async () => {
      const { limiter: l } = limiter({ policies: policies.map((p) => ({ ...p, algorithm })) });
      const a = await l.reserve('u', { tokens: 6_000 });
      assert.equal(a.allowed, true);
      assert.equal((await l.allow('u', { tokens: 5_000 })).allowed, false, 'the estimate is held');
      await a.settle({ tokens: 1_000 });
      const b = await l.allow('u', { tokens: 5_000 });
      assert.equal(b.allowed, true, 'the refund made room');
      assert.ok(b.policies!.tpm!.remaining >= 3_999 && b.policies!.tpm!.remaining <= 4_000);
      const c = await l.reserve('u', { tokens: 100 });
      await c.settle({ tokens: 3_000 });
      assert.equal((await l.allow('u', { tokens: 1_200 })).allowed, false, 'the overage was charged');
      await l.close();
    });
  }

  it('cancel refunds the whole reservation; a second settle has no effect', async () => {
    const { limiter: l } = limiter({ policies });
    const r = await l.reserve('u', { tokens: 9_000 });
    await r.cancel();
    await r.settle({ tokens: 9_000 });
    const after = await l.allow('u', { tokens: 10_000 });
    assert.equal(after.allowed, true);
    assert.equal(after.policies!.rpm!.remaining, 9, 'the cancelled request was refunded too');
    await l.close();
  });

  it('an unsettled reservation expires with its window', async () => {
    const { clock, limiter: l } = limiter({ policies });
    await l.reserve('u', { tokens: 10_000 });
    assert.equal((await l.allow('u', { tokens: 1 })).allowed, false);
    await clock.advance(60_000);
    assert.equal((await l.allow('u', { tokens: 10_000 })).allowed, true);
    await l.close();
  });

  it('a refund for a window that has passed does not credit the new window', async () => {
    const { clock, limiter: l } = limiter({ policies });
    const r = await l.reserve('u', { tokens: 8_000 });
    await clock.advance(60_000);
    await l.allow('u', { tokens: 10_000 });
    await r.settle({ tokens: 0 });
    assert.equal((await l.allow('u', { tokens: 1 })).allowed, false);
    await l.close();
  });

  it('a refused reservation holds nothing and settles to nothing', async () => {
    const { limiter: l } = limiter({ policies });
    const r = await l.reserve('u', { tokens: 20_000 });
    assert.equal(r.allowed, false);
    await r.settle({ tokens: 5_000 });
    assert.equal((await l.allow('u', { tokens: 10_000 })).policies!.tpm!.remaining, 0);
    await l.close();
  });
});

describe('bad input gets a clear answer and never corrupts a counter', () => {
  it('an empty, non-string or over-long key rejects with InvalidKeyError', async () => {
    const { limiter: l } = limiter({ windowMs: 1_000, maxRequests: 5 });
    await assert.rejects(l.allow(''), InvalidKeyError);
    await assert.rejects(l.allow(undefined as unknown as string), InvalidKeyError);
    await assert.rejects(l.allow('x'.repeat(2_000)), InvalidKeyError);
    assert.equal(l.stats().invalid, 3);
    await l.close();
  });

  it('a negative, NaN or infinite cost rejects with TypeError and leaves the count alone', async () => {
    const { limiter: l } = limiter({ windowMs: 1_000, maxRequests: 5 });
    await l.allow('k');
    for (const cost of [-1, Number.NaN, Number.POSITIVE_INFINITY]) {
      await assert.rejects(
        l.allow('k', { cost }),
        (e: unknown) => e instanceof TypeError && /options\.cost/.test(e.message),
      );
      await assert.rejects(l.allow('k', { tokens: cost }), TypeError);
    }
    assert.equal((await l.allow('k')).remaining, 3);
    await l.close();
  });

  it('options that are not an object (null, a number, a string) reject with TypeError and charge nothing', async () => {
    const { limiter: l } = limiter({ windowMs: 1_000, maxRequests: 5 });
    for (const options of [null, 3, 'cost']) {
      await assert.rejects(
        l.allow('k', options as never),
        (e: unknown) => e instanceof TypeError && /^options must be an object/.test(e.message),
      );
    }
    assert.equal((await l.allow('k')).remaining, 4, 'none of them was counted');
    await l.close();
  });

  it('a cost above the limit is refused with a reason and no retry time, charging nothing', async () => {
    const { limiter: l } = limiter({ windowMs: 1_000, maxRequests: 5 });
    const r = await l.allow('k', { cost: 6 });
    assert.equal(r.allowed, false);
    assert.equal(r.reason, 'cost-exceeds-limit');
    assert.equal(r.retryAfterMs, undefined);
    assert.equal((await l.allow('k', { cost: 5 })).allowed, true);
    await assert.rejects(l.consume('k', { cost: 6 }), RateLimitedError);
    await l.close();
  });

  it('a cost of 0 is admitted without charging', async () => {
    const { limiter: l } = limiter({ windowMs: 1_000, maxRequests: 1 });
    assert.equal((await l.allow('k', { cost: 0 })).allowed, true);
    assert.equal((await l.allow('k')).allowed, true);
    await l.close();
  });

  it('invalid options throw a TypeError naming the option and the value', () => {
    assert.throws(() => new RateLimiter({ windowMs: 0, maxRequests: 5 }), /options\.windowMs.*0/);
    assert.throws(() => new RateLimiter({ windowMs: 1_000, maxRequests: -1 }), /options\.maxRequests.*-1/);
    assert.throws(
      () => new RateLimiter({ algorithm: 'leaky' as Algorithm, windowMs: 1_000, maxRequests: 5 }),
      /options\.algorithm.*"leaky"/,
    );
    assert.throws(
      () => new RateLimiter({ policies: [{ name: 'a', windowMs: 1, limit: 1, unit: 'bytes' as 'tokens' }] }),
      /options\.policies\[0\]\.unit.*"bytes"/,
    );
    assert.throws(
      () =>
        new RateLimiter({
          policies: [
            { name: 'a', windowMs: 1, limit: 1 },
            { name: 'a', windowMs: 2, limit: 1 },
          ],
        }),
      /unique/,
    );
    assert.throws(() => new RateLimiter({ policies: [] }), /options\.policies/);
    assert.throws(
      () => new RateLimiter({ windowMs: 1_000, maxRequests: 1, onStoreError: 'maybe' as 'memory' }),
      /onStoreError/,
    );
    assert.throws(
      () => new RateLimiter({ windowMs: 1_000, maxRequests: 1, redis: 'http://x' }),
      /options\.redis/,
    );
  });
});

describe('consume', () => {
  it('resolves when admitted and rejects with RateLimitedError carrying the wait and the policy', async () => {
    const { limiter: l } = limiter({ policies: [{ name: 'rpm', windowMs: 1_000, limit: 1 }] });
    assert.equal((await l.consume('k')).allowed, true);
    const error = await l.consume('k').catch((e: unknown) => e);
    assert.ok(error instanceof RateLimitedError);
    assert.equal(error.code, 'ERR_CLAWPERF_RATE_LIMITED');
    assert.equal(error.policy, 'rpm');
    assert.equal(error.limit, 1);
    assert.equal(error.retryAfterMs, 1_000);
    await l.close();
  });
});

describe('memory is bounded by the keys active in the last windows (seed: keys never pruned)', () => {
  it('keys seen once are pruned by later traffic once their windows have passed', async () => {
    const { clock, limiter: l } = limiter({ windowMs: 1_000, maxRequests: 5 });
    for (let i = 0; i < 5_000; i++) await l.allow(`ip:${i}`);
    assert.equal(l.stats().keys, 5_000);
    await clock.advance(2_000);
    for (let i = 0; i < 5_000; i++) await l.allow('steady');
    assert.ok(l.stats().keys <= 2, `keys ${l.stats().keys}`);
    assert.ok(l.stats().pruned >= 4_999);
    await l.close();
  });

  it('a stream of new clients keeps the number of keys near those of the last two windows', async () => {
    const { clock, limiter: l } = limiter({ windowMs: 100, maxRequests: 5 });
    let max = 0;
    for (let i = 0; i < 20_000; i++) {
      await l.allow(`ip:${i}`);
      if (i % 10 === 0) await clock.advance(1);
      max = Math.max(max, l.stats().keys);
    }
    // 10 new keys per ms, state kept for two 100 ms windows: about 2,000 live keys, never 20,000.
    assert.ok(max < 4_000, `max keys ${max}`);
    await l.close();
  });

  it('the sweep timer is unref()ed and close() stops it', async () => {
    const timers = watchTimers();
    try {
      const l = new RateLimiter({ windowMs: 1_000, maxRequests: 1, sweepIntervalMs: 10 });
      assert.equal(timers.set.length, 1, 'one sweep timer');
      assert.equal(timers.set[0]!.hasRef(), false, 'it never holds the process open');
      await l.allow('k');
      await l.close();
      assert.deepEqual(timers.cleared, timers.set, 'close() stops it');
    } finally {
      timers.restore();
    }
  });

  it('the sliding log holds only entries inside the window (seed: the log kept every timestamp)', async () => {
    const { clock, limiter: l } = limiter({ algorithm: 'sliding-log', windowMs: 1_000, maxRequests: 50 });
    for (let i = 0; i < 10_000; i++) {
      await l.allow('k');
      await clock.advance(10);
    }
    assert.ok(l.stats().logEntries <= 100, `log entries ${l.stats().logEntries}`);
    assert.equal(l.stats().logEntries, 50);
    await l.close();
  });
});

describe('lifecycle and stats', () => {
  it('close is idempotent and later calls reject with ClosedError', async () => {
    const { limiter: l } = limiter({ windowMs: 1_000, maxRequests: 1 });
    await l.close();
    await l.close();
    await assert.rejects(l.allow('k'), ClosedError);
    await assert.rejects(l.reset('k'), ClosedError);
  });

  it('reset forgets a key', async () => {
    const { limiter: l } = limiter({ windowMs: 1_000, maxRequests: 1 });
    await l.allow('k');
    assert.equal((await l.allow('k')).allowed, false);
    await l.reset('k');
    assert.equal((await l.allow('k')).allowed, true);
    await l.close();
  });

  it('stats are flat numbers and statsCounters names the growing ones', async () => {
    const { limiter: l } = limiter({ windowMs: 1_000, maxRequests: 1 });
    await l.allow('k');
    await l.allow('k');
    const s = l.stats();
    for (const [name, value] of Object.entries(s)) assert.equal(typeof value, 'number', name);
    assert.equal(s.checks, 2);
    assert.equal(s.allowed, 1);
    assert.equal(s.limited, 1);
    for (const c of l.statsCounters) assert.ok(c in s, c);
    await l.close();
  });
});
