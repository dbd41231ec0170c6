import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { type BusMessage, MultiLevelCache, RedisBus } from '../../src/cache/index.ts';
import { type RedisServer, startRedis } from '../helpers/redis.ts';
import { waitFor } from '../helpers/servers.ts';

let redis: RedisServer;
const closers: (() => Promise<void>)[] = [];

before(async () => {
  redis = await startRedis();
});
after(async () => {
  for (const close of closers.reverse()) await close();
  await redis.stop();
});
beforeEach(() => {
  redis.cli('flushall');
});

async function nodes(count: number): Promise<MultiLevelCache<unknown>[]> {
  const caches = Array.from({ length: count }, () => new MultiLevelCache<unknown>({ redis: redis.url }));
  for (const cache of caches) {
    closers.push(() => cache.close());
    await cache.ready();
  }
  return caches;
}

/** Runs `action`, then waits until each of `others` has received one more bus message. */
async function broadcast(others: MultiLevelCache<unknown>[], action: () => Promise<void>): Promise<void> {
  const before = others.map((c) => c.stats().bus_received);
  await action();
  await waitFor(() => others.every((c, i) => c.stats().bus_received > before[i]!), { what: 'bus messages' });
}

describe('every node drops its L1 copy when another node writes', () => {
  it('set, del and invalidateByTag on one of three nodes reach the other two', async () => {
    const [a, b, c] = await nodes(3);
    await a!.set('k', 'v1', { tags: ['t'] });
    assert.equal(await b!.get('k'), 'v1');
    assert.equal(await c!.get('k'), 'v1');
    await broadcast([b!, c!], () => a!.set('k', 'v2', { tags: ['t'] }));
    assert.equal(await b!.get('k'), 'v2', 'not the stale L1 copy');
    assert.equal(await c!.get('k'), 'v2');
    await broadcast([a!, c!], () => b!.del('k'));
    assert.equal(await a!.get('k'), undefined);
    assert.equal(await c!.get('k'), undefined);
    await broadcast([a!, b!], () => c!.set('k', 'v3', { tags: ['t'] }));
    assert.equal(await a!.get('k'), 'v3');
    assert.equal(await b!.get('k'), 'v3');
    await broadcast([a!, c!], () => b!.invalidateByTag('t'));
    for (const cache of [a!, b!, c!]) assert.equal(await cache.get('k'), undefined);
  });
});

describe('node ids', () => {
  it('each instance has its own random id and ignores its own messages', async () => {
    const [a, b] = await nodes(2);
    assert.notEqual(a!.nodeId, b!.nodeId);
    await broadcast([b!], () => a!.set('k', 'v'));
    assert.equal(a!.stats().bus_received, 0);
    assert.equal(a!.stats().bus_published, 1);
    assert.equal(await a!.get('k'), 'v');
    assert.equal(a!.stats().l1_hits, 1, "a's own message did not drop its L1 copy");
  });

  it('a bus delivers only other nodes messages, keys and tags alike', async () => {
    const client = new Redis(redis.url);
    closers.push(async () => {
      client.disconnect();
    });
    const got: BusMessage[][] = [[], []];
    const buses = [0, 1].map(() => {
      const bus = new RedisBus({ client, channel: 'test:bus' });
      closers.push(() => bus.close());
      return bus;
    });
    for (let i = 0; i < 2; i++) {
      await buses[i]!.subscribe({ message: (m) => got[i]!.push(m), reconnected: () => undefined });
    }
    await buses[0]!.publish({ keys: ['a', 'b'] });
    await buses[0]!.publish({ tag: 't' });
    await buses[1]!.publish({ all: true });
    await waitFor(() => got[1]!.length === 2 && got[0]!.length === 1, { what: 'messages' });
    assert.deepEqual(got[1], [{ keys: ['a', 'b'] }, { tag: 't' }]);
    assert.deepEqual(got[0], [{ all: true }]);
  });

  it('an empty channel is a TypeError naming the option', () => {
    const client = {} as Redis;
    assert.throws(() => new RedisBus({ client, channel: '' }), {
      name: 'TypeError',
      message: 'options.channel must be a non-empty string, got ""',
    });
  });
});

describe('a dropped subscription clears L1', () => {
  it('after the subscriber reconnects, L1 is empty because messages were lost', async () => {
    const [a] = await nodes(1);
    await a!.set('k', 'v');
    assert.equal(a!.stats().l1_entries, 1);
    redis.cli('client', 'kill', 'type', 'pubsub');
    await waitFor(() => a!.stats().bus_reconnects === 1, { what: 'the bus to reconnect' });
    assert.equal(a!.stats().l1_entries, 0);
    assert.equal(await a!.get('k'), 'v', 'served from L2 again');
    assert.equal(a!.stats().l2_hits, 1);
  });
});
