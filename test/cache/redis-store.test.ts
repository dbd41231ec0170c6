import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import {
  MultiLevelCache,
  type MultiLevelCacheOptions,
  RedisStore,
  type StoredEntry,
} from '../../src/cache/index.ts';
import { ManualClock } from '../../src/internal/clock.ts';
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

async function make<T = unknown>(options: MultiLevelCacheOptions = {}): Promise<MultiLevelCache<T>> {
  const cache = new MultiLevelCache<T>(options.l2 === undefined ? { redis: redis.url, ...options } : options);
  closers.push(() => cache.close());
  await cache.ready();
  return cache;
}

/** Calls per command since the last reset, from INFO commandstats. */
function commandCalls(): Record<string, number> {
  const calls: Record<string, number> = {};
  for (const line of redis.cli('info', 'commandstats').split('\n')) {
    const m = /^cmdstat_([a-z|]+):calls=(\d+)/.exec(line.trim());
    if (m) calls[m[1]!] = Number(m[2]);
  }
  for (const name of Object.keys(calls)) if (name === 'info' || name.startsWith('config')) delete calls[name];
  return calls;
}

/** A RedisStore whose writes wait for a gate: the injected delay of a slow writer. */
class SlowStore extends RedisStore {
  #gate: Promise<void> | undefined;
  #arrived: (() => void) | undefined;

