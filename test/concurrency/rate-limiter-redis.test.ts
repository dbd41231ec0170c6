import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import type { EventEmitter } from 'node:events';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { trace } from '@opentelemetry/api';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { Cluster, Redis } from 'ioredis';
import { type Algorithm, RateLimiter, type RateLimitResult } from '../../src/concurrency/rate-limiter.ts';
import { ManualClock } from '../../src/internal/clock.ts';
import { redisOptions, whenConnected } from '../../src/internal/redis.ts';
import { type RedisCluster, type RedisServer, startRedis, startRedisCluster } from '../helpers/redis.ts';

const ALL: Algorithm[] = ['fixed-window', 'sliding-window', 'sliding-log', 'token-bucket', 'gcra'];
const here = dirname(fileURLToPath(import.meta.url));
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

let redis: RedisServer;
let client: Redis;
let prefixSeq = 0;
const prefix = () => `t${++prefixSeq}`;

before(async () => {
  redis = await startRedis();
  client = new Redis(redis.url, { enableAutoPipelining: true, maxRetriesPerRequest: 1 });
});

after(async () => {
  client.disconnect();
  await redis.stop();
});

describe('checks on Redis are exact under concurrency', () => {
  for (const algorithm of ALL) {
    it(`${algorithm}: 100 concurrent checks on one key with limit 30 admit exactly 30`, async () => {
      // An hour: no refill or window roll-over while the test runs.
      const l = new RateLimiter({
        algorithm,
        windowMs: 3_600_000,
        maxRequests: 30,
        redis: client,
        keyPrefix: prefix(),
      });
      const results = await Promise.all(Array.from({ length: 100 }, () => l.allow('k')));
      assert.equal(results.filter((r) => r.allowed).length, 30);
      assert.ok(results.every((r) => r.status !== 'store-error'));
      const refused = results.find((r) => !r.allowed)!;
      // The sliding-window approximation can ask for up to two windows.
      assert.ok(refused.retryAfterMs! > 0 && refused.retryAfterMs! <= 7_200_000);
      await l.close();
    });
  }

  it('several policies of a key are checked in one script, all-or-nothing', async () => {
    const l = new RateLimiter({
      policies: [
        { name: 'rpm', algorithm: 'gcra', windowMs: 86_400_000, limit: 60 },
        { name: 'tpm', algorithm: 'sliding-log', windowMs: 60_000, limit: 1_000, unit: 'tokens' },
        { name: 'tpd', algorithm: 'token-bucket', windowMs: 86_400_000, limit: 5_000, unit: 'tokens' },
      ],
      redis: client,
      keyPrefix: prefix(),
    });
    assert.equal((await l.allow('u', { tokens: 900 })).allowed, true);
    const refused = await Promise.all(Array.from({ length: 20 }, () => l.allow('u', { tokens: 200 })));
    assert.ok(refused.every((r) => !r.allowed && r.policy === 'tpm'));
    const next = await l.allow('u', { tokens: 100 });
    assert.equal(next.allowed, true);
    assert.equal(next.policies!.rpm!.remaining, 58, 'refused calls consumed no request');
    assert.equal(next.policies!.tpd!.remaining, 4_000);
    await l.close();
  });

  it('reserve and settle correct the count in Redis', async () => {
    for (const algorithm of ALL) {
      const l = new RateLimiter({
        // A day: refill while the test runs stays below one token.
        policies: [{ name: 'tpd', algorithm, windowMs: 86_400_000, limit: 10_000, unit: 'tokens' }],
        redis: client,
        keyPrefix: prefix(),
      });
      const r = await l.reserve('u', { tokens: 8_000 });
      assert.equal(r.allowed, true, algorithm);
      assert.equal((await l.allow('u', { tokens: 5_000 })).allowed, false, algorithm);
      await r.settle({ tokens: 2_000 });
      const after = await l.allow('u', { tokens: 5_000 });
      assert.equal(after.allowed, true, algorithm);
      assert.ok(after.remaining >= 2_999 && after.remaining <= 3_001, `${algorithm}: ${after.remaining}`);
      const c = await l.reserve('u', { tokens: 3_000 });
      await c.cancel();
      assert.equal((await l.allow('u', { tokens: 2_990 })).allowed, true, `${algorithm}: cancel refunded`);
      await l.close();
    }
  });

  it('fractional and whole charges mix on one counter', async () => {
    for (const algorithm of ALL) {
      const l = new RateLimiter({
        policies: [{ name: 'tpd', algorithm, windowMs: 86_400_000, limit: 10, unit: 'tokens' }],
        redis: client,
        keyPrefix: prefix(),
      });
      assert.equal((await l.allow('k', { tokens: 2 })).allowed, true, algorithm);
      assert.equal((await l.allow('k', { tokens: 1.5 })).allowed, true, algorithm);
      const r = await l.allow('k', { tokens: 3 });
      assert.equal(r.status, 'allowed', algorithm);
      assert.equal(r.remaining, 3, algorithm);
      assert.equal((await l.allow('k', { tokens: 4 })).allowed, false, algorithm);
      await l.close();
    }
  });

  it('reset deletes every Redis key of the limited key', async () => {
    const keyPrefix = prefix();
    const l = new RateLimiter({
      policies: [
        { name: 'a', windowMs: 60_000, limit: 1 },
        { name: 'b', algorithm: 'sliding-log', windowMs: 60_000, limit: 10 },
      ],
      redis: client,
      keyPrefix,
    });
    await l.allow('k');
    assert.ok((await client.keys(`${keyPrefix}:*`)).length >= 3);
    await l.reset('k');
    assert.deepEqual(await client.keys(`${keyPrefix}:*`), []);
    assert.equal((await l.allow('k')).allowed, true);
    await l.close();
  });

  it('keys carry a hash tag around the limited key and expire', async () => {
    const keyPrefix = prefix();
    const l = new RateLimiter({ windowMs: 60_000, maxRequests: 5, redis: client, keyPrefix });
    await l.allow('user:{7}');
    const keys = await client.keys(`${keyPrefix}:*`);
    assert.deepEqual(keys, [`${keyPrefix}:{user:_7_}:default:0`]);
    assert.ok((await client.pttl(keys[0]!)) > 0);
    await l.close();
  });
});

