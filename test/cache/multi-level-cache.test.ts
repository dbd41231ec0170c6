import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { trace } from '@opentelemetry/api';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import {
  DEFAULT_TTL_MS,
  type FactoryContext,
  MultiLevelCache,
  type MultiLevelCacheOptions,
  type RedisStore,
  type Serializer,
} from '../../src/cache/index.ts';
import { ClosedError, InvalidKeyError, SerializationError, ValueTooLargeError } from '../../src/errors.ts';
import { ManualClock } from '../../src/internal/clock.ts';
import { waitFor } from '../helpers/servers.ts';

const dirs: string[] = [];
const caches: MultiLevelCache<unknown>[] = [];

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'clawperf-cache-'));
  dirs.push(dir);
  return dir;
}

function make<T = unknown>(options: MultiLevelCacheOptions = {}): MultiLevelCache<T> {
  const cache = new MultiLevelCache<T>(options);
  caches.push(cache as MultiLevelCache<unknown>);
  return cache;
}

after(async () => {
  await Promise.all(caches.map((c) => c.close()));
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

describe('L1 is a true LRU bounded by entries and bytes', () => {
  it('a read refreshes recency, so the least recently read entry is evicted', async () => {
    const cache = make<number>({ l1: { maxEntries: 3 } });
    await cache.set('a', 1);
    await cache.set('b', 2);
    await cache.set('c', 3);
    assert.equal(await cache.get('a'), 1);
    await cache.set('d', 4);
    assert.equal(await cache.get('b'), undefined, 'b was least recently used');
    assert.equal(await cache.get('a'), 1, 'a was read, so it survived');
    assert.equal(cache.stats().l1_evictions, 1);
  });

  it('large values are bounded by bytes, not by entry count', async () => {
    const maxBytes = 1_000_000;
    const cache = make<string>({ l1: { maxEntries: 10_000, maxBytes } });
    for (let i = 0; i < 50; i++) await cache.set(`k${i}`, 'x'.repeat(100_000));
    const stats = cache.stats();
    assert.ok(stats.l1_bytes <= maxBytes, `${stats.l1_bytes} bytes held`);
    assert.ok(stats.l1_bytes > maxBytes * 0.85, `${stats.l1_bytes} bytes held`);
    assert.ok(stats.l1_entries < 10);
    assert.ok(stats.l1_evictions >= 40);
  });
});

describe('falsy values are values; undefined is the only miss', () => {
  for (const value of [0, '', false, null]) {
    it(`a cached ${JSON.stringify(value)} is a hit`, async () => {
      const cache = make({ disk: { dir: await tempDir() } });
      await cache.set('k', value);
      assert.equal(await cache.get('k'), value);
      assert.equal(await cache.has('k'), true);
      let calls = 0;
      assert.equal(
        await cache.getOrSet('k', () => {
          calls++;
          return 'other';
        }),
        value,
      );
      assert.equal(calls, 0);
    });
  }

  it('a falsy value survives in L3 alone', async () => {
    const dir = await tempDir();
    const writer = make({ l1: false, disk: { dir } });
    await writer.set('zero', 0);
    await writer.set('null', null);
    const reader = make({ l1: false, disk: { dir } });
    assert.equal(await reader.get('zero'), 0);
    assert.equal(await reader.get('null'), null);
  });

  it('a missing key reads as undefined and counts a miss', async () => {
    const cache = make();
    assert.equal(await cache.get('nothing'), undefined);
    assert.equal(cache.stats().misses, 1);
  });
});

describe('TTL', () => {
  it('ttlMs: 0 means do not cache, not the default TTL', async () => {
    const cache = make({ disk: { dir: await tempDir() } });
    await cache.set('k', 'v');
    await cache.set('k', 'w', { ttlMs: 0 });
    assert.equal(await cache.get('k'), undefined);
    let calls = 0;
    const factory = () => {
      calls++;
      return 'x';
    };
    assert.equal(await cache.getOrSet('g', factory, { ttlMs: 0 }), 'x');
    assert.equal(await cache.getOrSet('g', factory, { ttlMs: 0 }), 'x');
    assert.equal(calls, 2);
  });

  it('entries expire after their TTL by the injected clock', async () => {
    const clock = new ManualClock();
    const cache = make({ clock, defaultTtlMs: 1_000 });
    await cache.set('k', 'v');
    await clock.advance(999);
    assert.equal(await cache.get('k'), 'v');
    await clock.advance(2);
    assert.equal(await cache.get('k'), undefined);
    await cache.set('long', 'v', { ttlMs: 5_000 });
    await clock.advance(4_000);
    assert.equal(await cache.get('long'), 'v');
  });

  it('the default TTL is one hour', async () => {
    const clock = new ManualClock();
    const cache = make({ clock });
    await cache.set('k', 'v');
    await clock.advance(DEFAULT_TTL_MS - 1);
    assert.equal(await cache.get('k'), 'v');
    await clock.advance(2);
    assert.equal(await cache.get('k'), undefined);
  });

  it('a back-fill from L3 carries the remaining TTL and never extends it', async () => {
    const clock = new ManualClock();
    const dir = await tempDir();
    const writer = make({ clock, disk: { dir } });
    await writer.set('k', 'v', { ttlMs: 10_000 });
    await clock.advance(6_000);
    const reader = make({ clock, disk: { dir } });
    assert.equal(await reader.get('k'), 'v');
    assert.equal(reader.stats().l3_hits, 1);
    assert.equal(reader.stats().l1_backfills, 1);
    await clock.advance(3_000);
    assert.equal(await reader.get('k'), 'v');
    assert.equal(reader.stats().l1_hits, 1, 'served from L1 inside the remaining 4 s');
    await clock.advance(1_001);
    assert.equal(await reader.get('k'), undefined, 'gone after 10 s in total, not 6 + 10');
  });

  it('TTL jitter spreads the expiry of entries set together, never lengthening a TTL', async () => {
    const clock = new ManualClock();
    let draw = 0;
    const cache = make({ clock, ttlJitter: 0.2, random: () => (draw++ % 100) / 100 });
    for (let i = 0; i < 100; i++) await cache.set(`k${i}`, i, { ttlMs: 1_000 });
    const present = async () => {
      let n = 0;
      for (let i = 0; i < 100; i++) if ((await cache.get(`k${i}`)) !== undefined) n++;
      return n;
    };
    await clock.advance(799);
    assert.equal(await present(), 100);
    await clock.advance(101);
    const half = await present();
    assert.ok(half > 0 && half < 100, `${half} of 100 left at 900 ms`);
    await clock.advance(101);
    assert.equal(await present(), 0, 'none outlives its 1,000 ms TTL');
  });
});

describe('L3 is really used', () => {
  it('a value set by one instance is read from disk by another on the same directory', async () => {
    const dir = await tempDir();
    const first = make({ disk: { dir } });
    await first.set('k', { answer: 42 });
    await first.close();
    const second = make({ disk: { dir } });
    assert.deepEqual(await second.get('k'), { answer: 42 });
    assert.equal(second.stats().l3_hits, 1);
    assert.equal((await second.get('k')) !== undefined, true);
    assert.equal(second.stats().l1_hits, 1, 'back-filled into L1');
  });
});

describe("diskAdmission: 'reuse' writes a value to disk at its first reuse only", () => {
  it('a value used once never reaches the disk; a reused one does, once, with its remaining TTL', async () => {
    const clock = new ManualClock();
    const dir = await tempDir();
    const cache = make<string>({ clock, disk: { dir }, diskAdmission: 'reuse' });
    await cache.set('once', 'a', { ttlMs: 10_000 });
    await cache.set('twice', 'b', { ttlMs: 10_000, tags: ['t'] });
    assert.equal(cache.stats().l3_entries, 0, 'nothing on disk at write time');
    assert.equal(cache.stats().l3_deferred, 2);
    await clock.advance(4_000);
    assert.equal(await cache.get('twice'), 'b');
    assert.equal(await cache.get('twice'), 'b');
    assert.deepEqual(await cache.getMany(['twice']), ['b']);
    await cache.close();
    assert.equal(cache.stats().l3_admitted, 1, 'written once however often it is read');
    const reader = make<string>({ clock, disk: { dir } });
    assert.equal(await reader.get('once'), undefined, 'the value used once was never written');
    assert.equal(await reader.get('twice'), 'b', 'the reused value survives a restart');
    await clock.advance(5_999);
    assert.equal(await reader.get('twice'), 'b');
    await clock.advance(2);
    assert.equal(await reader.get('twice'), undefined, 'its disk TTL is what was left: 10 s in all');
  });

  it('getOrSet: the miss writes no disk entry, the next hit does', async () => {
    const dir = await tempDir();
    const cache = make<string>({ disk: { dir }, diskAdmission: 'reuse' });
    assert.equal(await cache.getOrSet('k', () => 'v'), 'v');
    assert.equal(cache.stats().l3_entries, 0);
    assert.equal(await cache.getOrSet('k', () => 'other'), 'v');
    await cache.close();
    assert.equal(cache.stats().l3_admitted, 1);
    const reader = make<string>({ disk: { dir } });
    assert.equal(await reader.get('k'), 'v');
  });

  it('a new write drops the disk copy of the value it replaces', async () => {
    const dir = await tempDir();
    const cache = make<string>({ disk: { dir }, diskAdmission: 'reuse' });
    await cache.set('k', 'old');
    assert.equal(await cache.get('k'), 'old');
    await waitFor(() => cache.stats().l3_entries === 1, { what: 'the reused value on disk' });
    await cache.set('k', 'new');
    assert.equal(cache.stats().l3_entries, 0, 'the old copy is gone from disk');
    await cache.close();
    const reader = make<string>({ disk: { dir } });
    assert.equal(await reader.get('k'), undefined, 'a restart does not bring the old value back');
  });

  it('a value deleted or invalidated before its reuse is never written', async () => {
    const dir = await tempDir();
    const cache = make<string>({ disk: { dir }, diskAdmission: 'reuse' });
    await cache.set('a', '1');
    await cache.set('b', '2', { tags: ['t'] });
    await cache.del('a');
    await cache.invalidateByTag('t');
    assert.equal(await cache.get('a'), undefined);
    assert.equal(await cache.get('b'), undefined);
    await cache.close();
    assert.equal(cache.stats().l3_admitted, 0);
    const reader = make<string>({ disk: { dir } });
    assert.deepEqual(await reader.getMany(['a', 'b']), [undefined, undefined]);
  });

  it('without an L1 every write goes to disk', async () => {
    const dir = await tempDir();
    const cache = make<string>({ l1: false, disk: { dir }, diskAdmission: 'reuse' });
    await cache.set('k', 'v');
    assert.equal(cache.stats().l3_entries, 1);
    assert.equal(cache.stats().l3_deferred, 0);
  });

  it('rejects an unknown admission with a TypeError naming it', () => {
    assert.throws(
      () => new MultiLevelCache({ diskAdmission: 'sometimes' as 'write' }),
      /options\.diskAdmission.*"sometimes"/,
    );
  });
});

describe('del', () => {
  it('removes the key from every level', async () => {
    const dir = await tempDir();
    const cache = make({ disk: { dir } });
    await cache.set('k', 'v');
    await cache.del('k');
    assert.equal(await cache.get('k'), undefined);
    const other = make({ disk: { dir } });
    assert.equal(await other.get('k'), undefined);
  });
});

describe('invalidateByTag without Redis', () => {
  it('drops tagged entries from L1 and L3 and keeps the others', async () => {
    const dir = await tempDir();
    const cache = make({ disk: { dir } });
    await cache.set('a', 1, { tags: ['t'] });
    await cache.set('b', 2, { tags: ['t', 'u'] });
    await cache.set('c', 3, { tags: ['u'] });
    await cache.invalidateByTag('t');
    assert.deepEqual(await cache.getMany(['a', 'b', 'c']), [undefined, undefined, 3]);
    const fresh = make({ disk: { dir } });
    assert.deepEqual(await fresh.getMany(['a', 'b', 'c']), [undefined, undefined, 3]);
  });

  it('a factory that started before an invalidation of its tag does not cache its result', async () => {
    const cache = make();
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const pending = cache.getOrSet(
      'k',
      async () => {
        await gate;
        return 'computed from old data';
      },
      { tags: ['t'] },
    );
    await new Promise((r) => setImmediate(r));
    await cache.invalidateByTag('t');
    release();
    assert.equal(await pending, 'computed from old data');
    assert.equal(await cache.get('k'), undefined);
    assert.equal(cache.stats().writes_refused, 1);
  });
});

describe('stampede protection in one process', () => {
  it('500 concurrent getOrSet calls run the factory once', async () => {
    const cache = make();
    let calls = 0;
    let release!: () => void;
    const released = new Promise<void>((r) => {
      release = r;
    });
    const all = Promise.all(
      Array.from({ length: 500 }, () =>
        cache.getOrSet('k', async () => {
          calls++;
          await released;
          return 'v';
        }),
      ),
    );
    // The factory runs until every other caller has joined it.
    await waitFor(() => cache.stats().coalesced === 499, { intervalMs: 1, what: '499 callers joining' });
    release();
    const results = await all;
    assert.equal(calls, 1);
    assert.ok(results.every((r) => r === 'v'));
    const stats = cache.stats();
    assert.equal(stats.factory_calls, 1);
    assert.equal(stats.coalesced, 499);
  });

  it('a failing factory rejects every waiter and caches nothing', async () => {
    const cache = make({ disk: { dir: await tempDir() } });
    let calls = 0;
    const failure = new Error('upstream down');
    let fail!: () => void;
    const failed = new Promise<void>((r) => {
      fail = r;
    });
    const all = Promise.allSettled(
      Array.from({ length: 20 }, () =>
        cache.getOrSet('k', async () => {
          calls++;
          await failed;
          throw failure;
        }),
      ),
    );
    // The factory fails only once the other 19 callers are waiting on it, past the disk lookup.
    await waitFor(() => calls === 1 && cache.stats().coalesced === 19, {
      intervalMs: 1,
      what: 'the factory running with 19 callers joined',
    });
    fail();
    const results = await all;
    assert.equal(calls, 1);
    for (const r of results) {
      assert.equal(r.status, 'rejected');
      assert.equal((r as PromiseRejectedResult).reason, failure);
    }
    assert.equal(await cache.get('k'), undefined);
    assert.equal(await cache.getOrSet('k', () => 'ok'), 'ok', 'the next call runs the factory again');
  });

  it('an aborted waiter rejects with the signal reason while the others get the value', async () => {
    const cache = make();
    let release: ((v: string) => void) | undefined;
    const first = cache.getOrSet('k', () => new Promise<string>((r) => (release = r)));
    while (release === undefined) await new Promise((r) => setImmediate(r));
    const controller = new AbortController();
    const second = cache.getOrSet('k', () => 'never', { signal: controller.signal });
    controller.abort(new Error('caller gave up'));
    await assert.rejects(second, /caller gave up/);
    release?.('v');
    assert.equal(await first, 'v');
  });
});

describe('stale-while-revalidate', () => {
  it('serves the stale value at once while one refresh runs, then the refreshed one', async () => {
    const clock = new ManualClock();
    const cache = make<string>({ clock, staleWhileRevalidateMs: 10_000 });
    await cache.set('k', 'old', { ttlMs: 1_000 });
    await clock.advance(1_500);
    assert.equal(await cache.get('k'), undefined, 'get never returns a stale value');
    let calls = 0;
    const told: boolean[] = [];
    let release!: () => void;
    const factory = async (context: FactoryContext) => {
      calls++;
      told.push(context.background);
      await new Promise<void>((r) => (release = r));
      return 'new';
    };
    assert.equal(await cache.getOrSet('k', factory, { ttlMs: 1_000 }), 'old');
    assert.equal(await cache.getOrSet('k', factory, { ttlMs: 1_000 }), 'old');
    assert.equal(calls, 1, 'one refresh');
    release();
    await new Promise((r) => setImmediate(r));
    assert.equal(await cache.get('k'), 'new');
    assert.equal(cache.stats().stale_served, 2);
    assert.deepEqual(told, [true], 'the refresh is told no caller waits for it');
  });

  it('a miss tells the factory that a caller waits for it', async () => {
    const cache = make<string>({ staleWhileRevalidateMs: 10_000 });
    const told: boolean[] = [];
    await cache.getOrSet('k', (context) => {
      told.push(context.background);
      return 'v';
    });
    assert.deepEqual(told, [false]);
  });

  it('keeps serving the stale value when the refresh fails', async () => {
    const clock = new ManualClock();
    const cache = make<string>({ clock, staleWhileRevalidateMs: 10_000 });
    await cache.set('k', 'old', { ttlMs: 1_000 });
    await clock.advance(1_500);
    const failing = async () => {
      throw new Error('upstream down');
    };
    assert.equal(await cache.getOrSet('k', failing), 'old');
    await new Promise((r) => setImmediate(r));
    assert.equal(await cache.getOrSet('k', failing), 'old');
    await new Promise((r) => setImmediate(r));
    assert.equal(cache.stats().factory_errors, 2);
    await clock.advance(10_000);
    await assert.rejects(cache.getOrSet('k', failing), /upstream down/);
  });
});

describe('getOrSetWithOutcome says how it came by the value, in one lookup', () => {
  it('a miss it produced, then a hit in L1', async () => {
    const cache = make<string>();
    assert.deepEqual(await cache.getOrSetWithOutcome('k', () => 'v'), {
      value: 'v',
      outcome: 'miss',
      level: undefined,
    });
    assert.deepEqual(await cache.getOrSetWithOutcome('k', () => 'other'), {
      value: 'v',
      outcome: 'hit',
      level: 'l1',
    });
  });

  it('a hit in L3, read once', async () => {
    const dir = await tempDir();
    await make<string>({ l1: false, disk: { dir } }).set('k', 'on disk');
    const cache = make<string>({ disk: { dir } });
    let calls = 0;
    const result = await cache.getOrSetWithOutcome('k', () => {
      calls++;
      return 'produced';
    });
    assert.deepEqual(result, { value: 'on disk', outcome: 'hit', level: 'l3' });
    assert.equal(calls, 0);
    assert.equal(cache.stats().l3_hits, 1);
    assert.equal(cache.stats().misses, 0);
  });

  it("callers that wait for another caller's factory are coalesced", async () => {
    const cache = make<string>();
    let release!: (v: string) => void;
    const called = new Promise<void>((called) => {
      void cache.getOrSetWithOutcome('k', () => {
        called();
        return new Promise<string>((r) => (release = r));
      });
    });
    const first = cache.getOrSetWithOutcome('k', () => 'never');
    const second = cache.getOrSetWithOutcome('k', () => 'never');
    await called;
    release('v');
    assert.deepEqual(await first, { value: 'v', outcome: 'coalesced', level: undefined });
    assert.deepEqual(await second, { value: 'v', outcome: 'coalesced', level: undefined });
    assert.equal(cache.stats().coalesced, 2);
  });

  it('a stale value served while it is refreshed', async () => {
    const clock = new ManualClock();
    const cache = make<string>({ clock, staleWhileRevalidateMs: 10_000 });
    await cache.set('k', 'old', { ttlMs: 1_000 });
    await clock.advance(1_500);
    assert.deepEqual(await cache.getOrSetWithOutcome('k', () => 'new', { ttlMs: 1_000 }), {
      value: 'old',
      outcome: 'stale',
      level: 'l1',
    });
  });

  it('rejects bad input like getOrSet does', async () => {
    const cache = make<string>();
    await assert.rejects(
      cache.getOrSetWithOutcome('', () => 'v'),
      InvalidKeyError,
    );
    await assert.rejects(cache.getOrSetWithOutcome('k', 'v' as never), /factory/);
  });
});

describe('bad input gets a typed error naming the key and loses nothing', () => {
  it('rejects non-string and empty keys', async () => {
    const cache = make();
    await cache.set('k', 'v');
    for (const key of ['', 42, null, undefined, {}]) {
      await assert.rejects(cache.get(key as string), InvalidKeyError);
      await assert.rejects(cache.set(key as string, 'x'), InvalidKeyError);
      await assert.rejects(cache.del(key as string), InvalidKeyError);
      await assert.rejects(
        cache.getOrSet(key as string, () => 'x'),
        InvalidKeyError,
      );
    }
    await assert.rejects(cache.getMany(['ok', '']), InvalidKeyError);
    assert.equal(await cache.get('k'), 'v');
  });

  it('rejects values that cannot be serialized, naming the key', async () => {
    const cache = make();
    await cache.set('k', 'v');
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    for (const value of [cyclic, { f: () => 1 }, Symbol('s')]) {
      const error = await cache.set('k', value).then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(error instanceof SerializationError);
      assert.equal(error.key, 'k');
      assert.match(error.message, /"k"/);
    }
    assert.equal(await cache.get('k'), 'v', 'the old value is untouched');
  });

  it('rejects values over maxValueBytes with the size and the bound', async () => {
    const cache = make({ maxValueBytes: 1_000 });
    await cache.set('k', 'small');
    const error = await cache.set('k', 'x'.repeat(2_000)).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(error instanceof ValueTooLargeError);
    assert.equal(error.key, 'k');
    assert.equal(error.maxBytes, 1_000);
    assert.ok(error.bytes > 2_000);
    assert.equal(await cache.get('k'), 'small');
  });

  it('rejects bad options at construction with a TypeError naming option, range and value', () => {
    const rejects = (options: MultiLevelCacheOptions, message: string) =>
      assert.throws(() => new MultiLevelCache(options), { name: 'TypeError', message });
    rejects({ defaultTtlMs: -1 }, 'options.defaultTtlMs must be an integer >= 1, got -1');
    rejects({ l1: { maxBytes: 0 } }, 'options.l1.maxBytes must be an integer >= 1, got 0');
    rejects({ ttlJitter: 2 }, 'options.ttlJitter must be a number between 0 and 1, got 2');
    rejects({ disk: { dir: '' } }, 'options.disk.dir must be a non-empty directory path, got ""');
    rejects(
      { disk: { dir: '/tmp/x', maxEntries: 0 } },
      'options.disk.maxEntries must be an integer >= 1, got 0',
    );
    rejects({ lock: 'yes' as unknown as boolean }, 'options.lock must be a boolean, got "yes"');
    rejects({ namespace: 'a{b}' }, 'options.namespace must be a non-empty string without braces, got "a{b}"');
    rejects(
      { serializer: {} as Serializer },
      'options.serializer must be an object with serialize() and deserialize() methods, got an object',
    );
    rejects({ l2: {} as RedisStore }, 'options.l2 must be a RedisStore, got an object');
    rejects(
      { l2: {} as RedisStore, redis: 'redis://:secret@localhost:1' },
      'options.l2 must be left out when options.redis is given, got an object',
    );
    rejects(
      { breaker: { failureThreshold: 0 } },
      'options.breaker.failureThreshold must be an integer >= 1, got 0',
    );
    assert.throws(() => new MultiLevelCache({ redis: 'nope' }), /options\.redis/);
  });

  it('rejects bad per-call arguments with a TypeError naming the argument, range and value', async () => {
    const cache = make();
    await assert.rejects(cache.set('k', 'v', { ttlMs: -5 }), {
      name: 'TypeError',
      message: 'options.ttlMs must be an integer >= 0, got -5',
    });
    await assert.rejects(cache.set('k', 'v', { tags: ['a', ''] }), {
      name: 'TypeError',
      message: 'options.tags[1] must be a non-empty string, got ""',
    });
    await assert.rejects(cache.set('k', 'v', { tags: 'a' as unknown as string[] }), {
      name: 'TypeError',
      message: 'options.tags must be an array of strings, got "a"',
    });
    await assert.rejects(
      cache.getOrSet('k', () => 'v', { lock: 1 as unknown as boolean }),
      {
        name: 'TypeError',
        message: 'options.lock must be a boolean, got 1',
      },
    );
    await assert.rejects(cache.getOrSet('k', 'nope' as never), /factory/);
    await assert.rejects(cache.getMany('k' as unknown as string[]), {
      name: 'TypeError',
      message: 'keys must be an array, got "k"',
    });
    await assert.rejects(cache.invalidateByTag(''), {
      name: 'TypeError',
      message: 'tag must be a non-empty string, got ""',
    });
  });
});

describe('stats and events', () => {
  it('counts hits and misses per level and emits events only to listeners', async () => {
    const cache = make();
    const hits: string[] = [];
    const misses: string[] = [];
    await cache.set('k', 'v');
    await cache.get('k');
    const onHit = (key: string, level: string) => hits.push(`${key}@${level}`);
    cache.on('hit', onHit);
    cache.on('miss', (key) => misses.push(key));
    await cache.get('k');
    await cache.get('nope');
    cache.off('hit', onHit);
    await cache.get('k');
    assert.deepEqual(hits, ['k@l1']);
    assert.deepEqual(misses, ['nope']);
    const stats = cache.stats();
    assert.equal(stats.l1_hits, 3);
    assert.equal(stats.misses, 1);
    for (const [name, value] of Object.entries(stats)) assert.equal(typeof value, 'number', name);
    for (const counter of cache.statsCounters) assert.ok(counter in stats, counter);
  });

  it('a throwing listener does not break the call', async () => {
    const cache = make();
    await cache.set('k', 'v');
    cache.on('hit', () => {
      throw new Error('bad listener');
    });
    assert.equal(await cache.get('k'), 'v');
  });
});

describe('close', () => {
  it('is idempotent and later calls reject with ClosedError', async () => {
    const cache = make({ disk: { dir: await tempDir() } });
    await cache.close();
    await cache.close();
    await assert.rejects(cache.get('k'), ClosedError);
    await assert.rejects(cache.set('k', 1), ClosedError);
    await assert.rejects(
      cache.getOrSet('k', () => 1),
      ClosedError,
    );
    await assert.rejects(cache.invalidateByTag('t'), ClosedError);
  });
});

describe('spans', () => {
  it('wraps writes, deletes, invalidations and factory runs when an OpenTelemetry SDK is registered', async () => {
    const exporter = new InMemorySpanExporter();
    const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
    trace.setGlobalTracerProvider(provider);
    try {
      const cache = make<string>();
      await cache.set('k', 'v');
      assert.equal(await cache.get('k'), 'v');
      await cache.getOrSet('f', async () => 'made');
      await cache.del('k');
      await cache.invalidateByTag('t');
      const names = exporter.getFinishedSpans().map((s) => s.name);
      assert.deepEqual(names.sort(), [
        'clawperf.cache.del',
        'clawperf.cache.invalidate_tag',
        'clawperf.cache.load',
        'clawperf.cache.set',
      ]);
    } finally {
      trace.disable();
      await provider.shutdown();
    }
  });
});
