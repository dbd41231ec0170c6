import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ChildNode } from '../helpers/child-node.ts';
import { type RedisServer, startRedis } from '../helpers/redis.ts';
import { waitFor } from '../helpers/servers.ts';

const worker = fileURLToPath(new URL('./fixtures/cache-node.ts', import.meta.url));
let redis: RedisServer;
const running: ChildNode[] = [];

before(async () => {
  redis = await startRedis();
});
beforeEach(() => {
  redis.cli('flushall');
});
after(async () => {
  await Promise.all(running.map((n) => n.close()));
  await redis.stop();
});

/** A cache node in a child process, called over IPC; `env` is added to its environment. */
async function startNode(env: Record<string, string> = {}): Promise<ChildNode> {
  const node = await ChildNode.start(worker, { REDIS_URL: redis.url, ...env });
  running.push(node);
  return node;
}

/** Runs `action` on one node, then waits until each of `others` has received another bus message. */
async function broadcast(others: ChildNode[], action: () => Promise<unknown>): Promise<void> {
  const before = await Promise.all(others.map(async (n) => (await n.stats()).bus_received!));
  await action();
  for (let i = 0; i < others.length; i++) {
    await waitFor(async () => (await others[i]!.stats()).bus_received! > before[i]!, { what: 'bus message' });
  }
}

describe('three nodes in three processes on one Redis', () => {
  it('set, del and invalidateByTag on one node drop the copies in the others L1', async () => {
    const [a, b, c] = await Promise.all([startNode(), startNode(), startNode()]);
    await a!.call('set', { key: 'k', value: 'v1', tags: ['t'] });
    assert.equal(await b!.call('get', { key: 'k' }), 'v1');
    assert.equal(await c!.call('get', { key: 'k' }), 'v1');
    await broadcast([b!, c!], () => a!.call('set', { key: 'k', value: 'v2', tags: ['t'] }));
    assert.equal(await b!.call('get', { key: 'k' }), 'v2');
    assert.equal(await c!.call('get', { key: 'k' }), 'v2');
    await broadcast([a!, b!], () => c!.call('del', { key: 'k' }));
    assert.equal(await a!.call('get', { key: 'k' }), undefined);
    assert.equal(await b!.call('get', { key: 'k' }), undefined);
    await a!.call('set', { key: 'k', value: 'v3', tags: ['t'] });
    assert.equal(await c!.call('get', { key: 'k' }), 'v3');
    await broadcast([a!, c!], () => b!.call('invalidate', { tags: ['t'] }));
    for (const n of [a!, b!, c!]) assert.equal(await n.call('get', { key: 'k' }), undefined);
    await Promise.all([a!.close(), b!.close(), c!.close()]);
  });
});

describe('stampede protection across processes', () => {
  it('4 processes with lock: true run the factory once', async () => {
    const nodes = await Promise.all([1, 2, 3, 4].map(() => startNode({ LOCK: '1' })));
    const results = await Promise.all(nodes.map((n) => n.call('getOrSet', { key: 'hot', delayMs: 300 })));
    assert.equal(new Set(results).size, 1, `results: ${results.join(', ')}`);
    const stats = await Promise.all(nodes.map((n) => n.stats()));
    assert.equal(
      stats.reduce((sum, s) => sum + s.factory_calls!, 0),
      1,
    );
    await Promise.all(nodes.map((n) => n.close()));
  });
});
