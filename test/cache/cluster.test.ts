import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Cluster } from 'ioredis';
import { MultiLevelCache } from '../../src/cache/index.ts';
import { type RedisCluster, startRedisCluster } from '../helpers/redis.ts';
import { waitFor } from '../helpers/servers.ts';

let cluster: RedisCluster;
const clients: Cluster[] = [];
const caches: MultiLevelCache<unknown>[] = [];

before(async () => {
  cluster = await startRedisCluster(3);
});
after(async () => {
  for (const cache of caches) await cache.close();
  for (const client of clients) client.disconnect();
  await cluster.stop();
});

async function node(): Promise<MultiLevelCache<unknown>> {
  const client = new Cluster(cluster.startupNodes, {
    enableAutoPipelining: true,
    redisOptions: { commandTimeout: 1_000 },
  });
  clients.push(client);
  const cache = new MultiLevelCache<unknown>({ redis: client });
  caches.push(cache);
  await cache.ready();
  return cache;
}

describe('on a 3-master Redis Cluster', () => {
  it("a tag's index, in the tag's own slot, drops the keys whose entries expired", async () => {
    const a = await node();
    const redis = clients.at(-1)!;
    const redisNow = async () => {
      const [s, us] = (await redis.nodes('master')[0]!.time()).map(Number);
      return s! * 1000 + us! / 1000;
    };
    await a.set('p:kept', 1, { tags: ['pruned'], ttlMs: 60_000 });
    await a.set('p:gone', 1, { tags: ['pruned'], ttlMs: 1 });
    const expires = (await redisNow()) + 1;
    // Redis's clock cannot be injected: wait until it has passed the entry's end.
    await waitFor(async () => (await redisNow()) > expires, { timeoutMs: 2000 });
    await a.set('p:alive', 1, { tags: ['pruned'], ttlMs: 60_000 });
    assert.deepEqual((await redis.zrange('clawperf:t:{pruned}:z', 0, -1)).sort(), ['p:alive', 'p:kept']);
    await a.clear();
  });

  it('entries spread over more than one master, and set/get/tags/invalidate work across slots', async () => {
    const a = await node();
    const b = await node();
    for (let i = 0; i < 60; i++)
      await a.set(`key:${i}`, { i }, { tags: [i % 2 === 0 ? 'even' : 'odd', 'all'] });
    const perMaster = cluster.nodes.map((n) => Number(n.cli('dbsize')));
    assert.ok(perMaster.filter((n) => n > 0).length > 1, `keys per master: ${perMaster.join(', ')}`);
    for (const n of cluster.nodes) {
      const keys = n.cli('--scan', '--pattern', 'clawperf:e:*').split('\n').filter(Boolean);
      assert.ok(
        keys.every((k) => /^clawperf:e:\{key:\d+\}$/.test(k)),
        'each key is hash-tagged by itself',
      );
    }

    const values = await b.getMany(Array.from({ length: 60 }, (_, i) => `key:${i}`));
    assert.deepEqual(
      values,
      Array.from({ length: 60 }, (_, i) => ({ i })),
    );
    assert.equal(b.stats().l2_hits, 60);

    await a.invalidateByTag('even');
    // b still holds key:0 in L1 until the tag's bus message arrives (counting messages would race with
    // the 60 set messages, which may still be arriving).
    await waitFor(async () => (await b.get('key:0')) === undefined, { what: 'the invalidation on the bus' });
    for (let i = 0; i < 60; i++) {
      assert.deepEqual(await b.get(`key:${i}`), i % 2 === 0 ? undefined : { i }, `key:${i}`);
      assert.deepEqual(await a.get(`key:${i}`), i % 2 === 0 ? undefined : { i }, `key:${i}`);
    }
    await a.del('key:1');
    assert.equal(await a.get('key:1'), undefined);
    await a.invalidateByTag('all');
    assert.deepEqual(
      (await a.getMany(['key:3', 'key:5'])).filter((v) => v !== undefined),
      [],
    );
  });
});
