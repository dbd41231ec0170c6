import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { DiskStore, type StoredEntry } from '../../src/cache/index.ts';
import { WriteBehindDiskStore } from '../../src/gateway/disk-writer.ts';

const dirs: string[] = [];
after(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function dir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'clawperf-gw-disk-'));
  dirs.push(d);
  return d;
}

const entry = (data: string, tags: string[] = []): StoredEntry => ({
  data,
  version: 1,
  ttlMs: 60_000,
  graceMs: 0,
  tags,
});

/** What a fresh store finds on disk for each key (after the writer closed). */
async function onDisk(d: string, keys: string[]): Promise<(string | undefined)[]> {
  const reader = new DiskStore({ dir: d });
  try {
    return (await reader.getMany(keys)).map((e) => e?.data);
  } finally {
    await reader.close();
  }
}

describe('WriteBehindDiskStore', () => {
  it('answers a set at once, serves the waiting value, and writes it in the background', async () => {
    const d = await dir();
    const store = new WriteBehindDiskStore({ dir: d });
    assert.equal(await store.set('k', entry('v')), true);
    assert.equal((await store.get('k'))?.data, 'v');
    assert.equal(store.stats().pending, 1, 'nothing was written on the caller’s path');
    assert.equal(await store.get('other'), undefined);
    assert.equal(store.mayHold('k'), true, 'a waiting write counts as held');
    assert.equal(store.mayHold('other'), false);
    await store.close();
    assert.equal(store.stats().written, 1);
    assert.deepEqual(await onDisk(d, ['k']), ['v']);
  });

  it('writes only the last of several writes of one key made while it waited', async () => {
    const d = await dir();
    const store = new WriteBehindDiskStore({ dir: d });
    await store.set('k', entry('one'));
    await store.set('k', entry('two'));
    await store.set('k', entry('three'));
    await store.close();
    const s = store.stats();
    assert.equal(s.written, 1);
    assert.equal(s.coalesced, 2);
    assert.deepEqual(await onDisk(d, ['k']), ['three']);
  });

  it('drops the oldest waiting write beyond maxPending', async () => {
    const d = await dir();
    const store = new WriteBehindDiskStore({ dir: d, maxPending: 2 });
    await store.set('a', entry('1'));
    await store.set('b', entry('2'));
    await store.set('c', entry('3'));
    await store.close();
    assert.equal(store.stats().dropped, 1);
    assert.deepEqual(await onDisk(d, ['a', 'b', 'c']), [undefined, '2', '3']);
  });

  it('never brings back a key deleted or invalidated while its write waited or ran', async () => {
    const d = await dir();
    const store = new WriteBehindDiskStore({ dir: d });
    await store.set('deleted', entry('x'));
    await store.set('tagged', entry('y', ['t']));
    await store.set('kept', entry('z', ['other']));
    await store.delete('deleted');
    await store.invalidateTag('t');
    assert.equal(await store.get('deleted'), undefined);
    assert.equal(await store.get('tagged'), undefined);
    await store.close();
    assert.deepEqual(await onDisk(d, ['deleted', 'tagged', 'kept']), [undefined, undefined, 'z']);
  });

  it('shortens the lifetime of a waiting entry by the time it waited', async () => {
    const store = new WriteBehindDiskStore({ dir: await dir() });
    await store.set('k', entry('v'));
    // Wait without yielding, so the background writer has not taken the entry yet.
    const t0 = performance.now();
    while (performance.now() - t0 < 2);
    const got = await store.get('k');
    assert.equal(store.stats().written, 0);
    assert.ok(got !== undefined && got.ttlMs <= 60_000 - 2, `ttlMs ${got?.ttlMs}`);
    await store.close();
  });

  it('rejects an invalid maxPending with a TypeError naming it', () => {
    assert.throws(() => new WriteBehindDiskStore({ dir: '/tmp/x', maxPending: 0 }), /maxPending/);
  });
});
