import assert from 'node:assert/strict';
import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import cacache from 'cacache';
import { DiskStore, type StoredEntry } from '../../src/cache/index.ts';
import { ManualClock } from '../../src/internal/clock.ts';

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'clawperf-disk-'));
  dirs.push(dir);
  return dir;
}
after(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

const entry = (data: string, ttlMs = 60_000, tags: string[] = []): StoredEntry => ({
  data,
  version: 1,
  ttlMs,
  graceMs: 0,
  tags,
});

describe('the disk store survives a restart', () => {
  it('a new store on the same directory reads what the old one wrote, with its tags', async () => {
    const dir = await tempDir();
    const first = new DiskStore({ dir });
    await first.set('k', entry('"v"', 60_000, ['t']));
    await first.close();
    const second = new DiskStore({ dir });
    const got = await second.get('k');
    assert.equal(got?.data, '"v"');
    assert.deepEqual(got?.tags, ['t']);
    assert.ok(got !== undefined && got.ttlMs > 50_000 && got.ttlMs <= 60_000);
    await second.invalidateTag('t');
    assert.equal(await second.get('k'), undefined);
    assert.equal(await new DiskStore({ dir }).get('k'), undefined, 'the invalidation reached the disk');
  });
});

describe('mayHold answers without waiting whether a delete has anything to do', () => {
  it('true until the index is read, then only for held keys and keys being written', async () => {
    const dir = await tempDir();
    const store = new DiskStore({ dir });
    assert.equal(store.mayHold('absent'), true, 'the index is not read yet');
    assert.equal(await store.get('absent'), undefined);
    assert.equal(store.mayHold('absent'), false);
    const writing = store.set('k', entry('"v"'));
    assert.equal(store.mayHold('k'), true, 'a write of it is under way');
    await writing;
    assert.equal(store.mayHold('k'), true, 'held');
    await store.delete('k');
    assert.equal(store.mayHold('k'), false);
    await store.close();
  });
});

describe('a delete or invalidation issued while a write is under way wins', () => {
  it('the write lands first, then the delete removes it', async () => {
    const store = new DiskStore({ dir: await tempDir() });
    const writing = store.set('k', entry('"v"', 60_000, ['t']));
    await store.delete('k');
    await writing;
    assert.equal(await store.get('k'), undefined);
    const tagged = store.set('k2', entry('"v"', 60_000, ['t']));
    await store.invalidateTag('t');
    await tagged;
    assert.equal(await store.get('k2'), undefined);
    await store.close();
  });
});

describe('the disk store is bounded in bytes', () => {
  it('evicts least recently used entries to stay under maxBytes', async () => {
    const store = new DiskStore({ dir: await tempDir(), maxBytes: 10_000 });
    for (let i = 0; i < 5; i++) await store.set(`k${i}`, entry(String(i).repeat(3_000)));
    assert.ok(store.bytes <= 10_000, `${store.bytes} bytes`);
    assert.equal(store.entries, 3);
    assert.equal(store.evictions, 2);
    assert.equal(await store.get('k0'), undefined);
    assert.ok((await store.get('k2')) !== undefined);
    await store.set('k5', entry('5'.repeat(3_000)));
    assert.ok((await store.get('k2')) !== undefined, 'k2 was read, so k3 went first');
    assert.equal(await store.get('k3'), undefined);
  });

  it('identical values under two keys share one file that outlives the first key', async () => {
    const store = new DiskStore({ dir: await tempDir() });
    await store.set('a', entry('"same"'));
    await store.set('b', entry('"same"'));
    await store.delete('a');
    assert.equal((await store.get('b'))?.data, '"same"');
  });
});

describe('the disk store is bounded in entries, so its in-memory index is bounded too', () => {
  it('evicts least recently used entries past maxEntries, however small the values', async () => {
    const dir = await tempDir();
    const store = new DiskStore({ dir, maxEntries: 3 });
    for (let i = 0; i < 3; i++) await store.set(`k${i}`, entry(`"${i}"`));
    assert.ok((await store.get('k0')) !== undefined);
    await store.set('k3', entry('"3"'));
    await store.set('k4', entry('"4"'));
    assert.equal(store.entries, 3);
    assert.equal(store.evictions, 2);
    assert.ok((await store.get('k0')) !== undefined, 'k0 was read, so k1 and k2 went first');
    assert.equal(await store.get('k1'), undefined);
    assert.equal(await store.get('k2'), undefined);
    await store.close();
    assert.equal((await cacache.ls(dir)).k1, undefined, 'evicted entries leave the disk too');
  });

  it('applies the bound to what a restart finds on disk', async () => {
    const dir = await tempDir();
    const first = new DiskStore({ dir });
    for (let i = 0; i < 5; i++) await first.set(`k${i}`, entry(`"${i}"`));
    await first.close();
    const second = new DiskStore({ dir, maxEntries: 2 });
    assert.equal(await second.get('k0'), undefined);
    assert.equal(second.entries, 2);
    assert.ok((await second.get('k4')) !== undefined);
  });

  it('rejects a bound below 1, naming the option', () => {
    assert.throws(
      () => new DiskStore({ dir: '/tmp/x', maxEntries: 0 }),
      /options\.maxEntries must be an integer >= 1, got 0/,
    );
  });
});

describe('the disk store honours TTL', () => {
  it('an expired entry reads as a miss and is removed, across a restart too', async () => {
    const clock = new ManualClock();
    const dir = await tempDir();
    const store = new DiskStore({ dir, clock });
    await store.set('short', entry('1', 1_000));
    await store.set('long', entry('2', 5_000));
    await clock.advance(1_001);
    assert.equal(await store.get('short'), undefined);
    assert.equal(await cacache.get.info(dir, 'short'), null);
    const restarted = new DiskStore({ dir, clock });
    assert.equal((await restarted.get('long'))?.data, '2');
    await clock.advance(4_000);
    assert.equal(await new DiskStore({ dir, clock }).get('long'), undefined);
  });
});

describe('a corrupt or truncated file is a miss, removed, never a crash', () => {
  it('a truncated content file', async () => {
    const dir = await tempDir();
    const store = new DiskStore({ dir });
    await store.set('k', entry(JSON.stringify('x'.repeat(1_000))));
    const info = await cacache.get.info(dir, 'k');
    assert.ok(info);
    await truncate(info.path, 10);
    assert.equal(await store.get('k'), undefined);
    assert.equal(store.corrupt, 1);
    assert.equal(await cacache.get.info(dir, 'k'), null, 'the index entry is gone');
    assert.equal(store.entries, 0);
  });

  it('a content file overwritten with garbage, read after a restart', async () => {
    const dir = await tempDir();
    await new DiskStore({ dir }).set('k', entry('"value"'));
    const info = await cacache.get.info(dir, 'k');
    assert.ok(info);
    await writeFile(info.path, 'garbage!');
    const store = new DiskStore({ dir });
    assert.equal(await store.get('k'), undefined);
    assert.equal(await cacache.get.info(dir, 'k'), null);
  });
});