  /** Holds the next write until `release()`; `arrived` resolves once a write is being held. */
  hold(): { arrived: Promise<void>; release: () => void } {
    let release!: () => void;
    this.#gate = new Promise((r) => (release = r));
    const arrived = new Promise<void>((r) => (this.#arrived = r));
    return { arrived, release };
  }

  override async setFenced(key: string, entry: StoredEntry, fence: string): Promise<boolean> {
    const gate = this.#gate;
    this.#gate = undefined;
    if (gate !== undefined) {
      this.#arrived?.();
      await gate;
    }
    return super.setFenced(key, entry, fence);
  }
}

describe('an L2 hit is one Redis round trip', () => {
  it('get with L1 off sends exactly one GET per call', async () => {
    const cache = await make<string>({ l1: false });
    await cache.set('k', 'v', { tags: ['t'] });
    redis.cli('config', 'resetstat');
    for (let i = 0; i < 10; i++) assert.equal(await cache.get('k'), 'v');
    assert.deepEqual(commandCalls(), { get: 10 });
  });

  it('concurrent gets of one tick go out as one MGET, each still served by Redis', async () => {
    const cache = await make<number>({ l1: false });
    for (let i = 0; i < 50; i++) await cache.set(`k${i}`, i);
    redis.cli('config', 'resetstat');
    const values = await Promise.all(Array.from({ length: 50 }, (_, i) => cache.get(`k${i}`)));
    assert.deepEqual(
      values,
      Array.from({ length: 50 }, (_, i) => i),
    );
    assert.deepEqual(commandCalls(), { mget: 1 });
    assert.match(redis.cli('info', 'stats'), /keyspace_hits:50\r?\n/);
  });

  it('getMany of 100 keys is one MGET', async () => {
    const cache = await make<number>({ l1: false });
    for (let i = 0; i < 100; i++) await cache.set(`k${i}`, i);
    redis.cli('config', 'resetstat');
    const values = await cache.getMany(Array.from({ length: 100 }, (_, i) => `k${i}`));
    assert.deepEqual(
      values,
      Array.from({ length: 100 }, (_, i) => i),
    );
    assert.deepEqual(commandCalls(), { mget: 1 });
  });
});

describe('values survive the trip through Redis', () => {
  it('Date, Map, Set, BigInt, Buffer, undefined and null, and falsy values', async () => {
    const writer = await make({ l1: false });
    const reader = await make({ l1: false });
    const value = {
      d: new Date(5),
      m: new Map([[1, 'a']]),
      s: new Set([2]),
      b: 7n,
      buf: Buffer.from('hi'),
      u: undefined,
      n: null,
    };
    await writer.set('k', value);
    assert.deepEqual(await reader.get('k'), value);
    for (const falsy of [0, '', false, null]) {
      await writer.set('f', falsy);
      assert.equal(await reader.get('f'), falsy);
    }
  });
});

describe('back-fill from L2 carries the remaining TTL', () => {
  it('an L1 copy made 6 s into a 10 s TTL lives 4 s', async () => {
    const clock = new ManualClock();
    const writer = await make({ clock });
    const reader = await make({ clock });
    await writer.set('k', 'v', { ttlMs: 10_000 });
    // The write's bus message must not overtake the read below, or the read would rightly skip the back-fill.
    await waitFor(() => reader.stats().bus_received === 1, { intervalMs: 10, what: 'the bus message' });
    await clock.advance(6_000);
    assert.equal(await reader.get('k'), 'v');
    assert.equal(reader.stats().l2_hits, 1);
    await clock.advance(3_000);
    assert.equal(await reader.get('k'), 'v');
    assert.equal(reader.stats().l1_hits, 1);
    await clock.advance(1_100);
    assert.equal(await reader.get('k'), undefined);
  });
});

describe('versioned writes', () => {
  it('an older version never overwrites a newer one', async () => {
    const store = new RedisStore({ redis: redis.url });
    closers.push(() => store.close());
    await store.syncTime();
    const now = store.now();
    const entry = (data: string, version: number): StoredEntry => ({
      data,
      version,
      ttlMs: 60_000,
      graceMs: 0,
      tags: [],
    });
    assert.equal(await store.set('k', entry('"new"', now)), true);
    assert.equal(await store.set('k', entry('"old"', now - 1_000)), false);
    assert.equal((await store.get('k'))?.data, '"new"');
    await store.delete('k');
    assert.equal(await store.set('k', entry('"before the delete"', now)), false, 'the delete is remembered');
    assert.equal(await store.get('k'), undefined);
  });

  it('tags are recorded in Redis with the value, each tag index in its own slot', async () => {
    const cache = await make();
    await cache.set('k', 'v', { tags: ['a', 'b'] });
    assert.match(redis.cli('get', 'clawperf:e:{k}'), /\|\["a","b"\]\n"v"$/);
    assert.equal(redis.cli('zrange', 'clawperf:t:{a}:z', '0', '-1'), 'k');
    assert.equal(redis.cli('zrange', 'clawperf:t:{b}:z', '0', '-1'), 'k');
  });

  it("a tag's index drops the keys whose entries expired when the tag is written again", async () => {
    const cache = await make({ l1: false });
    const redisNow = () => {
      const [s, us] = redis.cli('time').split('\n').map(Number);
      return s! * 1000 + us! / 1000;
    };
    await cache.set('kept', 'v', { tags: ['tenant:a'], ttlMs: 60_000 });
    await cache.set('gone', 'v', { tags: ['tenant:a'], ttlMs: 1 });
    const expires = redisNow() + 1;
    // Redis's clock cannot be injected: wait until it has passed the entry's end.
    await waitFor(() => redisNow() > expires, { timeoutMs: 2000 });
    await cache.set('alive', 'v', { tags: ['tenant:a'], ttlMs: 60_000 });
    // Every key any index of the tag holds, whatever its layout.
    const indexed = redis
      .cli('keys', 'clawperf:t:{tenant:a}:*')
      .split('\n')
      .flatMap((name) => {
        const type = redis.cli('type', name);
        if (type === 'zset') return redis.cli('zrange', name, '0', '-1').split('\n');
        return type === 'set' ? redis.cli('smembers', name).split('\n') : [];
      });
    assert.deepEqual(indexed.sort(), ['alive', 'kept']);
    await cache.invalidateByTag('tenant:a');
    assert.equal(await cache.get('alive'), undefined);
    assert.equal(await cache.get('kept'), undefined);
  });

  it('invalidating a tag also reaches the keys an earlier version indexed in a plain set', async () => {
    const cache = await make({ l1: false });
    await cache.set('old', 'v', { ttlMs: 60_000 });
    redis.cli('sadd', 'clawperf:t:{tenant:a}:k', 'old');
    await cache.invalidateByTag('tenant:a');
    assert.equal(await cache.get('old'), undefined);
    assert.equal(redis.cli('exists', 'clawperf:t:{tenant:a}:k'), '0');
  });

  it('a slow back-fill or write cannot bring back a value deleted meanwhile', async () => {
    const store = new SlowStore({ redis: redis.url });
    const slow = await make({ l2: store, bus: false });
    const other = await make();
    await other.set('k', 'v1');
    const { arrived, release } = store.hold();
    const write = slow.set('k', 'stale');
    await arrived;
    await other.del('k');
    release();
    await write;
    assert.equal(await other.get('k'), undefined);
    assert.equal(await slow.get('k'), undefined);
    assert.equal(slow.stats().writes_refused, 1);
  });
});

describe('the cross-node lease', () => {
  it('is taken once (SET NX PX), released only by its holder, and fences out a writer that lost it', async () => {
    const store = new RedisStore({ redis: redis.url });
    closers.push(() => store.close());
    await store.syncTime();
    assert.equal(await store.lock('k', 'node-a:1', 10_000), true);
    assert.equal(await store.lock('k', 'node-b:1', 10_000), false);
    await store.unlock('k', 'node-b:1');
    assert.equal(redis.cli('get', 'clawperf:l:{k}'), 'node-a:1', 'only the holder releases it');
    const entry: StoredEntry = { data: '"v"', version: store.now(), ttlMs: 60_000, graceMs: 0, tags: [] };
    assert.equal(
      await store.setFenced('k', entry, 'node-b:1'),
      false,
      'a writer without the lease is refused',
    );
    assert.equal(await store.setFenced('k', entry, 'node-a:1'), true);
    await store.unlock('k', 'node-a:1');
    assert.equal(redis.cli('exists', 'clawperf:l:{k}'), '0');
  });

  it('with lock: true, concurrent getOrSet on two instances runs the factory once', async () => {
    const a = await make({ lock: true });
    const b = await make({ lock: true });
    let calls = 0;
    let release!: () => void;
    const released = new Promise<void>((r) => {
      release = r;
    });
    const factory = async () => {
      calls++;
      await released;
      return 'v';
    };
    const all = Promise.all([a.getOrSet('k', factory), b.getOrSet('k', factory)]);
    // The lease holder's factory runs until the other instance is waiting on the lease.
    await waitFor(() => a.stats().lock_waits + b.stats().lock_waits >= 1, {
      intervalMs: 5,
      what: 'a lock wait',
    });
    release();
    const results = await all;
    assert.deepEqual(results, ['v', 'v']);
    assert.equal(calls, 1);
    assert.equal(a.stats().lock_acquired + b.stats().lock_acquired, 1);
  });
});

describe('invalidateByTag', () => {
  it('clears Redis, the local L1 and another instance L1', async () => {
    const a = await make();
    const b = await make();
    await a.set('x', 1, { tags: ['t'] });
    await a.set('y', 2, { tags: ['t', 'u'] });
    await a.set('z', 3, { tags: ['u'] });
    assert.deepEqual(await b.getMany(['x', 'y', 'z']), [1, 2, 3]);
    await a.invalidateByTag('t');
    await waitFor(() => b.stats().bus_received >= 4, { intervalMs: 10, what: 'four bus messages' });
    assert.deepEqual(await a.getMany(['x', 'y', 'z']), [undefined, undefined, 3]);
    assert.deepEqual(await b.getMany(['x', 'y', 'z']), [undefined, undefined, 3]);
    assert.equal(redis.cli('exists', 'clawperf:t:{t}:k'), '0');
  });

  it('a set racing an invalidation never resurrects invalidated data (injected delay)', async () => {
    const store = new SlowStore({ redis: redis.url });
    const slow = await make({ l2: store, bus: false });
    const other = await make();
    await other.set('k', 'v1', { tags: ['t'] });
    const { arrived, release } = store.hold();
    const write = slow.set('k', 'computed before the invalidation', { tags: ['t'] });
    await arrived;
    await other.invalidateByTag('t');
    release();
    await write;
    assert.equal(await other.get('k'), undefined);
    assert.equal(await slow.get('k'), undefined);
    assert.equal(slow.stats().writes_refused, 1);
    await slow.set('k', 'after', { tags: ['t'] });
    assert.equal(await other.get('k'), 'after', 'a write that starts after the invalidation is kept');
  });

  it('a getOrSet whose factory ran across an invalidation does not cache its result', async () => {
    const a = await make();
    const b = await make();
    let release!: () => void;
    let started!: () => void;
    const running = new Promise<void>((r) => (started = r));
    const gate = new Promise<void>((r) => (release = r));
    const pending = a.getOrSet(
      'k',
      async () => {
        started();
        await gate;
        return 'old';
      },
      { tags: ['t'] },
    );
    await running;
    await b.invalidateByTag('t');
    release();
    assert.equal(await pending, 'old');
    assert.equal(await b.get('k'), undefined);
    assert.equal(await a.get('k'), undefined);
  });
});

describe('clear', () => {
  it('removes every entry of the namespace from Redis and from other nodes, and nothing else', async () => {
    const a = await make();
    const b = await make();
    redis.cli('set', 'unrelated', 'kept');
    await a.set('x', 1, { tags: ['t'] });
    await a.set('y', 2);
    assert.deepEqual(await b.getMany(['x', 'y']), [1, 2]);
    const before = b.stats().bus_received;
    await a.clear();
    await waitFor(() => b.stats().bus_received > before, { intervalMs: 10, what: 'the bus message' });
    assert.deepEqual(await b.getMany(['x', 'y']), [undefined, undefined]);
    assert.equal(redis.cli('keys', 'clawperf:*'), '');
    assert.equal(redis.cli('get', 'unrelated'), 'kept');
  });
});
