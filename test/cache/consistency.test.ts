import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { CacheConsistencyManager, MultiLevelCache } from '../../src/cache/index.ts';
import { ClosedError, StoreError } from '../../src/errors.ts';
import { ChildNode } from '../helpers/child-node.ts';
import { type RedisServer, startRedis } from '../helpers/redis.ts';
import { waitFor } from '../helpers/servers.ts';

const processNode = fileURLToPath(new URL('./fixtures/consistency-node.ts', import.meta.url));
let redis: RedisServer;
const closers: (() => Promise<unknown>)[] = [];
let namespaces = 0;

before(async () => {
  redis = await startRedis();
});
after(async () => {
  for (const close of closers.reverse()) await close().catch(() => undefined);
  await redis.stop();
});

/**
 * A fake database (no real one is needed to order commits): an in-memory table whose reads and writes the
 * tests can hold at chosen points, to make commit order differ from call order.
 */
class FakeDatabase {
  readonly rows = new Map<string, string>();
  reads = 0;

  read(key: string): string | undefined {
    this.reads++;
    return this.rows.get(key);
  }
}

/** A promise with its resolver, to hold a step until the test releases it. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}

function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** mulberry32: a seeded random source, so sampled tests are deterministic. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface CacheNode {
  cache: MultiLevelCache<string>;
  manager: CacheConsistencyManager<string>;
}

/** `count` nodes (a cache and its manager each) sharing one Redis under a namespace of their own. */
async function cluster(
  count: number,
  options: ConstructorParameters<typeof CacheConsistencyManager<string>>[1] = {},
  url = redis.url,
): Promise<CacheNode[]> {
  const namespace = `cc${++namespaces}`;
  const nodes: CacheNode[] = [];
  for (let i = 0; i < count; i++) {
    const cache = new MultiLevelCache<string>({ redis: url, namespace });
    const manager = new CacheConsistencyManager(cache, { sampleRate: 0, ...options });
    closers.push(
      () => cache.close(),
      () => manager.close(),
    );
    nodes.push({ cache, manager });
  }
  await Promise.all(nodes.map((n) => n.cache.ready()));
  return nodes;
}

/** Runs `action`, then waits until each of `others` has received one more bus message. */
async function delivered(others: CacheNode[], action: () => Promise<unknown>): Promise<void> {
  const before = others.map((n) => n.cache.stats().bus_received);
  await action();
  for (let i = 0; i < others.length; i++) {
    await waitFor(() => others[i]!.cache.stats().bus_received > before[i]!, { what: 'bus message' });
  }
}

