/**
 * The one request path, measured from outside: a miss reads each cache level once and writes once, and a
 * streamed answer of the local model goes through the same guarded upstream call as any other (a
 * backpressure slot and the GenAI histograms).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { createGateway, type Gateway } from '../../src/gateway/server.ts';
import { type RedisServer, startRedis, TEST_COMMAND_TIMEOUT_MS } from '../helpers/redis.ts';
import { waitFor } from '../helpers/servers.ts';

let redis: RedisServer;
let dir: string;
const gateways: Gateway[] = [];

before(async () => {
  redis = await startRedis();
  dir = await mkdtemp(join(tmpdir(), 'clawperf-pipeline-'));
});
after(async () => {
  await Promise.all(gateways.map((g) => g.close()));
  await redis.stop();
  await rm(dir, { recursive: true, force: true });
});

/**
 * Counts the commands clients send to Redis (by MONITOR, which, unlike `INFO commandstats`, tells a
 * client's GET from one a Lua script runs).
 */
async function watchCommands(url: string): Promise<{ counts: Map<string, number>; stop(): void }> {
  const client = new Redis(url);
  const monitor = await client.monitor();
  const counts = new Map<string, number>();
  monitor.on('monitor', (_time: string, args: string[], source: string) => {
    if (source === 'lua') return;
    const name = args[0]!.toLowerCase();
    counts.set(name, (counts.get(name) ?? 0) + 1);
  });
  return {
    counts,
    stop() {
      monitor.disconnect();
      client.disconnect();
    },
  };
}

const chat = (content: string, stream = false) => ({
  model: 'local-chat',
  temperature: 0,
  stream,
  messages: [{ role: 'user', content }],
});

async function metric(gw: Gateway, line: RegExp): Promise<number> {
  const text = (await gw.app.inject({ method: 'GET', url: '/metrics' })).body;
  const found = text.split('\n').find((l) => line.test(l));
  return found === undefined ? 0 : Number(found.split(' ').at(-1));
}

describe('a cache miss reads every level once', () => {
  it('N distinct deterministic misses: N Redis reads, N Redis writes, N disk reads', async () => {
    const gw = await createGateway({
      redisUrl: redis.url,
      redisCommandTimeoutMs: TEST_COMMAND_TIMEOUT_MS,
      cacheDir: dir,
      localChatLatencyMs: 0,
    });
    gateways.push(gw);
    await gw.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chat('warm-up') });
    await waitFor(() => redis.cli('--scan', '--pattern', 'clawperf:gw:e:*') !== '', {
      what: 'the warm-up write',
    });
    const N = 20;
    const watch = await watchCommands(redis.url);
    const disk = gw.cache.stats().l3_misses;
    try {
      for (let i = 0; i < N; i++) {
        const payload = chat(`miss ${i}`);
        const res = await gw.app.inject({ method: 'POST', url: '/v1/chat/completions', payload });
        assert.equal(res.headers['x-clawperf-cache'], 'miss');
      }
      // The answer goes out before its Redis write completes: one script writes the entry and its tags.
      const scripts = () => (watch.counts.get('evalsha') ?? 0) + (watch.counts.get('eval') ?? 0);
      await waitFor(() => scripts() >= N, { what: 'the answers to reach Redis' });
      const reads = (watch.counts.get('get') ?? 0) + (watch.counts.get('mget') ?? 0);
      assert.equal(reads, N, 'one Redis read per miss');
      assert.equal(scripts(), N, 'one write per miss');
      assert.equal(gw.cache.stats().l3_misses - disk, N, 'one disk read per miss');
    } finally {
      watch.stop();
    }
  });
});

describe('a streamed local-chat answer is a guarded upstream call like any other', () => {
  it('takes a backpressure slot and feeds the GenAI histograms', async () => {
    const gw = await createGateway({ cacheDir: false, localChatLatencyMs: 0 });
    gateways.push(gw);
    const admitted = /^clawperf_backpressure_admitted_total /;
    const durations =
      /^gen_ai_client_operation_duration_seconds_count\{gen_ai_operation_name="chat",gen_ai_request_model="local-chat"/;
    const [slots, calls] = [await metric(gw, admitted), await metric(gw, durations)];
    const res = await gw.app.inject({
      method: 'POST',
      url: '/v1/chat/completions',
      payload: chat('stream me', true),
      headers: { 'x-clawperf-cache': 'bypass' },
    });
    assert.equal(res.statusCode, 200);
    assert.match(res.body, /data: \[DONE\]/);
    assert.equal(await metric(gw, admitted), slots + 1);
    assert.equal(await metric(gw, durations), calls + 1);
  });
});
