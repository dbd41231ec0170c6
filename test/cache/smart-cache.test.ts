import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { MultiLevelCache } from '../../src/cache/index.ts';
import {
  changeAwarePolicy,
  DEFAULT_LOW_TTL_MS,
  SmartCache,
  type SmartCacheOptions,
  type TtlContext,
} from '../../src/cache/smart-cache.ts';
import { ClosedError } from '../../src/errors.ts';
import { ManualClock } from '../../src/internal/clock.ts';

const caches: MultiLevelCache<unknown>[] = [];

after(async () => {
  await Promise.all(caches.map((c) => c.close()));
});

function setup<T = unknown>(options: SmartCacheOptions = {}, maxEntries = 10_000) {
  const clock = new ManualClock();
  const cache = new MultiLevelCache<T>({ l1: { maxEntries }, disk: false, clock });
  caches.push(cache as MultiLevelCache<unknown>);
  const smart = new SmartCache<T>(cache, { clock, ...options });
  return { clock, cache, smart };
}

function deferred<T>() {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

describe('one fetch per key at a time (no stampede)', () => {
  it('200 concurrent misses call the fetcher once and all get its value', async () => {
    const { smart } = setup<string>();
    const gate = deferred<string>();
    let calls = 0;
    const fetcher = () => {
      calls++;
      return gate.promise;
    };
    const all = Promise.all(Array.from({ length: 200 }, () => smart.getWithAdaptiveTTL('k', fetcher)));
    gate.resolve('v');
    const values = await all;
    assert.equal(calls, 1);
    assert.ok(values.every((v) => v === 'v'));
    const stats = smart.stats();
    assert.equal(stats.fetches, 1);
    assert.equal(stats.coalesced, 199);
    assert.equal(stats.requests, 200);
  });

  it('a failing fetch rejects every waiter, caches nothing, and the next call fetches again', async () => {
    const { smart } = setup<string>();
    const gate = deferred<string>();
    let calls = 0;
    const failing = () => {
      calls++;
      return gate.promise;
    };
    const all = Promise.allSettled(Array.from({ length: 20 }, () => smart.getWithAdaptiveTTL('k', failing)));
    gate.reject(new Error('origin down'));
    const settled = await all;
    assert.equal(calls, 1);
    assert.ok(settled.every((s) => s.status === 'rejected'));
    assert.equal(await smart.getWithAdaptiveTTL('k', () => 'fresh'), 'fresh');
    assert.equal(smart.stats().fetch_errors, 1);
  });

  it('falsy values are cached like any other value', async () => {
    const { smart } = setup<number>();
    let calls = 0;
    for (let i = 0; i < 3; i++) {
      assert.equal(
        await smart.getWithAdaptiveTTL('zero', () => {
          calls++;
          return 0;
        }),
        0,
      );
    }
    assert.equal(calls, 1);
  });
});

describe("the default policy is the seed's hit-rate policy", () => {
  it('a key with no hits gets 5 minutes; a key hit more than 80 % of the time gets 24 hours', async () => {
    const { smart, clock } = setup<string>();
    let calls = 0;
    const fetcher = () => {
      calls++;
      return `v${calls}`;
    };
    await smart.getWithAdaptiveTTL('k', fetcher);
    await clock.advance(DEFAULT_LOW_TTL_MS - 1);
    for (let i = 0; i < 10; i++) await smart.getWithAdaptiveTTL('k', fetcher);
    assert.equal(calls, 1, 'still within 5 minutes');
    await clock.advance(2);
    await smart.getWithAdaptiveTTL('k', fetcher);
    assert.equal(calls, 2, 'expired after 5 minutes');
    // 10 hits, 2 misses: 83 % > 80 %, so the refresh was cached for 24 hours.
    await clock.advance(23 * 3_600_000);
    await smart.getWithAdaptiveTTL('k', fetcher);
    assert.equal(calls, 2);
    await clock.advance(3_600_001);
    await smart.getWithAdaptiveTTL('k', fetcher);
    assert.equal(calls, 3);
    const stats = smart.stats();
    assert.equal(stats.ttl_le_5m, 1);
    assert.equal(stats.ttl_le_24h, 1);
  });

  it('thresholds and TTLs are options', async () => {
    const { smart, clock } = setup<string>({ lowTtlMs: 1_000, minTtlMs: 1 });
    let calls = 0;
    const fetcher = () => {
      calls++;
      return 'v';
    };
    await smart.getWithAdaptiveTTL('k', fetcher);
    await clock.advance(1_001);
    await smart.getWithAdaptiveTTL('k', fetcher);
    assert.equal(calls, 2);
  });
});

describe('the change-aware policy follows how often a value really changes', () => {
  const policy = changeAwarePolicy({
    initialTtlMs: 60_000,
    priorChangeIntervalMs: 3_600_000,
    priorWeight: 0.05,
    staleReadCost: 7,
  });
  const base: TtlContext = {
    key: 'k',
    now: 600_000,
    reason: 'fetch',
    hits: 600,
    misses: 2,
    hitRate: 600 / 602,
    firstSeenAt: 0,
    firstFetchAt: 0,
    fetchedAt: 600_000,
    fetches: 2,
    changed: false,
    changes: 0,
    lastChangeAt: 0,
    changeIntervalMs: 0,
    previousTtlMs: 60_000,
  };

  it('the first fetch of a key gets initialTtlMs', () => {
    assert.equal(policy({ ...base, hits: 0, misses: 1, fetches: 1, changed: undefined }), 60_000);
  });

  it('a refresh that finds the value unchanged lengthens the TTL; a changed one shortens it', () => {
    const unchanged = policy(base);
    const longerUnchanged = policy({ ...base, now: 1_200_000, fetchedAt: 1_200_000, hits: 1200 });
    const changed = policy({ ...base, changed: true, changes: 1, lastChangeAt: 600_000 });
    assert.ok(longerUnchanged > unchanged, `${longerUnchanged} > ${unchanged}`);
    assert.ok(changed < unchanged / 2, `${changed} < ${unchanged} / 2`);
  });

  it('a hot key is re-checked sooner than a rarely read one with the same change history', () => {
    const hot = policy(base);
    const cold = policy({ ...base, hits: 3 });
    assert.ok(hot < cold / 5, `${hot} < ${cold} / 5`);
  });

  it('through SmartCache: a value that keeps changing is fetched more and more often', async () => {
    const { smart, clock } = setup<number>({ policy: 'change-aware', initialTtlMs: 60_000, minTtlMs: 1 });
    let version = 0;
    const fetchedAt: number[] = [];
    const fetcher = () => {
      fetchedAt.push(clock.now());
      return version;
    };
    // A read every second for an hour, the value never changing.
    for (let s = 0; s < 3_600; s++) {
      await smart.getWithAdaptiveTTL('k', fetcher);
      await clock.advance(1_000);
    }
    const stableFetches = fetchedAt.length;
    const stableGap = fetchedAt[stableFetches - 1]! - fetchedAt[stableFetches - 2]!;
    // Now it changes every 30 seconds.
    for (let s = 0; s < 1_800; s++) {
      if (s % 30 === 0) version++;
      await smart.getWithAdaptiveTTL('k', fetcher);
      await clock.advance(1_000);
    }
    const gaps = fetchedAt.slice(stableFetches).map((t, i) => t - fetchedAt[stableFetches + i - 1]!);
    const lastGap = gaps[gaps.length - 1]!;
    assert.ok(
      lastGap < stableGap / 2,
      `gap while changing ${lastGap} ms < gap while stable ${stableGap} ms / 2`,
    );
    const stats = smart.stats();
    assert.ok(stats.changes_detected > 0);
    assert.ok(stats.unchanged_refreshes > 0);
    assert.ok(stats.ttl_grown > 0);
    assert.ok(stats.ttl_shrunk > 0);
  });

  it('a key that turns out to be hot has its first long TTL cut short by a review on hits', async () => {
    const { smart, clock } = setup<number>({ policy: 'change-aware', initialTtlMs: 3_600_000 });
    let calls = 0;
    const fetcher = () => ++calls;
    for (let ms = 0; ms < 600_000; ms += 100) {
      await smart.getWithAdaptiveTTL('hot', fetcher);
      await clock.advance(100);
    }
    assert.ok(calls > 1, 'refreshed before the initial hour was up');
    assert.ok(smart.stats().early_expiries > 0);
  });
});

describe('a custom policy function', () => {
  it('receives what the key did and its TTL is used, clamped to [minTtlMs, maxTtlMs]', async () => {
    const seen: TtlContext[] = [];
    const { smart, clock } = setup<string>({
      policy: (context) => {
        seen.push(context);
        return context.changed ? 10 : 5_000;
      },
      minTtlMs: 1_000,
      maxTtlMs: 2_000,
    });
    let value = 'a';
    const fetcher = () => value;
    await smart.getWithAdaptiveTTL('k', fetcher);
    await clock.advance(1_999);
    await smart.getWithAdaptiveTTL('k', fetcher);
    assert.equal(seen.filter((c) => c.reason === 'fetch').length, 1, 'clamped to 2000 ms: still cached');
    await clock.advance(2);
    value = 'b';
    await smart.getWithAdaptiveTTL('k', fetcher);
    const fetches = seen.filter((c) => c.reason === 'fetch');
    assert.equal(fetches.length, 2);
    assert.equal(fetches[0]!.changed, undefined);
    assert.equal(fetches[1]!.changed, true);
    assert.equal(fetches[1]!.previousTtlMs, 2_000);
    assert.equal(fetches[1]!.hits, 1);
    assert.equal(fetches[1]!.misses, 2);
    await clock.advance(999);
    await smart.getWithAdaptiveTTL('k', fetcher);
    assert.equal(seen.filter((c) => c.reason === 'fetch').length, 2, 'clamped up to 1000 ms: still cached');
  });
});

describe('stale-while-revalidate, only for keys unlikely to have changed', () => {
  // A key with no change seen yet is estimated from the prior (one change per 3 h): the chance it changed
  // reaches 2 % at -ln(0.98) * 3 h = 218,189.2 ms after its fetch. With a 60 s TTL its window is 158,189 ms.
  const ttl = () => 60_000;
  const window = 158_189;
  const tick = () => new Promise((resolve) => setImmediate(resolve));

  it('off by default: a read after the TTL waits for the fetcher', async () => {
    const { smart, clock } = setup<string>({ policy: ttl });
    let value = 'a';
    await smart.getWithAdaptiveTTL('k', () => value);
    value = 'b';
    await clock.advance(60_001);
    assert.equal(await smart.getWithAdaptiveTTL('k', () => value), 'b');
    assert.equal(smart.stats().revalidations, 0);
  });

  it('a read inside the window gets the cached value while one refresh runs; the next gets the new one', async () => {
    const { smart, clock } = setup<string>({ policy: ttl, staleWhileRevalidateMs: 600_000 });
    let value = 'a';
    let calls = 0;
    const fetcher = () => {
      calls++;
      return value;
    };
    await smart.getWithAdaptiveTTL('k', fetcher);
    value = 'b';
    await clock.advance(61_000);
    assert.equal(await smart.getWithAdaptiveTTL('k', fetcher), 'a', 'served at once');
    await tick();
    assert.equal(calls, 2, 'one background refresh');
    assert.equal(await smart.getWithAdaptiveTTL('k', fetcher), 'b');
    const stats = smart.stats();
    assert.equal(stats.revalidations, 1);
    assert.equal(stats.hits, 2, 'the stale read and the one after it are hits');
    assert.equal(stats.fetches, 2);
    assert.equal(stats.changes_detected, 1);
    // The refresh saw a change 61 s after the first fetch, so the estimate is now about one change per
    // 10 minutes: 2 % is reached after 11.6 s, within the TTL, and the key gets no window.
    value = 'c';
    await clock.advance(60_001);
    assert.equal(await smart.getWithAdaptiveTTL('k', fetcher), 'c', 'a key seen to change expires as before');
    assert.equal(smart.stats().revalidations, 1);
  });

  it('the window ends where the chance of a change reaches maxStaleChance', async () => {
    for (const [age, served] of [
      // The cache's TTLs include their last millisecond.
      [60_000 + window, 'a'],
      [60_000 + window + 1, 'b'],
    ] as const) {
      const { smart, clock } = setup<string>({ policy: ttl, staleWhileRevalidateMs: 600_000 });
      let value = 'a';
      await smart.getWithAdaptiveTTL('k', () => value);
      value = 'b';
      await clock.advance(age);
      assert.equal(await smart.getWithAdaptiveTTL('k', () => value), served, `read at ${age} ms`);
      assert.equal(smart.stats().revalidations, served === 'a' ? 1 : 0);
    }
  });

  it('a window of zero chance (maxStaleChance 0) serves nothing stale', async () => {
    const { smart, clock } = setup<string>({
      policy: ttl,
      staleWhileRevalidateMs: 600_000,
      maxStaleChance: 0,
    });
    let value = 'a';
    await smart.getWithAdaptiveTTL('k', () => value);
    value = 'b';
    await clock.advance(60_001);
    assert.equal(await smart.getWithAdaptiveTTL('k', () => value), 'b');
  });

  it('a failing refresh keeps the cached value served, counts the error and rejects nobody', async () => {
    const { smart, clock } = setup<string>({ policy: ttl, staleWhileRevalidateMs: 600_000 });
    await smart.getWithAdaptiveTTL('k', () => 'a');
    await clock.advance(61_000);
    const failing = () => Promise.reject(new Error('origin down'));
    assert.equal(await smart.getWithAdaptiveTTL('k', failing), 'a');
    await tick();
    assert.equal(smart.stats().fetch_errors, 1);
    assert.equal(await smart.getWithAdaptiveTTL('k', failing), 'a', 'still served, refresh tried again');
    await tick();
    assert.equal(smart.stats().fetch_errors, 2);
    await clock.advance(window);
    await assert.rejects(
      smart.getWithAdaptiveTTL('k', failing),
      /origin down/,
      'past the window the caller waits',
    );
  });

  it('an entry a review cut short is refreshed behind the read that finds it expired', async () => {
    const policy = (c: TtlContext) => (c.reason === 'review' ? 10_000 : 600_000);
    for (const swr of [0, 600_000]) {
      const { smart, clock } = setup<string>({ policy, staleWhileRevalidateMs: swr });
      let value = 'a';
      await smart.getWithAdaptiveTTL('k', () => value);
      await clock.advance(1_000);
      await smart.getWithAdaptiveTTL('k', () => value); // the first hit's review: expire at 10 s
      value = 'b';
      await clock.advance(10_000);
      const read = await smart.getWithAdaptiveTTL('k', () => value);
      await tick();
      const stats = smart.stats();
      assert.equal(stats.early_expiries, 1);
      if (swr === 0) {
        assert.equal(read, 'b', 'without a window the read waits');
        assert.equal(stats.revalidations, 0);
      } else {
        assert.equal(read, 'a', 'with one it is served and refreshed');
        assert.equal(stats.revalidations, 1);
        assert.equal(await smart.getWithAdaptiveTTL('k', () => value), 'b');
      }
    }
  });
});

describe('per-key statistics are bounded', () => {
  it('memory for statistics does not grow with the number of keys ever seen', async () => {
    const { smart } = setup<number>({ maxKeys: 100 }, 100);
    for (let i = 0; i < 20_000; i++) await smart.getWithAdaptiveTTL(`k${i}`, () => i);
    const stats = smart.stats();
    assert.equal(stats.tracked_keys, 100);
    assert.equal(stats.max_keys, 100);
    assert.equal(stats.fetches, 20_000);
  });

  it('recently used keys keep their statistics', async () => {
    const { smart, clock } = setup<number>({ maxKeys: 10 }, 100);
    const fetcher = () => 1;
    await smart.getWithAdaptiveTTL('hot', fetcher);
    for (let i = 0; i < 50; i++) {
      await smart.getWithAdaptiveTTL('hot', fetcher);
      await smart.getWithAdaptiveTTL(`cold${i % 20}`, fetcher);
    }
    // 'hot' kept its hit rate (50 hits, 1 miss > 80 %), so its refresh gets 24 h, not 5 min.
    await clock.advance(DEFAULT_LOW_TTL_MS + 1);
    await smart.getWithAdaptiveTTL('hot', fetcher);
    assert.equal(smart.stats().ttl_le_24h, 1);
  });
});

describe('preload', () => {
  it('never runs more than `concurrency` fetches at once', async () => {
    const { smart, clock } = setup<number>();
    let running = 0;
    let peak = 0;
    const keys = Array.from({ length: 40 }, (_, i) => `k${i}`);
    const result = smart.preload(
      keys,
      async (key) => {
        running++;
        peak = Math.max(peak, running);
        await clock.sleep(10);
        running--;
        return Number(key.slice(1));
      },
      { concurrency: 4 },
    );
    for (let i = 0; i < 20; i++) await clock.advance(10);
    assert.deepEqual(await result, { loaded: 40, failed: [], aborted: 0 });
    assert.equal(peak, 4);
  });

  it('one failing key is reported and the others load', async () => {
    const { smart, cache } = setup<string>();
    const boom = new Error('boom');
    const result = await smart.preload(['a', 'bad', 'c'], (key) => {
      if (key === 'bad') throw boom;
      return key.toUpperCase();
    });
    assert.equal(result.loaded, 2);
    assert.deepEqual(result.failed, [{ key: 'bad', error: boom }]);
    assert.equal(await cache.get('a'), 'A');
    assert.equal(await cache.get('c'), 'C');
    assert.equal(await cache.get('bad'), undefined);
    const stats = smart.stats();
    assert.equal(stats.preload_loaded, 2);
    assert.equal(stats.preload_failed, 1);
  });

  it('a key that is not a non-empty string is reported with a TypeError naming it', async () => {
    const { smart } = setup<string>();
    const result = await smart.preload(['a', '', 'c'], (key) => key);
    assert.equal(result.loaded, 2);
    assert.equal(result.failed.length, 1);
    assert.equal(result.failed[0]!.key, '');
    const { error } = result.failed[0]!;
    assert.ok(error instanceof TypeError);
    assert.equal(error.message, 'a key in keys must be a non-empty string, got ""');
  });

  it('an abort starts no further key and reports the rest as failed with the reason', async () => {
    const { smart } = setup<number>();
    const controller = new AbortController();
    const started: string[] = [];
    const keys = Array.from({ length: 10 }, (_, i) => `k${i}`);
    const result = await smart.preload(
      keys,
      (key, { signal }) => {
        started.push(key);
        assert.equal(signal, controller.signal);
        if (started.length === 3) controller.abort(new Error('shutting down'));
        return 1;
      },
      { concurrency: 1, signal: controller.signal },
    );
    assert.equal(started.length, 3);
    assert.equal(result.loaded, 3);
    assert.equal(result.aborted, 7);
    assert.deepEqual(
      result.failed.map((f) => f.key),
      keys.slice(3),
    );
    assert.ok(result.failed.every((f) => (f.error as Error).message === 'shutting down'));
  });

  it('a preloaded key is served from the cache without a fetch', async () => {
    const { smart } = setup<number>();
    await smart.preload(['k'], () => 7);
    assert.equal(
      await smart.getWithAdaptiveTTL('k', () => {
        throw new Error('should not fetch');
      }),
      7,
    );
  });
});

describe('options and lifecycle', () => {
  it('invalid options throw a TypeError naming the option and the value', () => {
    const cache = new MultiLevelCache({ disk: false });
    caches.push(cache);
    assert.throws(() => new SmartCache(cache, { maxKeys: 0 }), /options\.maxKeys.*got 0/);
    assert.throws(() => new SmartCache(cache, { policy: 'lfu' as 'hit-rate' }), /options\.policy.*got "lfu"/);
    assert.throws(() => new SmartCache(cache, { minTtlMs: 10, maxTtlMs: 5 }), {
      name: 'TypeError',
      message: 'options.maxTtlMs must be >= options.minTtlMs (10), got 5',
    });
    assert.throws(() => new SmartCache(cache, { highHitRate: 2 }), /options\.highHitRate.*got 2/);
    assert.throws(
      () => new SmartCache(cache, { policy: 'change-aware', staleReadCost: -1 }),
      /options\.staleReadCost.*got -1/,
    );
    assert.throws(
      () => new SmartCache(cache, { staleWhileRevalidateMs: -1 }),
      /options\.staleWhileRevalidateMs.*got -1/,
    );
    assert.throws(() => new SmartCache(cache, { maxStaleChance: 1 }), {
      name: 'TypeError',
      message: 'options.maxStaleChance must be a number in [0, 1), got 1',
    });
    assert.throws(() => new SmartCache({} as MultiLevelCache, {}), {
      name: 'TypeError',
      message: 'cache must be a MultiLevelCache, got an object',
    });
  });

  it('stats() holds numbers only and statsCounters names some of its fields', () => {
    const { smart } = setup();
    const stats = smart.stats();
    for (const value of Object.values(stats)) assert.equal(typeof value, 'number');
    for (const field of smart.statsCounters) assert.ok(field in stats);
  });

  it('after the cache is closed, calls reject with ClosedError', async () => {
    const { smart, cache } = setup();
    await cache.close();
    await assert.rejects(
      smart.getWithAdaptiveTTL('k', () => 1),
      ClosedError,
    );
  });
});
