import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { hashTag, RedisScript, releaseRedis, toRedis } from '../../src/internal/redis.ts';
import { type RedisServer, startRedis } from '../helpers/redis.ts';

describe('internal redis', () => {
  let redis: RedisServer;
  before(async () => {
    redis = await startRedis();
  });
  after(() => redis.stop());

  it('runs a script by SHA, loading it on the first NOSCRIPT', async () => {
    const owned = toRedis('options.redis', redis.url);
    try {
      const incr = new RedisScript("return redis.call('INCRBY', KEYS[1], ARGV[1])");
      redis.cli('SCRIPT', 'FLUSH');
      assert.equal(await incr.run(owned.client, ['n'], [2]), 2);
      assert.equal(redis.cli('SCRIPT', 'EXISTS', incr.sha), '1');
      assert.equal(await incr.run(owned.client, ['n'], [3]), 5);
    } finally {
      await releaseRedis(owned);
    }
  });

  it('surfaces script errors other than NOSCRIPT', async () => {
    const owned = toRedis('options.redis', redis.url);
    try {
      await assert.rejects(
        new RedisScript("return redis.call('NOPE')").run(owned.client, [], []),
        /Unknown Redis command|unknown command/i,
      );
    } finally {
      await releaseRedis(owned);
    }
  });

  it("closes the clients it creates, and never the user's", async () => {
    const mine = new Redis(redis.url);
    const given = toRedis('options.redis', mine);
    assert.equal(given.owned, false);
    await releaseRedis(given);
    assert.equal(await mine.ping(), 'PONG');
    await mine.quit();
    const created = toRedis('options.redis', redis.url);
    assert.equal(created.owned, true);
    await created.client.ping();
    await releaseRedis(created);
    assert.equal(created.client.status, 'end');
  });

  it('bounds every command by the command timeout while Redis is down', async () => {
    const owned = toRedis('options.redis', 'redis://127.0.0.1:1', 200);
    owned.client.on('error', () => {});
    try {
      await assert.rejects(owned.client.get('k'), /timed out|ECONNREFUSED|retries/i);
    } finally {
      await releaseRedis(owned);
    }
  });

  it('rejects anything but a client or a redis:// URL, naming the option', () => {
    assert.throws(
      () => toRedis('options.redis', 'localhost:6379'),
      /options\.redis must be an ioredis Redis or Cluster instance or a redis:\/\/ URL/,
    );
    assert.throws(() => toRedis('options.redis', 42), TypeError);
  });

  it('builds hash tags that braces inside an id cannot break', () => {
    assert.equal(hashTag('user:1'), '{user:1}');
    assert.equal(hashTag('a}b{c'), '{a_b_c}');
  });
});
