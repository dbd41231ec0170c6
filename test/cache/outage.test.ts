import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { MultiLevelCache } from '../../src/cache/index.ts';
import { type RedisServer, startRedis } from '../helpers/redis.ts';
import { waitFor } from '../helpers/servers.ts';

let redis: RedisServer;
let dir: string;

before(async () => {
  redis = await startRedis();
  dir = await mkdtemp(join(tmpdir(), 'clawperf-outage-'));
});
after(async () => {
  await redis.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('a Redis outage degrades the cache to L1 and L3 instead of failing it', () => {
  it('kill Redis mid-traffic and restart it: no call throws, one event each way, L2 and the bus come back', async () => {
    const options = {
      redis: redis.url,
      commandTimeoutMs: 500,
      breaker: { failureThreshold: 3, cooldownMs: 200 },
    };
    const a = new MultiLevelCache<string>({ ...options, disk: { dir } });
    const b = new MultiLevelCache<string>(options);
    await a.ready();
    await b.ready();
    const events: string[] = [];
    for (const [name, cache] of [
      ['a', a],
      ['b', b],
    ] as const) {
      cache.on('degraded', (store) => events.push(`${name} degraded ${store}`));
      cache.on('recovered', (store) => events.push(`${name} recovered ${store}`));
    }
    for (let i = 0; i < 20; i++) await a.set(`k${i}`, `v${i}`);

    const errors: unknown[] = [];
    let ops = 0;
    let running = true;
    const traffic = (async () => {
      for (let i = 0; running; i++) {
        const key = `k${i % 20}`;
        try {
          await Promise.all([
            a.get(key),
            b.get(key),
            a.set(`w${i % 50}`, 'x'),
            b.set(`u${i % 50}`, 'y'),
            b.getOrSet(`g${i % 10}`, async () => 'made'),
            a.getMany([key, 'missing']),
          ]);
          ops += 6;
        } catch (error) {
          errors.push(error);
        }
        await new Promise((r) => setImmediate(r));
      }
    })();

    await waitFor(() => ops > 200, { what: 'traffic before the outage' });
    await redis.kill();
    await waitFor(() => events.includes('a degraded redis') && events.includes('b degraded redis'), {
      what: 'both caches to notice the outage',
    });
    const atKill = ops;
    await waitFor(() => ops > atKill + 500, { what: 'traffic during the outage' });
    const duringOutage = a.stats();
    assert.equal(duringOutage.l2_up, 0);
    assert.ok(duringOutage.l2_skipped > duringOutage.l2_errors, 'the breaker spares most calls the failure');
    assert.equal(await a.get('k1'), 'v1', 'L1 and L3 still serve');
    await a.set('during', 'outage');
    assert.equal(await a.get('during'), 'outage', 'writes land in L1 and L3');

    await redis.restart();
    await waitFor(() => events.includes('a recovered redis') && events.includes('b recovered redis'), {
      what: 'both caches to recover',
    });
    await waitFor(() => a.stats().bus_reconnects >= 1 && b.stats().bus_reconnects >= 1, {
      what: 'the bus subscribers to reconnect',
    });
    running = false;
    await traffic;

    assert.deepEqual(errors, [], 'no call threw');
    assert.deepEqual(
      events.filter((e) => e.startsWith('a')),
      ['a degraded redis', 'a recovered redis'],
    );
    assert.deepEqual(
      events.filter((e) => e.startsWith('b')),
      ['b degraded redis', 'b recovered redis'],
    );

    await a.set('after', 'restart');
    assert.match(redis.cli('get', 'clawperf:e:{after}'), /"restart"$/, 'L2 is written again');
    assert.equal(await b.get('after'), 'restart');
    assert.ok(b.stats().l2_hits > 0);
    await a.close();
    await b.close();
  });
});