describe('writeThrough: database first, then every node drops the key', () => {
  it('after a write, every node serves the new value, and each node ignores its own message', async () => {
    const db = new FakeDatabase();
    db.rows.set('k', 'v1');
    const [a, b, c] = await cluster(3);
    for (const n of [a!, b!, c!]) assert.equal(await n.manager.readRepair('k', () => db.read('k')), 'v1');
    const ownBefore = a!.cache.stats().bus_received;
    await delivered([b!, c!], () =>
      a!.manager.writeThrough('k', 'v2', (value) => {
        db.rows.set('k', value);
      }),
    );
    for (const n of [a!, b!, c!]) assert.equal(await n.manager.readRepair('k', () => db.read('k')), 'v2');
    assert.equal(a!.cache.stats().bus_received, ownBefore, 'the writer ignored its own invalidation');
    assert.equal(a!.manager.stats().writes, 1);
    assert.notEqual(a!.manager.nodeId, b!.manager.nodeId, 'node ids are random per instance');
  });

  it('a reader that loaded before a write cannot put the older value back on any node', async () => {
    const db = new FakeDatabase();
    db.rows.set('k', 'old');
    const [a, b, c] = await cluster(3);
    const loaded = gate();
    const release = gate();
    const slowRead = b!.manager.readRepair('k', async () => {
      const value = db.read('k');
      loaded.open();
      await release.promise;
      return value;
    });
    await loaded.promise;
    await a!.manager.writeThrough('k', 'new', (value) => {
      db.rows.set('k', value);
    });
    // Redis time moves on before the refill, so only a version taken before the read can refuse it.
    await pause(20);
    release.open();
    assert.equal(await slowRead, 'old', 'the slow reader returns what it read');
    assert.ok(b!.cache.stats().writes_refused >= 1, 'its refill was refused');
    for (const n of [a!, b!, c!])
      assert.equal(await n.cache.get('k'), undefined, 'nothing cached the old value');
    for (const n of [a!, b!, c!]) assert.equal(await n.manager.readRepair('k', () => db.read('k')), 'new');
  });

  it('racing writers whose database commits land opposite to call order leave only the winner cached', async () => {
    const db = new FakeDatabase();
    db.rows.set('k', 'v0');
    const [a, b, c] = await cluster(3);
    const firstCommits = gate();
    const secondAcks = gate();
    const secondCommitted = gate();
    // Called first, commits last: the database ends with "first".
    const first = a!.manager.writeThrough('k', 'first', async (value) => {
      await firstCommits.promise;
      db.rows.set('k', value);
    });
    // Called second, commits first, but its acknowledgement comes back late.
    const second = b!.manager.writeThrough('k', 'second', async (value) => {
      db.rows.set('k', value);
      secondCommitted.open();
      await secondAcks.promise;
    });
    await secondCommitted.promise;
    // A reader loads between the two commits and holds its refill until after the last commit.
    const readerLoaded = gate();
    const readerRelease = gate();
    const reader = c!.manager.readRepair('k', async () => {
      const value = db.read('k');
      readerLoaded.open();
      await readerRelease.promise;
      return value;
    });
    await readerLoaded.promise;
    firstCommits.open();
    await first;
    // Redis time moves on before the refill, as above: Redis's clock is real and cannot be injected.
    await pause(20);
    readerRelease.open();
    assert.equal(await reader, 'second');
    for (const n of [a!, b!, c!])
      assert.notEqual(await n.cache.get('k'), 'second', "the loser's value is not cached");
    secondAcks.open();
    await second;
    assert.equal(db.rows.get('k'), 'first');
    for (const n of [a!, b!, c!]) assert.equal(await n.manager.readRepair('k', () => db.read('k')), 'first');
    for (const n of [a!, b!, c!]) assert.notEqual(await n.cache.get('k'), 'second');
  });

  it('a failing database write rejects and leaves every node cache untouched', async () => {
    const db = new FakeDatabase();
    db.rows.set('k', 'v1');
    const [a, b] = await cluster(2);
    for (const n of [a!, b!]) await n.manager.readRepair('k', () => db.read('k'));
    const published = a!.cache.stats().bus_published;
    const failure = new Error('deadlock detected');
    await assert.rejects(
      a!.manager.writeThrough('k', 'v2', () => Promise.reject(failure)),
      (error) => error === failure,
    );
    assert.equal(a!.manager.stats().write_failures, 1);
    assert.equal(a!.manager.stats().writes, 0);
    assert.equal(a!.cache.stats().bus_published, published, 'nothing was broadcast');
    assert.equal(a!.cache.stats().deletes, 0);
    for (const n of [a!, b!]) assert.equal(await n.cache.get('k'), 'v1');
  });
});

