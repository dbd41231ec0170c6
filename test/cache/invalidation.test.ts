/**
 * The invalidation contract, under readers that never stop: once `del`, `invalidate` or `invalidateByTag`
 * returns, the issuing node serves the old value from no level, and once another node's `invalidated` event
 * fired, neither does that node. Real Redis, real disk; every wait is for an event with a deadline.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { MultiLevelCache, type MultiLevelCacheOptions } from '../../src/cache/index.ts';
import { type RedisServer, startRedis, TEST_COMMAND_TIMEOUT_MS } from '../helpers/redis.ts';

const ROUNDS = 50;
let redis: RedisServer;
const dirs: string[] = [];
let namespaceSeq = 0;

before(async () => {
  redis = await startRedis();
});
after(async () => {
  await redis.stop();
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function nodes(count: number, disk: boolean): Promise<MultiLevelCache<string>[]> {
  const namespace = `inv${++namespaceSeq}`;
  const caches: MultiLevelCache<string>[] = [];
  for (let i = 0; i < count; i++) {
    const options: MultiLevelCacheOptions = {
      redis: redis.url,
      namespace,
      defaultTtlMs: 60_000,
      commandTimeoutMs: TEST_COMMAND_TIMEOUT_MS,
    };
    if (disk) {
      const dir = await mkdtemp(join(tmpdir(), 'clawperf-inv-'));
      dirs.push(dir);
      options.disk = { dir };
    }
    const cache = new MultiLevelCache<string>(options);
    await cache.ready();
    caches.push(cache);
  }
  return caches;
}

/** Rejects naming what did not happen within `ms`. */
function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/**
 * Reads `key` back to back on `cache` (get and getOrSet in turn) until `stop()`; a read that starts once
 * `isOver()` is true and still answers `old` is counted as stale.
 */
function reader(
  cache: MultiLevelCache<string>,
  key: string,
  old: string,
  fresh: string,
  isOver: () => boolean,
) {
  let stopped = false;
  let stale = 0;
  let after = 0;
  const done = (async () => {
    for (let i = 0; !stopped; i++) {
      const over = isOver();
      const value = i % 2 === 0 ? await cache.get(key) : await cache.getOrSet(key, async () => fresh);
      if (over) {
        after++;
        if (value === old) stale++;
      }
      // An L1 hit settles in a microtask: yield, or the readers would starve the invalidation itself.
      await new Promise((r) => setImmediate(r));
    }
  })();
  return {
    /** Resolves once this reader made `n` reads that started after the invalidation. */
    async readsAfter(n: number): Promise<void> {
      while (after < n) await new Promise((r) => setImmediate(r));
    },
    async stop(): Promise<{ stale: number; after: number }> {
      stopped = true;
      await done;
      return { stale, after };
    },
  };
}

type How = 'del' | 'invalidate' | 'tag';

async function invalidate(cache: MultiLevelCache<string>, how: How, key: string, tag: string) {
  if (how === 'del') await cache.del(key);
  else if (how === 'invalidate') assert.equal(await cache.invalidate(key), true);
  else await cache.invalidateByTag(tag);
}

for (const disk of [false, true]) {
  describe(`one node, ${disk ? 'with' : 'without'} a disk cache: nothing stale once the call returned`, () => {
    for (const how of ['del', 'invalidate', 'tag'] as const) {
      it(`${how}: ${ROUNDS} rounds under 4 readers`, async () => {
        const [cache] = await nodes(1, disk);
        try {
          let stale = 0;
          for (let round = 0; round < ROUNDS; round++) {
            const key = `k${round}`;
            const tag = `t${round}`;
            const old = `old ${round}`;
            await cache!.set(key, old, { tags: [tag] });
            let returned = false;
            const readers = Array.from({ length: 4 }, () =>
              reader(cache!, key, old, `new ${round}`, () => returned),
            );
            await new Promise((r) => setImmediate(r));
            await invalidate(cache!, how, key, tag);
            returned = true;
            await Promise.all(readers.map((r) => r.readsAfter(4)));
            for (const r of readers) stale += (await r.stop()).stale;
          }
          assert.equal(stale, 0, `${stale} stale reads after the call returned`);
        } finally {
          await cache!.close();
        }
      });
    }
  });
}

describe('three nodes: nothing stale on a node once its invalidated event fired', () => {
  for (const how of ['del', 'tag'] as const) {
    it(`${how}: ${ROUNDS} rounds, readers on every node`, async () => {
      const caches = await nodes(3, false);
      const [issuer, ...others] = caches as [MultiLevelCache<string>, ...MultiLevelCache<string>[]];
      try {
        let stale = 0;
        for (let round = 0; round < ROUNDS; round++) {
          const key = `k${round}`;
          const tag = `t${round}`;
          const old = `old ${round}`;
          // Every node holds the old value in L1 before the round starts.
          const told = others.map((c) => once(c, 'invalidated'));
          await issuer.set(key, old, { tags: [tag] });
          await within(1_000, 'the write reaching the other nodes', Promise.all(told));
          for (const c of caches) assert.equal(await c.get(key), old);
          const over = caches.map(() => false);
          const heard = others.map((c, i) =>
            within(
              1_000,
              'the invalidation reaching a node',
              once(c, 'invalidated').then(() => {
                over[i + 1] = true;
              }),
            ),
          );
          const readers = caches.flatMap((c, i) =>
            Array.from({ length: 2 }, () => reader(c, key, old, `new ${round}`, () => over[i]!)),
          );
          await new Promise((r) => setImmediate(r));
          await invalidate(issuer, how, key, tag);
          over[0] = true;
          await Promise.all(heard);
          await Promise.all(readers.map((r) => r.readsAfter(4)));
          for (const r of readers) stale += (await r.stop()).stale;
        }
        assert.equal(stale, 0, `${stale} stale reads once each node knew`);
      } finally {
        await Promise.all(caches.map((c) => c.close()));
      }
    });
  }
});
