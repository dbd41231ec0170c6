import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import type { RateLimiter } from '../../src/concurrency/index.ts';
import { createLimiter, LIMITS_WINDOW_MS } from '../../src/gateway/limits.ts';
import { createGateway } from '../../src/gateway/server.ts';
import { ManualClock } from '../../src/internal/clock.ts';
import { type RedisServer, startRedis, TEST_COMMAND_TIMEOUT_MS } from '../helpers/redis.ts';

const MINUTE = 60_000;
/** Eight seconds before a clock minute begins. */
const BEFORE_MINUTE = 10 * MINUTE - 8_000;

const limiters: RateLimiter[] = [];
after(() => Promise.all(limiters.map((l) => l.close())));

function memoryLimiter(limits: { rpm?: number; tpm?: number }, clock: ManualClock): RateLimiter {
  const limiter = createLimiter(limits, { clock });
  assert.ok(limiter !== undefined);
  limiters.push(limiter);
  return limiter;
}

describe('the gateway limits count over a sliding window of one minute (in memory)', () => {
  it('a fresh tenant gets its whole limit at once', async () => {
    const clock = new ManualClock(BEFORE_MINUTE);
    const limiter = memoryLimiter({ rpm: 5, tpm: 1_000 }, clock);
    for (let i = 0; i < 5; i++) assert.ok((await limiter.allow('t', { tokens: 200 })).allowed, `call ${i}`);
    const refused = await limiter.allow('t', { tokens: 0 });
    assert.equal(refused.allowed, false);
    assert.equal(refused.retryAfterMs, LIMITS_WINDOW_MS);
  });

  it('refuses a call 16 s after the last one, across a clock minute (rpm and tpm)', async () => {
    const clock = new ManualClock(BEFORE_MINUTE);
    const byRequests = memoryLimiter({ rpm: 1 }, clock);
    const byTokens = memoryLimiter({ tpm: 100 }, clock);
    assert.ok((await byRequests.allow('t')).allowed);
    assert.ok((await byTokens.allow('t', { tokens: 100 })).allowed);
    await clock.advance(16_000);
    assert.equal(Math.floor(clock.now() / MINUTE), Math.floor(BEFORE_MINUTE / MINUTE) + 1);
    const second = await byRequests.allow('t');
    assert.equal(second.allowed, false);
    assert.equal(second.retryAfterMs, MINUTE - 16_000);
    assert.equal((await byTokens.allow('t', { tokens: 1 })).allowed, false);
  });

  it('admits again a full window after the call it counted, and not a millisecond before', async () => {
    const clock = new ManualClock(BEFORE_MINUTE);
    const limiter = memoryLimiter({ rpm: 1, tpm: 100 }, clock);
    assert.ok((await limiter.allow('t', { tokens: 100 })).allowed);
    await clock.advance(MINUTE - 1);
    assert.equal((await limiter.allow('t', { tokens: 1 })).allowed, false);
    await clock.advance(1);
    assert.ok((await limiter.allow('t', { tokens: 100 })).allowed);
  });

  it('never admits more than the limit within any window, and admits whatever fits (random traffic)', async () => {
    const clock = new ManualClock(BEFORE_MINUTE);
    const limit = 50;
    const limiter = memoryLimiter({ tpm: limit }, clock);
    let seed = 42;
    const random = () => {
      seed = (Math.imul(seed, 1_103_515_245) + 12_345) >>> 0;
      return seed / 2 ** 32;
    };
    const admitted: { at: number; tokens: number }[] = [];
    for (let i = 0; i < 3_000; i++) {
      await clock.advance(Math.floor(random() * 3_000));
      const tokens = 1 + Math.floor(random() * 10);
      const now = clock.now();
      const inWindow = admitted.filter((a) => a.at > now - MINUTE).reduce((n, a) => n + a.tokens, 0);
      const allowed = (await limiter.allow('t', { tokens })).allowed;
      assert.equal(allowed, inWindow + tokens <= limit, `at ${now}: ${inWindow} in the window, +${tokens}`);
      if (allowed) admitted.push({ at: now, tokens });
    }
    assert.ok(admitted.length > 100);
  });
});

