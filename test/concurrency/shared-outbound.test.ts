/**
 * Provider pacing shared on a real Redis by several limiters, each with its own connection as separate
 * nodes would have, against a FAKE provider quota kept in this process (a fixed window per key, reported
 * in OpenAI's headers, refusing with 429 beyond it). And the one-process `OutboundLimiter`'s learning
 * concurrency, configured limits and failed calls.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { OutboundLimiter } from '../../src/concurrency/provider-limits.ts';
import { SharedOutboundLimiter } from '../../src/concurrency/shared-outbound.ts';
import { RateLimitedError } from '../../src/errors.ts';
import { type RedisServer, startRedis, startRedisCluster } from '../helpers/redis.ts';
import { freePort, waitFor } from '../helpers/servers.ts';

let redis: RedisServer;
const limiters: { close(): Promise<void> }[] = [];
let keys = 0;

before(async () => {
  redis = await startRedis();
});
after(async () => {
  await Promise.all(limiters.map((l) => l.close()));
  await redis.stop();
});

/** `n` limiters of one fresh provider key, each on its own Redis connection (as `n` nodes). */
function nodes(n: number, options: Partial<ConstructorParameters<typeof SharedOutboundLimiter>[0]> = {}) {
  const key = `key-${++keys}`;
  return Array.from({ length: n }, () => {
    const l = new SharedOutboundLimiter({ redis: redis.url, key, maxWaitMs: 5_000, ...options });
    limiters.push(l);
    return l;
  });
}

/** A fake provider quota: `limit` requests per fixed `windowMs` window, as OpenAI reports it. */
function fakeQuota(limit: number, windowMs: number) {
  let start = 0;
  let used = 0;
  const stats = { accepted: 0, refused: 0, perWindow: [] as number[] };
  return {
    stats,
    call() {
      const now = Date.now();
      if (now >= start + windowMs) {
        if (start > 0) stats.perWindow.push(used);
        start = now;
        used = 0;
      }
      const reset = `${start + windowMs - now}ms`;
      if (used >= limit) {
        stats.refused++;
        return {
          status: 429,
          headers: {
            'x-ratelimit-limit-requests': String(limit),
            'x-ratelimit-remaining-requests': '0',
            'x-ratelimit-reset-requests': reset,
            'retry-after-ms': String(start + windowMs - now),
          },
        };
      }
      used++;
      stats.accepted++;
      return {
        status: 200,
        headers: {
          'x-ratelimit-limit-requests': String(limit),
          'x-ratelimit-remaining-requests': String(limit - used),
          'x-ratelimit-reset-requests': reset,
        },
      };
    },
    close() {
      stats.perWindow.push(used);
    },
  };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

/** Waits until Redis has taken a permit's report (the limiter sends it without being awaited). */
async function waitForSpent(l: SharedOutboundLimiter): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (l.stats().remainingRequests !== 0 && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 5));
  assert.equal(l.stats().remainingRequests, 0);
}

