import assert from 'node:assert/strict';
import { type ChildProcess, fork } from 'node:child_process';
import { once } from 'node:events';
import { after, before, beforeEach, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type RedisServer, startRedis } from '../helpers/redis.ts';
import { waitFor } from '../helpers/servers.ts';

const worker = fileURLToPath(new URL('./fixtures/cache-node.ts', import.meta.url));
let redis: RedisServer;
const running: Node[] = [];

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

/** A cache node in a child process, called over IPC. */
class Node {
  readonly #child: ChildProcess;
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  #ids = 0;

  constructor(child: ChildProcess) {
    this.#child = child;
    child.on('message', (reply: { id: number; ok: boolean; result?: unknown; error?: string }) => {
      const waiter = this.#pending.get(reply.id);
      if (waiter === undefined) return;
      this.#pending.delete(reply.id);
      if (reply.ok) waiter.resolve(reply.result);
      else waiter.reject(new Error(reply.error));
    });
  }

  static async start(env: Record<string, string> = {}): Promise<Node> {
    const child = fork(worker, {
      execArgv: ['--import', 'tsx'],
      env: { ...process.env, REDIS_URL: redis.url, ...env },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    await once(child, 'message');
    const node = new Node(child);
    running.push(node);
    return node;
  }

  call(op: string, args: Record<string, unknown> = {}): Promise<unknown> {
    const id = ++this.#ids;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#child.send({ id, op, ...args });
    });
  }

  async stats(): Promise<Record<string, number>> {
    return (await this.call('stats')) as Record<string, number>;
  }

  async close(): Promise<void> {
    if (this.#child.exitCode !== null || !this.#child.connected) return;
    const exited = once(this.#child, 'exit');
    await this.call('close').catch(() => undefined);
    await exited;
  }
}

/** Runs `action` on one node, then waits until each of `others` has received another bus message. */
async function broadcast(others: Node[], action: () => Promise<unknown>): Promise<void> {
  const before = await Promise.all(others.map(async (n) => (await n.stats()).bus_received!));
  await action();
  for (let i = 0; i < others.length; i++) {
    await waitFor(async () => (await others[i]!.stats()).bus_received! > before[i]!, { what: 'bus message' });
  }
}

describe('three nodes in three processes on one Redis', () => {
  it('set, del and invalidateByTag on one node drop the copies in the others L1', async () => {
    const [a, b, c] = await Promise.all([Node.start(), Node.start(), Node.start()]);
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
    const nodes = await Promise.all([1, 2, 3, 4].map(() => Node.start({ LOCK: '1' })));
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