describe('readRepair: serve at once, verify a sample in the background', () => {
  it('a stale entry found by a verification is repaired on every node', async () => {
    const db = new FakeDatabase();
    db.rows.set('k', 'v1');
    const [a, b, c] = await cluster(3);
    // The first load's bus message reaches the other nodes before the verification takes its stamp: one
    // arriving after would refuse the repair's write (an invalidation newer than the stamp) for nothing.
    await delivered([b!, c!], async () => {
      assert.equal(await a!.manager.readRepair('k', () => db.read('k')), 'v1');
    });
    for (const n of [b!, c!]) assert.equal(await n.manager.readRepair('k', () => db.read('k')), 'v1');
    db.rows.set('k', 'v2');
    const repaired = once(b!.manager, 'repair');
    await delivered([a!, c!], async () => {
      assert.equal(
        await b!.manager.readRepair('k', () => db.read('k'), { sampleRate: 1 }),
        'v1',
        'served at once',
      );
      await repaired;
    });
    assert.equal(b!.manager.stats().repairs, 1);
    for (const n of [a!, b!, c!]) assert.equal(await n.cache.get('k'), 'v2');
  });

  it('a verification that finds the entry current repairs nothing', async () => {
    const db = new FakeDatabase();
    db.rows.set('k', 'v1');
    const [a] = await cluster(1, { sampleRate: 1 });
    await a!.manager.readRepair('k', () => db.read('k'));
    await a!.manager.readRepair('k', () => db.read('k'));
    await waitFor(() => a!.manager.stats().verifying === 0, { what: 'verification' });
    assert.deepEqual([a!.manager.stats().verifications, a!.manager.stats().repairs, db.reads], [1, 0, 2]);
  });

  it('1,000 hits at a sample rate of 0.01 read the database about 10 times, not 1,000', async () => {
    const db = new FakeDatabase();
    db.rows.set('k', 'v');
    const [a] = await cluster(1, { sampleRate: 0.01, random: seeded(7) });
    await a!.manager.readRepair('k', () => db.read('k'));
    const loads = db.reads;
    for (let i = 0; i < 1000; i++) {
      await a!.manager.readRepair('k', () => db.read('k'));
      await waitFor(() => a!.manager.stats().verifying === 0, { intervalMs: 1 });
    }
    const expected = Array.from({ length: 1000 }, seeded(7)).filter((r) => r < 0.01).length;
    assert.ok(expected >= 3 && expected <= 20, `the seeded source sampled ${expected} of 1,000`);
    assert.equal(db.reads - loads, expected);
    assert.equal(a!.manager.stats().verifications, expected);
    assert.equal(a!.manager.stats().read_hits, 1000);
  });

  it('sample rate 0 never reads the database on a hit', async () => {
    const db = new FakeDatabase();
    db.rows.set('k', 'v');
    const [a] = await cluster(1);
    await a!.manager.readRepair('k', () => db.read('k'));
    for (let i = 0; i < 200; i++) await a!.manager.readRepair('k', () => db.read('k'), { sampleRate: 0 });
    assert.equal(db.reads, 1);
  });

  it('one verification per key at a time', async () => {
    const db = new FakeDatabase();
    db.rows.set('k', 'v');
    db.rows.set('j', 'v');
    const [a] = await cluster(1, { sampleRate: 1 });
    await a!.manager.readRepair('k', () => db.read('k'));
    await a!.manager.readRepair('j', () => db.read('j'));
    const held = gate();
    let verifyReads = 0;
    const slow = async (key: string) => {
      verifyReads++;
      await held.promise;
      return db.read(key);
    };
    await Promise.all(Array.from({ length: 50 }, () => a!.manager.readRepair('k', () => slow('k'))));
    await a!.manager.readRepair('j', () => slow('j'));
    await waitFor(() => verifyReads === 2, { what: 'verification reads' });
    assert.equal(a!.manager.stats().verifications, 2, 'one verification for k, one for j');
    assert.equal(a!.manager.stats().verifications_skipped, 49);
    held.open();
    await waitFor(() => a!.manager.stats().verifying === 0, { what: 'verifications' });
    assert.equal(verifyReads, 2);
    await a!.manager.readRepair('k', () => slow('k'));
    await waitFor(() => a!.manager.stats().verifying === 0, { what: 'verification' });
    assert.equal(verifyReads, 3, 'k is verified again once the first verification is done');
  });

  it('verification errors are counted and emitted, never thrown at the caller', async () => {
    const db = new FakeDatabase();
    db.rows.set('k', 'v');
    const [a, b] = await cluster(2, { sampleRate: 1 });
    await a!.manager.readRepair('k', () => db.read('k'));
    const failure = new Error('connection reset');
    const emitted = once(a!.manager, 'verifyError');
    assert.equal(await a!.manager.readRepair('k', () => Promise.reject(failure)), 'v');
    const [key, error] = await emitted;
    assert.equal(key, 'k');
    assert.equal(error, failure);
    assert.equal(a!.manager.stats().verification_errors, 1);
    // Without a listener: still counted, nothing escapes as an unhandled rejection or 'error' event.
    assert.equal(
      await b!.manager.readRepair('k', () => {
        throw failure;
      }),
      'v',
    );
    await waitFor(() => b!.manager.stats().verification_errors === 1, { what: 'counted error' });
    assert.equal(await a!.cache.get('k'), 'v');
  });

  it('a miss loads once for concurrent callers and caches the result', async () => {
    const db = new FakeDatabase();
    db.rows.set('k', 'v');
    const [a] = await cluster(1);
    const held = gate();
    const reads = Array.from({ length: 100 }, () =>
      a!.manager.readRepair('k', async () => {
        await held.promise;
        return db.read('k');
      }),
    );
    held.open();
    assert.deepEqual(new Set(await Promise.all(reads)), new Set(['v']));
    assert.equal(db.reads, 1);
    assert.equal(await a!.cache.get('k'), 'v');
  });
});

describe('the cache mechanisms the manager relies on', () => {
  it('setIfUnchanged refuses a value read before a delete on another node, and takes one read after', async () => {
    const [a, b] = await cluster(2);
    const before = await b!.cache.stamp();
    assert.equal(await a!.cache.invalidate('k'), true, 'tombstoned in Redis and published');
    assert.equal(await b!.cache.setIfUnchanged('k', 'read before', before), false);
    assert.equal(await a!.cache.get('k'), undefined);
    // A stamp never runs ahead of Redis time, so one taken at the very instant of a tombstone may still
    // be older than it (a refill refused for nothing, never a stale one accepted).
    await pause(5);
    const after = await b!.cache.stamp();
    await delivered([a!], () => b!.cache.setIfUnchanged('k', 'read after', after));
    assert.equal(await a!.cache.get('k'), 'read after');
  });
});