describe('the gateway limits count over a sliding window on Redis too', () => {
  let redis: RedisServer;
  let client: Redis;
  before(async () => {
    redis = await startRedis();
    client = new Redis(redis.url);
  });
  after(async () => {
    client.disconnect();
    await redis.stop();
  });

  /** Redis's clock, which its limits read (it cannot be injected). */
  const redisNow = async () => {
    const [s, us] = await client.time();
    return Number(s) * 1000 + Number(us) / 1000;
  };
  const until = async (done: (now: number) => boolean) => {
    while (!done(await redisNow())) await new Promise((resolve) => setTimeout(resolve, 10));
  };

  it('admits the whole limit at once, refuses across a window boundary, admits a full window later', async () => {
    // Redis times the windows by its own clock, so the window is short here and the test waits for it.
    const windowMs = 2_000;
    const limiter = createLimiter(
      { rpm: 2, tpm: 100 },
      { redis: redis.url, windowMs, commandTimeoutMs: TEST_COMMAND_TIMEOUT_MS },
    );
    assert.ok(limiter !== undefined);
    limiters.push(limiter);
    let checked = false;
    for (let attempt = 0; attempt < 5 && !checked; attempt++) {
      const tenant = `tenant-${attempt}`;
      // Start in the second half of a window, so the next boundary comes well within one window.
      await until((now) => now % windowMs >= windowMs / 2 && now % windowMs < (windowMs * 3) / 4);
      const start = await redisNow();
      assert.ok((await limiter.allow(tenant, { tokens: 50 })).allowed);
      assert.ok((await limiter.allow(tenant, { tokens: 50 })).allowed);
      const last = await redisNow();
      assert.equal((await limiter.allow(tenant, { tokens: 0 })).allowed, false);
      await until((now) => Math.floor(now / windowMs) > Math.floor(last / windowMs));
      const straddling = await limiter.allow(tenant, { tokens: 0 });
      // A slow machine can take a whole window to get here: the call then proves nothing; try again.
      if ((await redisNow()) - start >= windowMs) continue;
      assert.equal(straddling.allowed, false, 'a call across the boundary, within one window, is refused');
      await until((now) => now >= last + windowMs);
      assert.ok((await limiter.allow(tenant, { tokens: 100 })).allowed);
      checked = true;
    }
    assert.ok(checked, 'no attempt ran within one window');
  });
});

describe('the gateway uses them', () => {
  it('counts the requests of a tenant in a sliding log', async () => {
    const gw = await createGateway({ limits: { rpm: 2 }, cacheDir: false, localChatLatencyMs: 0 });
    after(() => gw.close());
    const chat = { model: 'local-chat', messages: [{ role: 'user', content: 'limits' }] };
    const res = await gw.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chat });
    assert.equal(res.statusCode, 200);
    const metrics = (await gw.app.inject({ method: 'GET', url: '/metrics' })).body;
    assert.match(metrics, /^clawperf_limiter_log_entries 1$/m);
  });
});

describe('a request no wait can admit', () => {
  it('gets a 429 that says so and carries no Retry-After, so a client does not retry it', async () => {
    const gw = await createGateway({ limits: { tpm: 100 }, cacheDir: false, localChatLatencyMs: 0 });
    after(() => gw.close());
    const chat = { model: 'local-chat', max_tokens: 500, messages: [{ role: 'user', content: 'too big' }] };
    const res = await gw.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chat });
    assert.equal(res.statusCode, 429);
    assert.equal(res.headers['retry-after'], undefined);
    assert.match(JSON.parse(res.body).error.message, /can never pass/);
    const fits = { ...chat, max_tokens: 10 };
    const ok = await gw.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: fits });
    assert.equal(ok.statusCode, 200);
  });
});