describe('checks of one tick share one script call', () => {
  const evalshaCalls = async () => {
    const m = /cmdstat_evalsha:calls=(\d+)/.exec(await client.info('commandstats'));
    return Number(m?.[1] ?? 0);
  };

  it('a burst of checks on many keys is one EVALSHA, each caller getting its own exact answer', async () => {
    const l = new RateLimiter({
      policies: [
        { name: 'rpm', windowMs: 3_600_000, limit: 3 },
        { name: 'tpm', windowMs: 3_600_000, limit: 100, unit: 'tokens' },
      ],
      redis: client,
      keyPrefix: prefix(),
    });
    await l.allow('warm-up'); // loads the script
    const before = await evalshaCalls();
    // Five checks on each of 20 keys, interleaved, one with braces in its name; the 4th and 5th of a key
    // are refused by rpm, and `big` is refused by tpm without counting against rpm.
    const keys = Array.from({ length: 20 }, (_, i) => (i === 7 ? 'user:{7}' : `user:${i}`));
    const calls: Promise<RateLimitResult>[] = [];
    for (let round = 0; round < 5; round++) for (const k of keys) calls.push(l.allow(k, { tokens: 10 }));
    const big = l.allow('user:0', { tokens: 95 });
    const results = await Promise.all(calls);
    assert.equal((await evalshaCalls()) - before, 1, 'one script call for the whole tick');
    for (let k = 0; k < keys.length; k++) {
      const own = [0, 1, 2, 3, 4].map((round) => results[round * keys.length + k]!);
      assert.deepEqual(
        own.map((r) => r.allowed),
        [true, true, true, false, false],
        keys[k],
      );
      assert.deepEqual(
        own.map((r) => r.policies!.rpm!.remaining),
        [2, 1, 0, 0, 0],
      );
      assert.equal(own[3]!.reason, 'limit-exceeded');
    }
    const refused = await big;
    assert.equal(refused.allowed, false);
    assert.equal(refused.policy, 'rpm', 'rpm was already used up by then');
    await l.close();
  });

  it('a check that fails inside the shared call fails alone', async () => {
    const key = `${prefix()}`;
    const l = new RateLimiter({
      algorithm: 'gcra',
      windowMs: 60_000,
      maxRequests: 10,
      redis: client,
      keyPrefix: key,
      onStoreError: 'fail-closed',
    });
    // A GCRA key holding a hash makes its GET fail with WRONGTYPE inside the script.
    await client.hset(`${key}:{bad}:default:4`, 'x', '1');
    await l.allow('warm-up'); // loads the script
    const before = await evalshaCalls();
    const mixed = await Promise.all([l.allow('good'), l.allow('bad'), l.allow('good')]);
    assert.equal((await evalshaCalls()) - before, 1);
    assert.deepEqual(
      mixed.map((r) => r.status),
      ['allowed', 'store-error', 'allowed'],
    );
    assert.deepEqual(
      mixed.map((r) => r.remaining),
      [9, 0, 8],
    );
    await l.close();
  });
});

