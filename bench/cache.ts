/**
 * MultiLevelCache against bentocache and the physical limits: an awaited lru-cache.get for an L1 hit and an
 * auto-pipelined ioredis GET for an L2 hit. Every Redis-backed contender gets its own redis-server, and each
 * round checks with INFO stats that Redis really served one GET per operation. Memory figures follow: L1
 * bytes actually held with 100 KB values against maxBytes, heap bytes per small entry, and the commands a
 * 100-key getMany costs.
 */
import { BentoCache, bentostore } from 'bentocache';
import { memoryDriver } from 'bentocache/drivers/memory';
import { redisDriver } from 'bentocache/drivers/redis';
import { createCache } from 'cache-manager';
import { Cacheable } from 'cacheable';
import { Redis } from 'ioredis';
import { LRUCache } from 'lru-cache';
import { MultiLevelCache } from '../src/cache/index.ts';
import { redisOptions } from '../src/internal/redis.ts';
import { type RedisServer, startRedis } from '../test/helpers/redis.ts';
import { compare, heapPerItem, settleHeap } from './harness.ts';

const VALUE = { id: 42, text: 'a cached LLM answer of modest length', tokens: 9 };
const KEYS = Array.from({ length: 1_000 }, (_, i) => `key:${i}`);
let cursor = 0;
const nextKey = () => KEYS[cursor++ % KEYS.length]!;

const servers: RedisServer[] = [];
const closers: (() => Promise<unknown> | unknown)[] = [];

function client(server: RedisServer): Redis {
  const redis = new Redis(server.url, redisOptions());
  // bentocache may already have closed the connection it was given.
  closers.push(() => redis.quit().catch(() => redis.disconnect()));
  return redis;
}

/** [keyspace hits + misses, commands processed] of a server, from INFO stats. */
function redisWork(server: RedisServer): [number, number] {
  const info = server.cli('info', 'stats');
  const read = (field: string) => Number(new RegExp(`${field}:(\\d+)`).exec(info)?.[1] ?? 0);
  return [read('keyspace_hits') + read('keyspace_misses'), read('total_commands_processed')];
}

/**
 * Wraps an L2 contender so each round records how many keys (keyspace hits + misses) and commands its Redis
 * served per operation.
 */
function proven(
  name: string,
  server: RedisServer,
  op: () => Promise<unknown>,
  served: Map<string, string[]>,
) {
  let ops = 0;
  let before: [number, number] = [0, 0];
  return {
    name,
    op: () => {
      ops++;
      return op();
    },
    beforeRound: () => {
      ops = 0;
      before = redisWork(server);
    },
    afterRound: () => {
      const after = redisWork(server);
      // The INFO call that took `before` is itself one command.
      const keys = (after[0] - before[0]) / ops;
      const commands = (after[1] - before[1] - 1) / ops;
      served.set(name, [...(served.get(name) ?? []), `${keys.toFixed(2)} / ${commands.toFixed(2)}`]);
    },
  };
}

async function l1Hit(): Promise<void> {
  const cache = new MultiLevelCache<typeof VALUE>({ l1: { maxEntries: 10_000 } });
  const lru = new LRUCache<string, typeof VALUE>({ max: 10_000 });
  const bento = new BentoCache({
    default: 'memory',
    stores: { memory: bentostore().useL1Layer(memoryDriver({ maxItems: 10_000, serialize: false })) },
  });
  closers.push(
    () => cache.close(),
    () => bento.disconnectAll(),
  );
  const cacheable = new Cacheable();
  const manager = createCache();
  for (const key of KEYS) {
    await cache.set(key, VALUE);
    lru.set(key, VALUE);
    await bento.set({ key, value: VALUE, ttl: '1h' });
    await cacheable.set(key, VALUE, '1h');
    await manager.set(key, VALUE, 3_600_000);
  }
  await compare({ title: 'L1 hit (memory only)', rounds: 5, roundMs: 1_000 }, [
    { name: 'clawperf MultiLevelCache.get', op: () => cache.get(nextKey()) },
    { name: 'bentocache get (memory driver, serialize: false)', op: () => bento.get({ key: nextKey() }) },
    { name: 'cacheable get (in-memory primary)', op: () => cacheable.get(nextKey()) },
    { name: 'cache-manager get (default Keyv memory store)', op: () => manager.get(nextKey()) },
    { name: 'lru-cache get, awaited (limit)', op: async () => lru.get(nextKey()) },
  ]);
}

