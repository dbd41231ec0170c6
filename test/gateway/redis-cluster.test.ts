/**
 * Three gateway processes on a real 3-master Redis Cluster, given by its seed nodes: one global limit, one
 * shared cache, and invalidations that reach every node. A FAKE upstream (each chat answer has its own id)
 * stands in for the provider.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { type GatewayProcess, type ProcessAnswer, startGatewayProcess } from '../helpers/gateway-process.ts';
import { type RedisCluster, startRedisCluster, TEST_COMMAND_TIMEOUT_MS } from '../helpers/redis.ts';
import { waitFor } from '../helpers/servers.ts';
import { type FakeUpstream, startFakeUpstream } from './fake-upstream.ts';

const RPM = 50;
/** A tenant no earlier run has counted against: its window starts empty. */
const LIMITED = `tenant-limited-${randomUUID()}`;
const SHARED = 'tenant-shared';
const limited = { authorization: 'Bearer limited-key' };
const shared = { authorization: 'Bearer shared-key' };
const admin = { authorization: 'Bearer admin' };

let cluster: RedisCluster;
let fake: FakeUpstream;
let nodes: GatewayProcess[] = [];

before(async () => {
  [cluster, fake] = await Promise.all([startRedisCluster(3), startFakeUpstream()]);
  nodes = await Promise.all(
    [0, 1, 2].map(() =>
      startGatewayProcess([
        '--redis',
        cluster.url,
        '--redis-command-timeout-ms',
        String(TEST_COMMAND_TIMEOUT_MS),
        '--upstream',
        fake.url,
        '--limits',
        `rpm=${RPM}`,
        '--api-keys',
        `limited-key:${LIMITED},shared-key:${SHARED}`,
        '--admin-token',
        'admin',
      ]),
    ),
  );
});
after(async () => {
  await Promise.all(nodes.map((n) => n.stop()));
  await Promise.all([cluster?.stop(), fake?.close()]);
});

const chat = (content: string) => ({
  model: 'fake-chat',
  temperature: 0,
  messages: [{ role: 'user', content }],
});

/** Waits until `key`'s entry is in Redis: the answer goes out before the cache's Redis write completes. */
async function inRedis(key: string): Promise<void> {
  const name = `clawperf:gw:e:{${key}}`;
  await waitFor(() => cluster.masterOf(name).cli('EXISTS', name) === '1', { what: `${name} in Redis` });
}

/**
 * Waits until the bus is quiet: every node has received every message the others published (each node
 * hears every message but its own).
 */
async function busSettled(): Promise<number[]> {
  let received: number[] = [];
  await waitFor(
    async () => {
      const published = await Promise.all(nodes.map((n) => n.metric('clawperf_cache_bus_published_total')));
      received = await Promise.all(nodes.map((n) => n.metric('clawperf_cache_bus_received_total')));
      const total = published.reduce((a, b) => a + b, 0);
      return received.every((r, i) => r === total - published[i]!);
    },
    { what: 'every bus message to arrive' },
  );
  return received;
}

/** An answer cached by `a` and served from L1 by all three: its id and cache key. */
async function cachedEverywhere(prompt: string): Promise<{ id: string; key: string }> {
  const [a, b, c] = nodes as [GatewayProcess, GatewayProcess, GatewayProcess];
  const first = await a.post('/v1/chat/completions', chat(prompt), shared);
  assert.equal(first.status, 200, JSON.stringify(first.body));
  assert.equal(first.headers['x-clawperf-cache'], 'miss');
  const key = String(first.headers['x-clawperf-cache-key']);
  await inRedis(key);
  for (const gw of [b, c]) {
    const res = await gw.post('/v1/chat/completions', chat(prompt), shared);
    assert.equal(res.headers['x-clawperf-cache'], 'hit');
    assert.equal(res.body.id, first.body.id);
  }
  return { id: String(first.body.id), key };
}

/**
 * Invalidates on node `by`: that node serves no old answer once the call returns; each other node serves
 * none once the invalidation's bus message has reached it.
 */
async function invalidatesEverywhere(
  by: number,
  prompt: string,
  body: (key: string) => { key: string } | { tag: string },
): Promise<void> {
  const old = await cachedEverywhere(prompt);
  const before = await busSettled();
  const inv = await nodes[by]!.post('/admin/cache/invalidate', body(old.key), admin);
  assert.equal(inv.status, 200);
  const issuer = await nodes[by]!.post('/v1/chat/completions', chat(prompt), shared);
  assert.notEqual(issuer.body.id, old.id, 'the issuing node serves the old answer after the call returned');
  const others = nodes.map((_, i) => i).filter((i) => i !== by);
  // The invalidation is the first message the issuing node published since `before`.
  await waitFor(
    async () =>
      (await Promise.all(others.map((i) => nodes[i]!.metric('clawperf_cache_bus_received_total')))).every(
        (r, j) => r > before[others[j]!]!,
      ),
    { what: 'the invalidation to reach the other nodes' },
  );
  for (const i of others) {
    const res: ProcessAnswer = await nodes[i]!.post('/v1/chat/completions', chat(prompt), shared);
    assert.equal(res.status, 200);
    assert.notEqual(res.body.id, old.id, `node ${i} serves the old answer after the bus message arrived`);
  }
}

describe('three gateway processes on a Redis Cluster', () => {
  it('each reports Redis up in /readyz', async () => {
    for (const gw of nodes) {
      await waitFor(async () => (await gw.get('/readyz')).body.redis === 'up', {
        what: 'redis up in /readyz',
        describe: gw.output,
      });
    }
  });

  it(`admit exactly ${RPM} of 120 concurrent requests of one tenant spread evenly over the three`, async () => {
    const results = await Promise.all(
      Array.from({ length: 120 }, (_, i) =>
        nodes[i % 3]!.post('/v1/embeddings', { model: 'local-embed', input: `limit ${i}` }, limited),
      ),
    );
    const statuses = results.map((r) => r.status);
    assert.equal(statuses.filter((s) => s === 200).length, RPM);
    assert.equal(statuses.filter((s) => s === 429).length, 120 - RPM);
  });

  it('serve an answer cached by one node from the others, with one upstream call', async () => {
    const before = fake.total('/v1/chat/completions');
    await cachedEverywhere('shared across the cluster');
    assert.equal(fake.total('/v1/chat/completions') - before, 1);
  });

  it('an invalidation by key reaches every node', async () => {
    await invalidatesEverywhere(1, 'invalidated by key', (key) => ({ key }));
  });

  it('an invalidation by tag reaches every node', async () => {
    await invalidatesEverywhere(2, 'invalidated by tag', () => ({ tag: `tenant:${SHARED}` }));
  });

  it('hash-tag every key they wrote, so the keys of each script share a slot', () => {
    const keys = cluster.nodes.flatMap((n) => n.cli('--scan').split('\n').filter(Boolean));
    for (const kind of [':e:', ':t:', ':rl:']) {
      assert.ok(
        keys.some((k) => k.includes(kind)),
        `no ${kind} key among ${keys.length}`,
      );
    }
    assert.deepEqual(
      keys.filter((k) => !/\{[^{}]+\}/.test(k)),
      [],
    );
  });
});