describe('tracing', () => {
  it('each Redis check is a span, a failed one marked as an error', async () => {
    const exporter = new InMemorySpanExporter();
    trace.setGlobalTracerProvider(
      new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }),
    );
    const server = await startRedis();
    const l = new RateLimiter({
      windowMs: 60_000,
      maxRequests: 5,
      redis: server.url,
      onStoreError: 'fail-open',
    });
    try {
      await l.allow('k');
      await server.kill();
      await l.allow('k');
      const spans = exporter.getFinishedSpans().filter((s) => s.name === 'clawperf.rate_limit.check');
      assert.equal(spans.length, 2);
      assert.equal(spans[0]!.attributes['db.system'], 'redis');
      assert.equal(spans[0]!.attributes['clawperf.rate_limit.allowed'], true);
      assert.equal(spans[1]!.status.code, 2);
    } finally {
      trace.disable();
      await l.close();
      await server.stop();
    }
  });
});

describe('refused calls are not counted (seed: a client that retries was locked out for good)', () => {
  it('a client retrying through its refusals is admitted again once the window has passed', async () => {
    const keyPrefix = prefix();
    const l = new RateLimiter({
      algorithm: 'sliding-log',
      windowMs: 400,
      maxRequests: 5,
      redis: client,
      keyPrefix,
    });
    let admitted = 0;
    for (let i = 0; i < 5; i++) if ((await l.allow('retrier')).allowed) admitted++;
    assert.equal(admitted, 5);
    let readmitted = false;
    for (let i = 0; i < 40 && !readmitted; i++) {
      const r = await l.allow('retrier');
      readmitted = r.allowed;
      if (!readmitted) {
        assert.equal(await client.zcard(`${keyPrefix}:{retrier}:default:2:log`), 5, 'refusals left no entry');
        await sleep(25);
      }
    }
    assert.ok(readmitted, 'admitted again after the window');
    await l.close();
  });
});

describe('time comes from Redis, not from each node (seed: each node used its own clock)', () => {
  it('two limiters whose clocks are a day apart share one exact limit', async () => {
    const keyPrefix = prefix();
    const options = {
      algorithm: 'sliding-log' as const,
      windowMs: 3_600_000,
      maxRequests: 20,
      redis: client,
      keyPrefix,
    };
    const a = new RateLimiter({ ...options, clock: new ManualClock(0) });
    const b = new RateLimiter({ ...options, clock: new ManualClock(86_400_000) });
    const results = await Promise.all(
      Array.from({ length: 60 }, (_, i) => (i % 2 === 0 ? a : b).allow('shared')),
    );
    assert.equal(results.filter((r) => r.allowed).length, 20);
    await a.close();
    await b.close();
  });
});