async function l2Hit(): Promise<void> {
  const [ours, bentos, raws] = await Promise.all([startRedis(), startRedis(), startRedis()]);
  servers.push(ours, bentos, raws);
  const cache = new MultiLevelCache<typeof VALUE>({ l1: false, bus: false, redis: client(ours) });
  const bento = new BentoCache({
    default: 'redis',
    stores: { redis: bentostore().useL2Layer(redisDriver({ connection: client(bentos) })) },
  });
  const raw = client(raws);
  closers.push(
    () => cache.close(),
    () => bento.disconnectAll(),
  );
  const payload = JSON.stringify(VALUE);
  for (const key of KEYS) {
    await cache.set(key, VALUE);
    await bento.set({ key, value: VALUE, ttl: '1h' });
    await raw.set(key, payload);
  }
  const served = new Map<string, string[]>();
  await compare(
    { title: 'L2 hit, L1 off, each on its own redis-server', concurrency: 64, rounds: 5, roundMs: 1_000 },
    [
      proven('clawperf MultiLevelCache.get (l1: false)', ours, () => cache.get(nextKey()), served),
      proven('bentocache get (redis driver only)', bentos, () => bento.get({ key: nextKey() }), served),
      proven('ioredis GET, auto-pipelined (limit)', raws, () => raw.get(nextKey()), served),
      proven(
        'ioredis GET + JSON.parse, auto-pipelined',
        raws,
        async () => JSON.parse((await raw.get(nextKey()))!),
        served,
      ),
    ],
  );
  console.log(
    '\nPer operation, per round: keys Redis read (INFO keyspace_hits + keyspace_misses) / commands it ran ' +
      '(clawperf sends the gets of one tick as one MGET):\n',
  );
  for (const [name, rounds] of served) console.log(`- ${name}: ${rounds.join(', ')}`);

  const many = KEYS.slice(0, 100);
  ours.cli('config', 'resetstat');
  const values = await cache.getMany(many);
  const stats = ours.cli('info', 'commandstats');
  const commands = [...stats.matchAll(/cmdstat_([a-z|]+):calls=(\d+)/g)]
    .filter((m) => m[1] !== 'info' && !m[1]!.startsWith('config'))
    .map((m) => `${m[1]}=${m[2]}`);
  console.log(
    `\ngetMany of 100 keys (L1 off): ${values.filter((v) => v !== undefined).length} hits, Redis commands: ${commands.join(', ')}`,
  );
  await compare(
    {
      title: 'getMany of 100 keys, L1 off (ops = keys)',
      concurrency: 8,
      rounds: 3,
      roundMs: 1_000,
      opsPerCall: 100,
    },
    [
      { name: 'clawperf MultiLevelCache.getMany', op: () => cache.getMany(many) },
      {
        name: 'ioredis MGET + JSON.parse (limit)',
        op: async () => (await raw.mget(...many)).map((s) => JSON.parse(s!)),
      },
    ],
  );
}

async function memory(): Promise<void> {
  const maxBytes = 32 * 1024 * 1024;
  await settleHeap();
  const before = process.memoryUsage().heapUsed;
  const cache = new MultiLevelCache<string>({ l1: { maxBytes } });
  for (let i = 0; i < 1_000; i++) await cache.set(`big:${i}`, String(i).padEnd(100_000, 'x'));
  await settleHeap();
  const held = process.memoryUsage().heapUsed - before;
  const stats = cache.stats();
  console.log('\n### L1 memory with 100 KB values (1,000 written, maxBytes 32 MiB)\n');
  console.log('| measure | bytes | ÷ maxBytes |\n|---|---:|---:|');
  console.log(
    `| heap held by the cache | ${held.toLocaleString('en-US')} | ${(held / maxBytes).toFixed(3)} |`,
  );
  console.log(
    `| L1 bytes counted (stats.l1_bytes) | ${stats.l1_bytes!.toLocaleString('en-US')} | ${(stats.l1_bytes! / maxBytes).toFixed(3)} |`,
  );
  console.log(`\nentries held: ${stats.l1_entries}, evictions: ${stats.l1_evictions}`);
  await cache.close();

  const count = 100_000;
  const ours = new MultiLevelCache<number>({ l1: { maxEntries: count * 2 } });
  const lru = new LRUCache<string, number>({ max: count * 2 });
  const bento = new BentoCache({
    default: 'memory',
    stores: { memory: bentostore().useL1Layer(memoryDriver({ maxItems: count * 2, serialize: false })) },
  });
  closers.push(
    () => ours.close(),
    () => bento.disconnectAll(),
  );
  const perOurs = await heapPerItem(count, (i) => {
    void ours.set(`small:${i}`, i);
  });
  const perLru = await heapPerItem(count, (i) => {
    lru.set(`small:${i}`, i);
  });
  const perBento = await heapPerItem(count, (i) => {
    void bento.set({ key: `small:${i}`, value: i, ttl: '1h' });
  });
  console.log(`\n### Heap bytes per small entry (${count.toLocaleString('en-US')} entries, key + number)\n`);
  console.log('| contender | bytes per entry |\n|---|---:|');
  console.log(`| clawperf MultiLevelCache (L1) | ${Math.round(perOurs)} |`);
  console.log(`| bentocache (memory driver) | ${Math.round(perBento)} |`);
  console.log(`| lru-cache (limit) | ${Math.round(perLru)} |`);
}

try {
  await l1Hit();
  await l2Hit();
  await memory();
} finally {
  for (const close of closers.reverse()) await close();
  await Promise.all(servers.map((s) => s.stop()));
}
