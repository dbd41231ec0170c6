import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { GatewayConfig } from '../../src/gateway/config.ts';
import { createGateway, type Gateway } from '../../src/gateway/server.ts';
import { type RedisServer, startRedis, TEST_COMMAND_TIMEOUT_MS } from '../helpers/redis.ts';
import { waitFor } from '../helpers/servers.ts';

// biome-ignore lint/suspicious/noExplicitAny: test answers are read freely
type Json = Record<string, any>;

let redis: RedisServer;
const gateways: Gateway[] = [];

before(async () => {
  redis = await startRedis();
});
after(async () => {
  await Promise.all(gateways.map((g) => g.close()));
  await redis.stop();
});

/** Three gateway nodes on one Redis (in one process: each has its own cache, clients, bus and limiter). */
async function nodes(config: Partial<GatewayConfig> = {}): Promise<Gateway[]> {
  const three = await Promise.all(
    [0, 1, 2].map(() =>
      createGateway({
        redisUrl: redis.url,
        cacheDir: false,
        localChatLatencyMs: 0,
        adminToken: 'admin',
        redisCommandTimeoutMs: TEST_COMMAND_TIMEOUT_MS,
        ...config,
      }),
    ),
  );
  gateways.push(...three);
  return three;
}

async function post(gw: Gateway, url: string, payload: unknown, headers: Record<string, string> = {}) {
  const res = await gw.app.inject({ method: 'POST', url, payload: payload as Json, headers });
  return { status: res.statusCode, headers: res.headers, body: JSON.parse(res.body) as Json };
}

const chat = (content: string) => ({
  model: 'local-chat',
  temperature: 0,
  messages: [{ role: 'user', content }],
});