describe('exact across processes', () => {
  it('4 processes x 60 calls on one key with limit 50 admit exactly 50', async () => {
    const run = promisify(execFile);
    const key = `multi:${Date.now()}`;
    const startAt = Date.now() + 4_000;
    const outputs = await Promise.all(
      Array.from({ length: 4 }, () =>
        run(
          process.execPath,
          [
            '--import',
            'tsx',
            join(here, 'fixtures', 'redis-limiter-worker.ts'),
            redis.url,
            key,
            '60',
            '50',
            String(startAt),
          ],
          { timeout: 30_000 },
        ),
      ),
    );
    const counts = outputs.map((o) => JSON.parse(o.stdout.trim()) as { admitted: number; errors: number });
    assert.deepEqual(
      counts.map((c) => c.errors),
      [0, 0, 0, 0],
    );
    assert.equal(
      counts.reduce((sum, c) => sum + c.admitted, 0),
      50,
    );
  });
});

describe('Redis Cluster', () => {
  let cluster: RedisCluster;
  let clusterClient: Cluster;

  before(async () => {
    cluster = await startRedisCluster(3);
    clusterClient = new Cluster(cluster.startupNodes, { enableAutoPipelining: true });
  });

  after(async () => {
    clusterClient.disconnect();
    await cluster.stop();
  });

  it('keys spread over the 3 masters; each key is exact with all its policies in one slot', async () => {
    const l = new RateLimiter({
      policies: [
        { name: 'rph', algorithm: 'sliding-window', windowMs: 3_600_000, limit: 5 },
        { name: 'rpm', windowMs: 60_000, limit: 100 },
        { name: 'log', algorithm: 'sliding-log', windowMs: 60_000, limit: 100 },
        { name: 'tpm', algorithm: 'gcra', windowMs: 60_000, limit: 10_000, unit: 'tokens' },
      ],
      redis: clusterClient,
    });
    const keys = Array.from({ length: 30 }, (_, i) => `tenant-${i}`);
    const results = await Promise.all(
      keys.flatMap((key) =>
        Array.from({ length: 8 }, () => l.allow(key, { tokens: 10 }).then((r) => [key, r] as const)),
      ),
    );
    for (const key of keys) {
      const mine = results.filter(([k]) => k === key).map(([, r]) => r);
      assert.ok(
        mine.every((r) => r.status !== 'store-error'),
        key,
      );
      assert.equal(mine.filter((r) => r.allowed).length, 5, key);
    }
    const sizes = cluster.nodes.map((n) => Number(n.cli('dbsize')));
    assert.ok(sizes.filter((s) => s > 0).length >= 2, `keys per node: ${sizes}`);
    await l.close();
  });
});

/** The next `name` event; unlike events.once, an 'error' event meanwhile (a reset connection) is no failure. */
const next = (emitter: EventEmitter, name: string) =>
  new Promise<void>((resolve) => emitter.once(name, () => resolve()));

