/**
 * `POST /admin/cache/invalidate` under readers that never stop: once it answered, the gateway serves the
 * old answer from no level (memory, Redis or disk). Real Redis and disk; a FAKE upstream whose answers
 * each carry their own id.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { createGateway, type Gateway } from '../../src/gateway/server.ts';
import { type RedisServer, startRedis, TEST_COMMAND_TIMEOUT_MS } from '../helpers/redis.ts';
import { type FakeUpstream, startFakeUpstream } from './fake-upstream.ts';

const ROUNDS = 50;
let redis: RedisServer;
let fake: FakeUpstream;
let dir: string;

before(async () => {
  [redis, fake] = await Promise.all([startRedis(), startFakeUpstream()]);
  dir = await mkdtemp(join(tmpdir(), 'clawperf-gw-inv-'));
});
after(async () => {
  await Promise.all([redis.stop(), fake.close(), rm(dir, { recursive: true, force: true })]);
});

let lastKey = '';

/** The id of the answer to `prompt` (each upstream answer has its own); notes its cache key. */
async function answerId(base: string, prompt: string): Promise<string> {
  const res = await request(`${base}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      model: 'fake-chat',
      temperature: 0,
      messages: [{ role: 'user', content: prompt }],
    }),
  });
  const body = (await res.body.json()) as { id: string };
  assert.equal(res.statusCode, 200);
  lastKey = String(res.headers['x-clawperf-cache-key']);
  return body.id;
}

describe('the admin invalidation leaves nothing stale behind', () => {
  for (const by of ['tag', 'key'] as const) {
    it(`by ${by}: ${ROUNDS} rounds under 3 readers, with Redis and the disk cache`, async () => {
      const gw: Gateway = await createGateway({
        redisUrl: redis.url,
        upstreamUrl: fake.url,
        cacheDir: join(dir, by),
        adminToken: 'admin',
        redisCommandTimeoutMs: TEST_COMMAND_TIMEOUT_MS,
      });
      const base = await gw.app.listen({ port: 0, host: '127.0.0.1' });
      try {
        let stale = 0;
        for (let round = 0; round < ROUNDS; round++) {
          const prompt = `${by} round ${round}`;
          const old = await answerId(base, prompt);
          // Asked again, so the answer is in memory, in Redis and (at its first reuse) on disk.
          assert.equal(await answerId(base, prompt), old);
          const key = lastKey;
          let returned = false;
          let stop = false;
          const readers = Array.from({ length: 3 }, async () => {
            let afterReads = 0;
            while (!stop || afterReads < 3) {
              const over = returned;
              const id = await answerId(base, prompt);
              if (over) {
                afterReads++;
                if (id === old) stale++;
              }
            }
          });
          await new Promise((r) => setImmediate(r));
          const res = await request(`${base}/admin/cache/invalidate`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', authorization: 'Bearer admin' },
            body: JSON.stringify(by === 'tag' ? { tag: 'tenant:default' } : { key }),
          });
          assert.equal(res.statusCode, 200);
          await res.body.dump();
          returned = true;
          stop = true;
          await Promise.all(readers);
        }
        assert.equal(stale, 0, `${stale} stale answers after the invalidation answered`);
      } finally {
        await gw.close();
      }
    });
  }
});
