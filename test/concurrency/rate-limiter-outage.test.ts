/**
 * A rate limiter on a Redis that went away must not wait for it: every check takes the fallback at once,
 * and limits are global again as soon as Redis is back. Counts and events, never wall time.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { RateLimiter } from '../../src/concurrency/rate-limiter.ts';
import { redisOptions, whenConnected } from '../../src/internal/redis.ts';
import { type RedisServer, startRedis } from '../helpers/redis.ts';

let redis: RedisServer;
before(async () => {
  redis = await startRedis();
});
after(() => redis.stop());

describe('a limiter on a Redis that is down', () => {
  it('takes the fallback for every check at once: nothing queues on the dead connection', async () => {
    // The client is the one the limiter makes from a URL, with a command timeout far beyond any test's
    // patience: a check that waited for the connection or the timeout could not finish.
    const client = new Redis(redis.url, redisOptions(600_000));
    client.on('error', () => {});
    const limiter = new RateLimiter({
      policies: [{ name: 'rpm', windowMs: 60_000, limit: 1_000 }],
      redis: client,
      keyPrefix: 'outage',
      failureThreshold: 1_000,
    });
    try {
      await whenConnected(client, 1_000);
      assert.equal((await limiter.allow('tenant')).degraded, undefined, 'Redis decides while it is up');
      const closed = once(client, 'close');
      await redis.kill();
      await closed;
      const checks = Array.from({ length: 50 }, () => limiter.allow('tenant'));
      assert.equal(
        (client as unknown as { offlineQueue: unknown[] }).offlineQueue.length,
        0,
        'no command waits for a reconnect',
      );
      const results = await Promise.all(checks);
      assert.equal(results.filter((r) => r.allowed && r.degraded === true).length, 50);
      assert.equal(limiter.stats().fallbackChecks, 50);

      const ready = once(client, 'ready');
      await redis.restart();
      await ready;
      const back = await limiter.allow('tenant');
      assert.equal(back.degraded, undefined, 'Redis decides again once the connection is back');
      assert.equal(limiter.stats().fallbackChecks, 50);
    } finally {
      await limiter.close();
      client.disconnect();
    }
  });

  it('a reconnect closes the circuit at once, without waiting for its cooldown', async () => {
    const client = new Redis(redis.url, redisOptions());
    client.on('error', () => {});
    const limiter = new RateLimiter({
      policies: [{ name: 'rpm', windowMs: 60_000, limit: 1_000 }],
      redis: client,
      keyPrefix: 'cooldown',
      failureThreshold: 1,
      cooldownMs: 3_600_000,
    });
    try {
      await whenConnected(client, 1_000);
      const closed = once(client, 'close');
      await redis.kill();
      await closed;
      // One failed check opens the circuit for an hour.
      assert.equal((await limiter.allow('tenant')).degraded, true);
      assert.equal(limiter.stats().breakerState, 1);
      const ready = once(client, 'ready');
      await redis.restart();
      await ready;
      const check = await limiter.allow('tenant');
      assert.equal(check.degraded, undefined, 'Redis decides, an hour early');
      assert.equal(limiter.stats().breakerState, 0);
    } finally {
      await limiter.close();
      client.disconnect();
    }
  });
});