describe('Redis killed mid-traffic: each onStoreError mode degrades and recovers', () => {
  // Phases are marked by events, not by wall time: the limiter's 'store-error' and 'store-recovered', the
  // client's 'close' and 'ready', and counts of calls made. The breaker runs on a ManualClock, so its
  // cooldown passes only when the test says so.
  for (const mode of ['fail-open', 'fail-closed', 'memory'] as const) {
    it(`${mode}: no call throws, the outage is reported as such, and Redis is used again after restart`, async () => {
      const server = await startRedis();
      const redis = new Redis(server.url, redisOptions(500));
      redis.on('error', () => {});
      const clock = new ManualClock(1_000);
      const l = new RateLimiter({
        windowMs: 60_000,
        maxRequests: 1_000,
        redis,
        onStoreError: mode,
        expectedNodes: 4,
        failureThreshold: 3,
        cooldownMs: 200,
        clock,
      });
      const events: string[] = [];
      l.on('store-error', () => events.push('store-error'));
      l.on('store-recovered', () => events.push('store-recovered'));
      const storeError = next(l, 'store-error');
      const recovered = next(l, 'store-recovered');
      let phase: 'up' | 'down' | 'back' = 'up';
      const byPhase = {
        up: [] as RateLimitResult[],
        down: [] as RateLimitResult[],
        back: [] as RateLimitResult[],
      };
      const errors: unknown[] = [];
      let calls = 0;
      // Resolves once `done()` holds, checked each time a call is answered.
      let waiting: { done: () => boolean; resolve: () => void } | undefined;
      const until = (done: () => boolean) =>
        new Promise<void>((resolve) => {
          waiting = { done, resolve };
        });
      const after = (n: number) => {
        const target = calls + n;
        return until(() => calls >= target);
      };
      let stop = false;
      try {
        await whenConnected(redis, 2_000);
        const traffic = Promise.all(
          Array.from({ length: 4 }, async (_, w) => {
            while (!stop) {
              try {
                // Counted in the phase it ends in: a check that fails when Redis dies belongs to the outage.
                const result = await l.allow(`client-${w}`);
                byPhase[phase].push(result);
              } catch (error) {
                errors.push(error);
              }
              calls++;
              if (waiting?.done()) {
                waiting.resolve();
                waiting = undefined;
              }
              // Yield to I/O (the client's reconnects, the test's own awaits) between calls.
              await new Promise((resolve) => setImmediate(resolve));
            }
          }),
        );
        await after(40);
        // A check in flight when Redis dies fails at once (nothing waits for a reconnect), so the phase
        // changes before the kill.
        phase = 'down';
        const closed = next(redis, 'close');
        await server.kill();
        await closed;
        await storeError;
        await until(() => l.stats().breakerOpens === 1);
        const open = l.stats();
        await after(200);
        // While the breaker is open, calls do not go to Redis: the store errors stop growing with the calls
        // (a check that had passed the breaker just before it opened may still fail: one per caller at most).
        const stormErrors = l.stats().storeErrors - open.storeErrors;
        assert.ok(stormErrors <= 4, `${stormErrors} store errors in 200 calls while the breaker was open`);
        assert.equal(l.stats().breakerState, 1);
        // Its cooldown over, one probe goes to Redis, fails, and opens the breaker again.
        const beforeProbe = l.stats().storeErrors;
        await clock.advance(200);
        await until(() => l.stats().breakerOpens === 2);
        assert.equal(l.stats().storeErrors, beforeProbe + 1, 'one probe after the cooldown');

        const ready = next(redis, 'ready');
        await server.restart();
        await ready;
        // The reconnect closes the breaker at once (no cooldown on the ManualClock has passed): the next
        // check goes to Redis and reports the recovery.
        await recovered;
        phase = 'back';
        await after(40);
        stop = true;
        await traffic;

        assert.deepEqual(errors, []);
        assert.ok(byPhase.up.every((r) => r.status === 'allowed' && r.degraded === undefined));
        if (mode === 'fail-open') {
          assert.ok(byPhase.down.some((r) => r.status === 'store-error' && r.allowed));
          assert.ok(l.stats().failOpen > 0);
        } else if (mode === 'fail-closed') {
          assert.ok(
            byPhase.down.some((r) => r.status === 'store-error' && !r.allowed && r.retryAfterMs! > 0),
          );
          assert.ok(l.stats().failClosed > 0);
        } else {
          const local = byPhase.down.filter((r) => r.degraded);
          assert.ok(local.length > 0);
          assert.ok(
            local.every((r) => r.limit === 250),
            'the local limit is the global one over expectedNodes',
          );
          assert.ok(l.stats().fallbackChecks > 0);
        }
        assert.ok(byPhase.back.length >= 40);
        assert.ok(
          byPhase.back.every((r) => r.status === 'allowed' && r.degraded === undefined),
          'Redis decides every call once it has recovered',
        );
        assert.deepEqual(events, ['store-error', 'store-recovered']);
      } finally {
        stop = true;
        await l.close();
        redis.disconnect();
        await server.stop();
      }
    });
  }

  it('fail-closed refuses with StoreError from consume, never RateLimitedError', async () => {
    const server = await startRedis();
    const l = new RateLimiter({
      windowMs: 60_000,
      maxRequests: 5,
      redis: server.url,
      onStoreError: 'fail-closed',
    });
    try {
      await server.kill();
      const error = await l.consume('k').catch((e: unknown) => e);
      assert.equal((error as { code?: string }).code, 'ERR_CLAWPERF_STORE');
    } finally {
      await l.close();
      await server.stop();
    }
  });
});