describe('three gateways on one Redis', () => {
  it('serve a value cached by one from the others, and an admin invalidation reaches all three', async () => {
    const [a, b, c] = await nodes();
    const first = await post(a!, '/v1/chat/completions', chat('shared'));
    assert.equal(first.headers['x-clawperf-cache'], 'miss');
    const key = String(first.headers['x-clawperf-cache-key']);
    // The answer goes out before the cache's Redis write completes; wait for that write (its entry, not the
    // lease taken while it was made).
    await waitFor(async () => redis.cli('--scan', '--pattern', 'clawperf:gw:e:*').includes('chat:'), {
      what: 'the answer to reach Redis',
    });
    for (const gw of [b!, c!]) {
      const res = await post(gw, '/v1/chat/completions', chat('shared'));
      assert.equal(res.headers['x-clawperf-cache'], 'hit');
      assert.deepEqual(res.body, first.body);
    }
    const inv = await post(b!, '/admin/cache/invalidate', { key }, { authorization: 'Bearer admin' });
    assert.equal(inv.status, 200);
    await waitFor(
      async () =>
        (await Promise.all([a!, b!, c!].map((g) => g.cache.get(key)))).every((v) => v === undefined),
      {
        what: 'the invalidation to reach every node',
      },
    );
    for (const gw of [a!, c!]) {
      assert.equal(
        (await post(gw, '/v1/chat/completions', chat('shared'))).headers['x-clawperf-cache'],
        'miss',
      );
      await gw.cache.del(key);
    }
  });

  it('invalidate by tag on every node', async () => {
    const [a, b, c] = await nodes();
    const input = { model: 'local-embed', input: 'tagged everywhere' };
    const first = await post(a!, '/v1/embeddings', input);
    const key = String(first.headers['x-clawperf-cache-key']);
    await waitFor(async () => redis.cli('--scan').includes('emb:'), { what: 'the answer to reach Redis' });
    for (const gw of [b!, c!]) {
      assert.equal((await post(gw, '/v1/embeddings', input)).headers['x-clawperf-cache'], 'hit');
    }
    const inv = await post(
      c!,
      '/admin/cache/invalidate',
      { tag: 'model:local-embed' },
      { authorization: 'Bearer admin' },
    );
    assert.equal(inv.status, 200);
    await waitFor(
      async () =>
        (await Promise.all([a!, b!, c!].map((g) => g.cache.get(key)))).every((v) => v === undefined),
      {
        what: 'the tag invalidation to reach every node',
      },
    );
    assert.equal((await post(b!, '/v1/embeddings', input)).headers['x-clawperf-cache'], 'miss');
  });

  it('enforce a global limit exactly across the three', async () => {
    const three = await nodes({ limits: { rpm: 25 }, apiKeys: { shared: 'tenant-global' } });
    const results = await Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        post(
          three[i % 3]!,
          '/v1/embeddings',
          { model: 'local-embed', input: `limit ${i}` },
          { authorization: 'Bearer shared' },
        ),
      ),
    );
    const allowed = results.filter((r) => r.status === 200).length;
    const limited = results.filter((r) => r.status === 429).length;
    assert.equal(allowed, 25);
    assert.equal(limited, 35);
  });

  it('fail no request while Redis is killed and restarted mid-traffic', async () => {
    const three = await nodes({ limits: { rpm: 100_000 } });
    let stop = false;
    const failures: string[] = [];
    let served = 0;
    const traffic = Promise.all(
      three.map(async (gw, n) => {
        for (let i = 0; !stop; i++) {
          const res =
            i % 2 === 0
              ? await post(gw, '/v1/embeddings', { model: 'local-embed', input: `outage ${n} ${i}` })
              : await post(gw, '/v1/chat/completions', chat(`outage ${n} ${i}`));
          if (res.status !== 200) failures.push(`${res.status} ${JSON.stringify(res.body)}`);
          served++;
          await new Promise((r) => setImmediate(r));
        }
      }),
    );
    try {
      await waitFor(() => served > 60, { what: 'traffic before the outage' });
      await redis.kill();
      const during = served;
      await waitFor(() => served > during + 60, { what: 'traffic during the outage' });
      await redis.restart();
      await waitFor(async () => three.every((g) => g.cache.stats().l2_up === 1), {
        what: 'L2 to come back on every node',
        timeoutMs: 20_000,
      });
      const afterRestart = served;
      await waitFor(() => served > afterRestart + 60, { what: 'traffic after the restart' });
    } finally {
      stop = true;
      await traffic;
    }
    assert.deepEqual(failures, []);
    const ready = JSON.parse((await three[0]!.app.inject({ method: 'GET', url: '/readyz' })).body);
    assert.equal(ready.redis, 'up');
  });
  it('resume global limits after Redis is killed and restarted mid-traffic, failing no request', async () => {
    // Traffic spreads over many tenants so none of them reaches the limit; `probe` stays fresh for the check.
    const apiKeys: Record<string, string> = { probe: 'tenant-resumed' };
    for (let t = 0; t < 100; t++) apiKeys[`traffic-${t}`] = `tenant-traffic-${t}`;
    const three = await nodes({ limits: { rpm: 300 }, apiKeys });
    const metric = async (gw: Gateway, name: string) => {
      const text = (await gw.app.inject({ method: 'GET', url: '/metrics' })).body;
      const line = text.split('\n').find((l) => l.startsWith(`clawperf_limiter_${name} `));
      return Number(line?.split(' ')[1]);
    };
    let stop = false;
    let next = 0;
    const failures: string[] = [];
    let served = 0;
    const traffic = Promise.all(
      three.map(async (gw, n) => {
        for (let i = 0; !stop; i++) {
          const auth = { authorization: `Bearer traffic-${next++ % 100}` };
          const res =
            i % 2 === 0
              ? await post(gw, '/v1/embeddings', { model: 'local-embed', input: `limits ${n} ${i}` }, auth)
              : await post(gw, '/v1/chat/completions', chat(`limits ${n} ${i}`), auth);
          if (res.status !== 200) failures.push(`${res.status} ${JSON.stringify(res.body)}`);
          served++;
          await new Promise((r) => setTimeout(r, 2));
        }
      }),
    );
    try {
      await waitFor(() => served > 60, { what: 'traffic before the outage' });
      await redis.kill();
      await waitFor(
        async () =>
          (await Promise.all(three.map((g) => metric(g, 'breaker_opens_total')))).every((n) => n >= 1),
        { what: 'every node to notice the outage' },
      );
      const during = served;
      await waitFor(() => served > during + 60, { what: 'traffic during the outage' });
      await redis.restart();
      await waitFor(
        async () => (await Promise.all(three.map((g) => metric(g, 'breaker_state')))).every((s) => s === 0),
        { what: 'every node to use Redis for limits again', timeoutMs: 30_000 },
      );
    } finally {
      stop = true;
      await traffic;
    }
    assert.deepEqual(failures, []);
    const results = await Promise.all(
      Array.from({ length: 330 }, (_, i) =>
        post(
          three[i % 3]!,
          '/v1/embeddings',
          { model: 'local-embed', input: `resumed ${i}` },
          { authorization: 'Bearer probe' },
        ),
      ),
    );
    assert.deepEqual(
      {
        allowed: results.filter((r) => r.status === 200).length,
        limited: results.filter((r) => r.status === 429).length,
      },
      { allowed: 300, limited: 30 },
      'one limit across the three nodes, not one per node',
    );
  });
});