describe('options, identity and lifecycle', () => {
  it('invalid options are TypeErrors naming the option', async () => {
    const [a] = await cluster(1);
    assert.throws(() => new CacheConsistencyManager(a!.cache, { sampleRate: 2 }), /options\.sampleRate/);
    assert.throws(() => new CacheConsistencyManager(a!.cache, { nodeId: 'other' }), {
      name: 'TypeError',
      message: `options.nodeId must be the cache's nodeId (${JSON.stringify(a!.cache.nodeId)}; set it with MultiLevelCacheOptions.nodeId), got "other"`,
    });
    assert.throws(() => new CacheConsistencyManager({} as MultiLevelCache<string>), {
      name: 'TypeError',
      message: 'cache must be a MultiLevelCache, got an object',
    });
    assert.equal(new CacheConsistencyManager(a!.cache, { nodeId: a!.cache.nodeId }).nodeId, a!.cache.nodeId);
  });

  it('stats are flat numbers and statsCounters lists only counters', async () => {
    const [a] = await cluster(1);
    const stats = a!.manager.stats();
    for (const [name, value] of Object.entries(stats)) assert.equal(typeof value, 'number', name);
    for (const name of a!.manager.statsCounters) assert.ok(name in stats);
    assert.ok(!a!.manager.statsCounters.includes('verifying'));
  });

  it('close is idempotent and later calls reject with ClosedError', async () => {
    const [a] = await cluster(1);
    await a!.manager.close();
    await a!.manager.close();
    await assert.rejects(
      a!.manager.readRepair('k', () => 'v'),
      ClosedError,
    );
    await assert.rejects(
      a!.manager.writeThrough('k', 'v', () => undefined),
      ClosedError,
    );
  });
});

describe('during a Redis outage', () => {
  it('a committed write that cannot reach other nodes rejects with StoreError and drops the local copy', async () => {
    const own = await startRedis();
    closers.push(() => own.stop());
    const db = new FakeDatabase();
    db.rows.set('k', 'v1');
    const [a] = await cluster(1, {}, own.url);
    await a!.manager.readRepair('k', () => db.read('k'));
    await own.kill();
    await assert.rejects(
      a!.manager.writeThrough('k', 'v2', (value) => {
        db.rows.set('k', value);
      }),
      (error) => error instanceof StoreError && /committed/.test(error.message),
    );
    assert.equal(db.rows.get('k'), 'v2', 'the database write stands');
    assert.equal(a!.manager.stats().invalidation_failures, 1);
    assert.equal(await a!.cache.get('k'), undefined, "this node's copy is gone");
  });
});

/** A node in a child process (cache + manager), called over IPC. */
async function startProcessNode(): Promise<ChildNode> {
  const node = await ChildNode.start(processNode, { REDIS_URL: redis.url });
  closers.push(() => node.close());
  return node;
}

describe('nodes in separate processes', () => {
  it('writeThrough and read repair reach the other processes over the Redis bus', async () => {
    const db = new Redis(redis.url);
    closers.push(() => db.quit());
    await db.set('db:k', 'v1');
    const [a, b] = await Promise.all([startProcessNode(), startProcessNode()]);
    assert.notEqual((await a!.stats()).node, (await b!.stats()).node);
    for (const n of [a!, b!]) assert.equal(await n.call('readRepair', { key: 'k' }), 'v1');

    const received = async (n: ChildNode) => (await n.stats()).bus_received!;
    let before = await received(b!);
    await a!.call('writeThrough', { key: 'k', value: 'v2' });
    await waitFor(async () => (await received(b!)) > before, { what: 'bus message in the other process' });
    assert.equal(await b!.call('readRepair', { key: 'k' }), 'v2');
    assert.equal(await a!.call('readRepair', { key: 'k' }), 'v2');

    // A change the cache never heard of: read repair on one process fixes the other.
    await db.set('db:k', 'v3');
    before = await received(a!);
    assert.equal(await b!.call('readRepair', { key: 'k', sampleRate: 1 }), 'v2', 'served at once');
    await waitFor(async () => (await b!.stats()).repairs === 1, { what: 'repair' });
    await waitFor(async () => (await received(a!)) > before, { what: 'repair message in the other process' });
    assert.equal(await a!.call('get', { key: 'k' }), 'v3');
    await Promise.all([a!.close(), b!.close()]);
  });
});
