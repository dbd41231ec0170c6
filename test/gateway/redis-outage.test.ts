/**
 * A gateway on a Redis that goes away and comes back: `/readyz` follows the connection with no traffic at
 * all, and the shared cache and global limits are back within 2 s of Redis. Each wait is for an event, with
 * a deadline.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { createGateway, type Gateway } from '../../src/gateway/server.ts';
import { type RedisServer, startRedis } from '../helpers/redis.ts';
import { waitFor } from '../helpers/servers.ts';

let redis: RedisServer;
const gateways: Gateway[] = [];

before(async () => {
  redis = await startRedis();
});
after(async () => {
  await Promise.all(gateways.map((g) => g.close()));
  await redis.stop();
});

/** Resolves with the event's arguments, or rejects naming what did not happen within `ms`. */
function within<T extends unknown[]>(ms: number, what: string, event: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms);
  });
  return Promise.race([event, deadline]).finally(() => clearTimeout(timer));
}

async function readyz(gw: Gateway): Promise<Record<string, unknown>> {
  return JSON.parse((await gw.app.inject({ method: 'GET', url: '/readyz' })).body);
}

async function node(): Promise<Gateway> {
  const gw = await createGateway({
    redisUrl: redis.url,
    cacheDir: false,
    localChatLatencyMs: 0,
    limits: { rpm: 1_000 },
    apiKeys: { key: 'tenant' },
  });
  gateways.push(gw);
  return gw;
}

const embed = (gw: Gateway, input: string) =>
  gw.app.inject({
    method: 'POST',
    url: '/v1/embeddings',
    payload: { model: 'local-embed', input },
    headers: { authorization: 'Bearer key' },
  });

describe('a gateway follows Redis with no traffic', () => {
  it('/readyz says down within 1 s of the kill and up again within 2 s of the restart; L2 and limits resume', async () => {
    const [a, b] = [await node(), await node()];
    assert.equal((await readyz(a)).redis, 'up');

    const degraded = once(a.cache, 'degraded');
    await redis.kill();
    await within(1_000, 'the cache noticing the outage', degraded);
    assert.deepEqual(await readyz(a), {
      status: 'ready',
      upstream: 'local',
      anthropic: 'local',
      redis: 'down',
    });

    const recovered = Promise.all([once(a.cache, 'recovered'), once(b.cache, 'recovered')]);
    await redis.restart();
    await within(2_000, 'both caches reconnecting', recovered);
    assert.equal((await readyz(a)).redis, 'up');

    // L2 is shared again: an answer cached by one node is a hit on the other.
    assert.equal((await embed(a, 'after the outage')).headers['x-clawperf-cache'], 'miss');
    // The answer goes out before the cache's Redis write completes; wait for that write.
    await waitFor(() => redis.cli('--scan', '--pattern', 'clawperf:gw:e:*') !== '', {
      what: 'the answer to reach Redis',
    });
    assert.equal((await embed(b, 'after the outage')).headers['x-clawperf-cache'], 'hit');
    // And limits are global again: both nodes' requests were counted in Redis.
    const counted = redis.cli('--scan', '--pattern', 'clawperf:gw:rl:*');
    assert.notEqual(counted, '', 'the limiter counted in Redis');
  });
});