/** An answer saying the window allows one request, none is left, and it resets in 100 ms. */
const LIMIT_ONE_SPENT = {
  status: 200,
  headers: {
    'x-ratelimit-limit-requests': '1',
    'x-ratelimit-remaining-requests': '0',
    'x-ratelimit-reset-requests': '100ms',
  },
};
describe('SharedOutboundLimiter: one budget for every node', () => {
  it('three nodes sending 60 calls for one key stay within the provider limit of each window', async () => {
    const quota = fakeQuota(20, 1_000);
    const three = nodes(3, { learningConcurrency: 4 });
    const calls = Array.from({ length: 60 }, (_, i) =>
      three[i % 3]!.run(async () => {
        await tick();
        return quota.call();
      }),
    );
    const answers = await Promise.all(calls);
    quota.close();
    assert.equal(answers.filter((a) => a.status === 200).length, 60, 'every call waited for budget');
    assert.equal(quota.stats.refused, 0);
    for (const n of quota.stats.perWindow) assert.ok(n <= 20, `a window took ${n}`);
    assert.ok(quota.stats.perWindow.length >= 3, 'spread over at least three windows');
  });

  it('before the first answer, the nodes send at most the learning concurrency at once', async () => {
    const three = nodes(3, { learningConcurrency: 2 });
    let inFlight = 0;
    let most = 0;
    let hold = true;
    const release: (() => void)[] = [];
    const calls = Array.from({ length: 9 }, (_, i) =>
      three[i % 3]!.run(async () => {
        inFlight++;
        most = Math.max(most, inFlight);
        if (hold) await new Promise<void>((r) => release.push(r));
        inFlight--;
        return { status: 200, headers: {} };
      }),
    );
    // Let every node ask Redis (several polls) while the first two calls hang.
    for (let i = 0; i < 20 && release.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(most, 2);
    // Answers without figures: this provider reports no quota, so the rest go.
    hold = false;
    for (const r of release) r();
    await Promise.all(calls);
  });

  it('answers of the old window that use up the new one, with nothing in flight, do not stall the nodes', async () => {
    const [node] = nodes(1, { learningConcurrency: 2, defaultResetMs: 50, maxWaitMs: 10_000 });
    const first = await node!.acquire();
    const slow = await node!.acquire();
    first.done(LIMIT_ONE_SPENT);
    // The window resets (Redis time) while the slow call is out; its answer then uses the new window up,
    // with no call in flight whose answer would say when that window resets.
    await new Promise((r) => setTimeout(r, 150));
    const waiting = node!.acquire();
    slow.done(LIMIT_ONE_SPENT);
    let deadline: NodeJS.Timeout | undefined;
    const stalled = new Promise<never>((_, reject) => {
      deadline = setTimeout(() => reject(new Error('still waiting 3 s later')), 3_000);
    });
    // The assumed reset (defaultResetMs) frees it, long before maxWaitMs.
    const permit = await Promise.race([waiting, stalled]);
    clearTimeout(deadline);
    permit.done(LIMIT_ONE_SPENT);
  });

  it("a 429 cools the key down on every node until the provider's stated time", async () => {
    const [a, b] = nodes(2, { maxWaitMs: 200, random: () => 0 });
    await a!.run(async () => ({ status: 429, headers: { 'retry-after': '3' } }));
    await assert.rejects(b!.acquire(), (error: unknown) => {
      assert.ok(error instanceof RateLimitedError);
      assert.ok(error.retryAfterMs > 2_500 && error.retryAfterMs <= 3_000, String(error.retryAfterMs));
      return true;
    });
  });

  it('a configured limit paces from the first call, before any header', async () => {
    const [a, b] = nodes(2, {
      maxWaitMs: 100,
      learningConcurrency: 10,
      limits: { requests: 3, windowMs: 60_000 },
    });
    const permits = [await a!.acquire(), await b!.acquire(), await a!.acquire()];
    await assert.rejects(b!.acquire(), RateLimitedError);
    for (const p of permits) p.done({ status: 200, headers: {} });
  });

  it('a node that never reports how its calls ended holds their budget only until their lease ends', async () => {
    const [gone, alive] = nodes(2, { maxWaitMs: 2_000, leaseMs: 300, learningConcurrency: 1 });
    await gone!.acquire(); // the probe of an unknown quota, never reported
    const start = Date.now();
    const permit = await alive!.acquire();
    assert.ok(Date.now() - start >= 250, 'waited for the lease to end');
    permit.done({ status: 200, headers: {} });
  });

  it('holds on a Redis Cluster too: one slot per key, any seed', async () => {
    const cluster = await startRedisCluster(3);
    const three = Array.from(
      { length: 3 },
      () => new SharedOutboundLimiter({ redis: cluster.url, key: 'cluster-key', maxWaitMs: 5_000 }),
    );
    try {
      const quota = fakeQuota(10, 1_000);
      const answers = await Promise.all(
        Array.from({ length: 30 }, (_, i) =>
          three[i % 3]!.run(async () => {
            await tick();
            return quota.call();
          }),
        ),
      );
      quota.close();
      assert.equal(answers.filter((a) => a.status === 200).length, 30);
      assert.equal(quota.stats.refused, 0);
      for (const n of quota.stats.perWindow) assert.ok(n <= 10, `a window took ${n}`);
      assert.equal(three[0]!.stats().redisFailures, 0, 'every decision was made on the Cluster');
    } finally {
      await Promise.all(three.map((l) => l.close()));
      await cluster.stop();
    }
  });

  it('asks Redis only now and then while the provider reports no quota, and shares its 429 at once', async () => {
    const [a, b] = nodes(2, { maxWaitMs: 200, random: () => 0 });
    const scripts = () =>
      Number(/cmdstat_evalsha:calls=(\d+)/.exec(redis.cli('INFO', 'commandstats'))?.[1] ?? 0);
    const before = scripts();
    for (let i = 0; i < 20; i++) await a!.run(async () => ({ status: 200, headers: {} }));
    // The first call and its report, then a decision or two until the first answer has reached Redis.
    assert.ok(scripts() - before <= 5, `${scripts() - before} scripts for 20 calls`);
    // A 429 still cools the key down on every node, as soon as its report reaches Redis.
    await a!.run(async () => ({ status: 429, headers: { 'retry-after': '3' } }));
    await waitFor(async () => {
      try {
        (await b!.acquire()).done({ status: 200, headers: {} });
        return false;
      } catch (error) {
        return error instanceof RateLimitedError;
      }
    });
  });

  it('waits its turn while Redis is slow, instead of pacing blind in the process', async () => {
    const slow = await startRedis({ args: ['--enable-debug-command', 'yes'] });
    const client = new Redis(slow.port, '127.0.0.1', { commandTimeout: 50, enableOfflineQueue: false });
    client.on('error', () => {});
    const l = new SharedOutboundLimiter({ redis: client, key: `key-${++keys}`, maxWaitMs: 300 });
    try {
      const permit = await l.acquire();
      permit.done({
        status: 200,
        headers: {
          'x-ratelimit-limit-requests': '1',
          'x-ratelimit-remaining-requests': '0',
          'x-ratelimit-reset-requests': '10s',
        },
      });
      await waitForSpent(l);
      // Redis answers nothing for 200 ms: every decision meanwhile times out.
      const sleeper = new Redis(slow.port, '127.0.0.1');
      await sleeper.ping();
      void sleeper.call('DEBUG', 'SLEEP', '0.2').finally(() => sleeper.disconnect());
      await assert.rejects(l.acquire(), RateLimitedError, 'the spent budget still holds');
      assert.ok(l.stats().redisFailures >= 1, 'a decision timed out');
    } finally {
      await l.close();
      client.disconnect();
      await slow.stop();
    }
  });

  it('keeps pacing in the process while Redis cannot answer', async () => {
    // A client of a port nothing listens on, that never retries.
    const client = new Redis(await freePort(), '127.0.0.1', {
      lazyConnect: true,
      enableOfflineQueue: false,
      retryStrategy: () => null,
    });
    client.on('error', () => {});
    const l = new SharedOutboundLimiter({ redis: client, key: `key-${++keys}`, maxWaitMs: 100 });
    try {
      const permit = await l.acquire();
      permit.done({ status: 429, headers: { 'retry-after': '5' } });
      await assert.rejects(l.acquire(), RateLimitedError, 'the local limiter holds the cooldown');
      assert.ok(l.stats().redisFailures >= 1);
    } finally {
      await l.close();
      client.disconnect();
    }
  });
});

describe('OutboundLimiter: learning, configured limits, failed calls', () => {
  it('sends up to the learning concurrency before the first answer, then one per probe', async () => {
    const outbound = new OutboundLimiter({ learningConcurrency: 3, maxWaitMs: 1_000 });
    const first = await Promise.all([outbound.acquire(), outbound.acquire(), outbound.acquire()]);
    const fourth = outbound.acquire();
    let served = false;
    void fourth.then(() => {
      served = true;
    });
    await tick();
    assert.equal(served, false, 'the fourth waits for an answer');
    first[0]!.done({
      status: 200,
      headers: {
        'x-ratelimit-limit-requests': '100',
        'x-ratelimit-remaining-requests': '99',
        'x-ratelimit-reset-requests': '1s',
      },
    });
    (await fourth).done();
    for (const p of first.slice(1)) p.done();
  });

  it('after a reset the whole limit goes at once, less the calls the provider may count in the new window', async () => {
    let now = 0;
    const outbound = new OutboundLimiter({ maxWaitMs: 50, clock: { now: () => now } });
    const figures = (remaining: number, resetMs: number) => ({
      status: 200,
      headers: {
        'x-ratelimit-limit-requests': '10',
        'x-ratelimit-remaining-requests': String(remaining),
        'x-ratelimit-reset-requests': `${resetMs}ms`,
      },
    });
    // Sent at 0, answered at 5: the reset is at 100 at the earliest, 105 at the latest.
    const first = await outbound.acquire();
    now = 5;
    first.done(figures(9, 100));
    // Answered at 102: the provider may have counted it after its reset.
    now = 90;
    const late = await outbound.acquire();
    now = 102;
    late.done(figures(8, 3));
    now = 106;
    // Slow answers: nothing comes back while the new window's calls go out.
    const permits = await Promise.all(Array.from({ length: 9 }, () => outbound.acquire()));
    assert.equal(permits.length, 9, 'nine go at once, not one at a time');
    await assert.rejects(outbound.acquire(), RateLimitedError, 'the tenth may be over the limit');
    for (const p of permits) p.done(figures(1, 90));
  });

  it('answers of the old window that use up the new one, with nothing in flight, do not stall the callers', async () => {
    let now = 0;
    const outbound = new OutboundLimiter({
      maxWaitMs: 5_000,
      defaultResetMs: 10,
      learningConcurrency: 2,
      clock: { now: () => now },
    });
    const first = await outbound.acquire();
    const slow = await outbound.acquire();
    first.done(LIMIT_ONE_SPENT);
    // The window resets while the slow call is still out; its answer counts in the new window, which it uses
    // up: no call is in flight, so no answer will say when the new window resets.
    now = 150;
    let released = false;
    const waiting = outbound.acquire().then((p) => {
      released = true;
      return p;
    });
    await tick();
    slow.done(LIMIT_ONE_SPENT);
    await tick();
    assert.equal(released, false, 'the new window is used up');
    // The assumed reset (defaultResetMs) frees it, long before maxWaitMs.
    now = 161;
    const permit = await waiting;
    permit.done(LIMIT_ONE_SPENT);
  });

  it('a call that fails without an answer does not turn pacing off', async () => {
    const outbound = new OutboundLimiter({ maxWaitMs: 1_000 });
    (await outbound.acquire()).done(); // a connection error: nothing learned
    const probe = await outbound.acquire();
    let second = false;
    const next = outbound.acquire().then((p) => {
      second = true;
      return p;
    });
    await tick();
    assert.equal(second, false, 'still one call at a time until an answer says what is allowed');
    probe.done({
      status: 200,
      headers: {
        'x-ratelimit-limit-requests': '2',
        'x-ratelimit-remaining-requests': '1',
        'x-ratelimit-reset-requests': '10s',
      },
    });
    (await next).done({ status: 200, headers: {} });
    assert.equal(second, true);
  });

  it('a configured limit holds from the start and restarts with its window', async () => {
    let now = 0;
    const outbound = new OutboundLimiter({
      maxWaitMs: 100,
      limits: { requests: 2, windowMs: 1_000 },
      clock: { now: () => now },
    });
    (await outbound.acquire()).done({ status: 200, headers: {} });
    (await outbound.acquire()).done({ status: 200, headers: {} });
    await assert.rejects(outbound.acquire(), RateLimitedError);
    now = 1_000;
    (await outbound.acquire()).done({ status: 200, headers: {} });
  });
});
