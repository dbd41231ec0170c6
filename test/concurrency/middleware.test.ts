import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import Fastify from 'fastify';
import { rateLimitPlugin } from '../../src/concurrency/middleware/fastify.ts';
import {
  clientAddress,
  type RateLimitMiddlewareOptions,
  rateLimitMiddleware,
} from '../../src/concurrency/middleware/http.ts';
import { RateLimiter, type RateLimiterOptions } from '../../src/concurrency/rate-limiter.ts';
import { startRedis } from '../helpers/redis.ts';

// Limits here use the sliding log: a fixed window aligned to the wall clock could roll over between two
// requests of a test and admit one the test expects refused.
const closers: (() => Promise<void>)[] = [];
after(async () => {
  for (const close of closers.reverse()) await close();
});

function limiterOf(options: RateLimiterOptions): RateLimiter {
  const l = new RateLimiter(options);
  closers.push(() => l.close());
  return l;
}

/** A node:http server: an "auth" step sets req.user from `x-user`, then the middleware, then 200. */
async function httpServer(limiter: RateLimiter, options: RateLimitMiddlewareOptions = {}): Promise<string> {
  const limit = rateLimitMiddleware(limiter, options);
  const server: Server = createServer(
    (req: IncomingMessage & { user?: { id: string } }, res: ServerResponse) => {
      const user = req.headers['x-user'];
      if (typeof user === 'string') req.user = { id: user };
      void limit(req, res, () => {
        res.setHeader('content-type', 'application/json');
        res.end('{"ok":true}');
      });
    },
  );
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  closers.push(async () => {
    server.closeAllConnections();
    server.close();
    await once(server, 'close');
  });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function get(url: string, headers: Record<string, string> = {}) {
  const res = await fetch(url, { headers });
  return { status: res.status, headers: res.headers, body: (await res.json()) as Record<string, unknown> };
}

describe('node:http middleware answers with the standard headers', () => {
  it('every answer carries X-RateLimit-* and the IETF RateLimit / RateLimit-Policy fields', async () => {
    const url = await httpServer(
      limiterOf({ policies: [{ name: 'rpm', algorithm: 'sliding-log', windowMs: 60_000, limit: 3 }] }),
    );
    const first = await get(url);
    assert.equal(first.status, 200);
    assert.equal(first.headers.get('x-ratelimit-limit'), '3');
    assert.equal(first.headers.get('x-ratelimit-remaining'), '2');
    const reset = Number(first.headers.get('x-ratelimit-reset'));
    assert.ok(reset >= Date.now() / 1000 && reset <= Date.now() / 1000 + 61, `reset ${reset}`);
    assert.equal(first.headers.get('ratelimit-policy'), '"rpm";q=3;w=60');
    assert.match(first.headers.get('ratelimit')!, /^"rpm";r=2;t=\d+$/);
  });

  it('past the limit: 429, Retry-After in seconds, and an OpenAI-shaped error body', async () => {
    const url = await httpServer(
      limiterOf({ policies: [{ name: 'rpm', algorithm: 'sliding-log', windowMs: 60_000, limit: 2 }] }),
    );
    await get(url);
    await get(url);
    const refused = await get(url);
    assert.equal(refused.status, 429);
    const retry = Number(refused.headers.get('retry-after'));
    assert.ok(retry >= 1 && retry <= 60, `retry-after ${retry}`);
    assert.equal(refused.headers.get('x-ratelimit-remaining'), '0');
    assert.match(refused.headers.get('ratelimit')!, /^"rpm";r=0;t=\d+$/);
    const error = refused.body.error as Record<string, unknown>;
    assert.equal(error.code, 'rate_limit_exceeded');
    assert.equal(error.type, 'requests');
    assert.equal(error.param, null);
    assert.match(String(error.message), /Rate limit reached for requests per min/);
  });

  it('token policies are charged from the request and named in the 429', async () => {
    const limiter = limiterOf({
      policies: [
        { name: 'rpm', algorithm: 'sliding-log', windowMs: 60_000, limit: 100 },
        { name: 'tpm', algorithm: 'sliding-log', windowMs: 60_000, limit: 1_000, unit: 'tokens' },
      ],
    });
    const url = await httpServer(limiter, { tokens: (req) => Number(req.headers['x-tokens'] ?? 0) });
    assert.equal((await get(url, { 'x-tokens': '800' })).status, 200);
    const refused = await get(url, { 'x-tokens': '300' });
    assert.equal(refused.status, 429);
    assert.equal((refused.body.error as { type: string }).type, 'tokens');
    assert.equal(refused.headers.get('x-ratelimit-limit'), '1000');
    assert.equal(refused.headers.get('ratelimit-policy'), '"rpm";q=100;w=60, "tpm";q=1000;w=60;qu="tokens"');
  });

  it('a request larger than a whole limit gets a 429 that says so, without Retry-After', async () => {
    const limiter = limiterOf({
      policies: [{ name: 'tpm', algorithm: 'sliding-log', windowMs: 60_000, limit: 100, unit: 'tokens' }],
    });
    const url = await httpServer(limiter, { tokens: () => 500 });
    const refused = await get(url);
    assert.equal(refused.status, 429);
    assert.equal(refused.headers.get('retry-after'), null);
    assert.match(String((refused.body.error as { message: string }).message), /Request too large/);
  });

  it('skip lets chosen requests through without a check', async () => {
    const limiter = limiterOf({ algorithm: 'sliding-log', windowMs: 60_000, maxRequests: 1 });
    const url = await httpServer(limiter, { skip: (req) => req.url === '/healthz' });
    for (let i = 0; i < 3; i++) assert.equal((await get(`${url}/healthz`)).status, 200);
    assert.equal(limiter.stats().checks, 0);
  });
});

describe('the key is the user first, then the client address (seed: address preferred over user)', () => {
  it('one user is one bucket whatever address it comes from', async () => {
    const url = await httpServer(limiterOf({ algorithm: 'sliding-log', windowMs: 60_000, maxRequests: 2 }), {
      trustProxy: true,
    });
    assert.equal((await get(url, { 'x-user': 'alice', 'x-forwarded-for': '10.0.0.1' })).status, 200);
    assert.equal((await get(url, { 'x-user': 'alice', 'x-forwarded-for': '10.0.0.2' })).status, 200);
    assert.equal((await get(url, { 'x-user': 'alice', 'x-forwarded-for': '10.0.0.3' })).status, 429);
  });

  it('users behind one address are limited separately', async () => {
    const url = await httpServer(limiterOf({ algorithm: 'sliding-log', windowMs: 60_000, maxRequests: 1 }));
    assert.equal((await get(url, { 'x-user': 'alice' })).status, 200);
    assert.equal((await get(url, { 'x-user': 'bob' })).status, 200);
    assert.equal((await get(url, { 'x-user': 'alice' })).status, 429);
  });

  it('with apiKeyHeader, bearer keys are buckets of their own (hashed, never stored in clear)', async () => {
    const limiter = limiterOf({ algorithm: 'sliding-log', windowMs: 60_000, maxRequests: 1 });
    const url = await httpServer(limiter, { apiKeyHeader: true });
    assert.equal((await get(url, { authorization: 'Bearer sk-one' })).status, 200);
    assert.equal((await get(url, { authorization: 'Bearer sk-two' })).status, 200);
    assert.equal((await get(url, { authorization: 'Bearer sk-one' })).status, 429);
  });

  it('without apiKeyHeader an invented bearer key does not escape the address limit', async () => {
    const url = await httpServer(limiterOf({ algorithm: 'sliding-log', windowMs: 60_000, maxRequests: 1 }));
    assert.equal((await get(url, { authorization: 'Bearer a' })).status, 200);
    assert.equal((await get(url, { authorization: 'Bearer b' })).status, 429);
  });

  it('the limit in the headers comes from the result, so the policies form works (seed: private field read)', async () => {
    const limiter = limiterOf({
      policies: [{ name: 'burst', algorithm: 'token-bucket', windowMs: 10_000, limit: 7 }],
    });
    const url = await httpServer(limiter);
    const r = await get(url);
    assert.equal(r.headers.get('x-ratelimit-limit'), '7');
    assert.equal(r.headers.get('x-ratelimit-remaining'), '6');
  });
});

describe('X-Forwarded-For is trusted only with trustProxy', () => {
  it('by default a forged X-Forwarded-For does not give a fresh bucket', async () => {
    const url = await httpServer(limiterOf({ algorithm: 'sliding-log', windowMs: 60_000, maxRequests: 1 }));
    assert.equal((await get(url, { 'x-forwarded-for': '1.1.1.1' })).status, 200);
    assert.equal((await get(url, { 'x-forwarded-for': '2.2.2.2' })).status, 429);
  });

  it('trustProxy: true keys by the original client address', async () => {
    const url = await httpServer(limiterOf({ algorithm: 'sliding-log', windowMs: 60_000, maxRequests: 1 }), {
      trustProxy: true,
    });
    assert.equal((await get(url, { 'x-forwarded-for': '1.1.1.1, 9.9.9.9' })).status, 200);
    assert.equal((await get(url, { 'x-forwarded-for': '2.2.2.2, 9.9.9.9' })).status, 200);
    assert.equal((await get(url, { 'x-forwarded-for': '1.1.1.1, 9.9.9.9' })).status, 429);
  });

  it('trustProxy: n counts hops from this server, so a client cannot prepend addresses', () => {
    const req = (xff: string) =>
      ({
        headers: { 'x-forwarded-for': xff },
        socket: { remoteAddress: '::ffff:10.0.0.9' },
      }) as unknown as IncomingMessage;
    assert.equal(clientAddress(req('6.6.6.6, 1.2.3.4')), '10.0.0.9');
    assert.equal(clientAddress(req('6.6.6.6, 1.2.3.4'), 1), '1.2.3.4');
    assert.equal(clientAddress(req('6.6.6.6, 1.2.3.4'), 2), '6.6.6.6');
    assert.equal(clientAddress(req('1.2.3.4'), 5), '1.2.3.4');
    assert.equal(clientAddress(req('6.6.6.6, 1.2.3.4'), true), '6.6.6.6');
  });

  it('an invalid trustProxy throws a TypeError naming the option', () => {
    const limiter = limiterOf({ algorithm: 'sliding-log', windowMs: 60_000, maxRequests: 1 });
    assert.throws(() => rateLimitMiddleware(limiter, { trustProxy: -1 }), /options\.trustProxy/);
    assert.throws(() => rateLimitMiddleware(limiter, { cost: -1 }), /options\.cost/);
  });
});

describe('a store outage is a 503, not a 429', () => {
  it('fail-closed answers 503 with Retry-After; fail-open lets the request through', async () => {
    const server = await startRedis();
    closers.push(() => server.stop());
    const closed = limiterOf({
      windowMs: 60_000,
      maxRequests: 5,
      redis: server.url,
      onStoreError: 'fail-closed',
    });
    const open = limiterOf({
      windowMs: 60_000,
      maxRequests: 5,
      redis: server.url,
      onStoreError: 'fail-open',
    });
    const closedUrl = await httpServer(closed);
    const openUrl = await httpServer(open);
    assert.equal((await get(closedUrl)).status, 200);
    await server.kill();
    const refused = await get(closedUrl);
    assert.equal(refused.status, 503);
    assert.ok(Number(refused.headers.get('retry-after')) >= 1);
    assert.equal((refused.body.error as { code: string }).code, 'rate_limiter_unavailable');
    assert.equal((await get(openUrl)).status, 200);
  });
});

describe('Express-style next()', () => {
  it('calls next() when admitted and next(error) when the key is invalid', async () => {
    const limiter = limiterOf({ algorithm: 'sliding-log', windowMs: 60_000, maxRequests: 1 });
    const ok = rateLimitMiddleware(limiter);
    const bad = rateLimitMiddleware(limiter, { key: () => '' });
    const req = { headers: {}, socket: { remoteAddress: '127.0.0.1' } } as unknown as IncomingMessage;
    const res = { setHeader() {}, end() {} } as unknown as ServerResponse;
    const calls: unknown[] = [];
    assert.equal(await ok(req, res, (e) => calls.push(e ?? 'next')), true);
    assert.equal(await bad(req, res, (e) => calls.push((e as { code: string }).code)), false);
    assert.deepEqual(calls, ['next', 'ERR_CLAWPERF_INVALID_KEY']);
  });
});

describe('Fastify plugin', () => {
  async function fastifyServer(limiter: RateLimiter) {
    const app = Fastify();
    app.addHook('onRequest', async (request) => {
      const user = request.headers['x-user'];
      if (typeof user === 'string') (request as unknown as { user: { id: string } }).user = { id: user };
    });
    await app.register(rateLimitPlugin, { limiter });
    app.get('/v1/models', async () => ({ data: [] }));
    const url = await app.listen({ port: 0, host: '127.0.0.1' });
    closers.push(() => app.close());
    return url;
  }

  it('limits every route with the same headers, 429 and body as the node:http middleware', async () => {
    const url = await fastifyServer(
      limiterOf({ policies: [{ name: 'rpm', algorithm: 'sliding-log', windowMs: 60_000, limit: 2 }] }),
    );
    const first = await get(`${url}/v1/models`);
    assert.equal(first.status, 200);
    assert.equal(first.headers.get('x-ratelimit-remaining'), '1');
    assert.equal(first.headers.get('ratelimit-policy'), '"rpm";q=2;w=60');
    await get(`${url}/v1/models`);
    const refused = await get(`${url}/v1/models`);
    assert.equal(refused.status, 429);
    assert.ok(Number(refused.headers.get('retry-after')) >= 1);
    assert.equal((refused.body.error as { code: string }).code, 'rate_limit_exceeded');
  });

  it('keys by request.user before the address', async () => {
    const url = await fastifyServer(
      limiterOf({ algorithm: 'sliding-log', windowMs: 60_000, maxRequests: 1 }),
    );
    assert.equal((await get(`${url}/v1/models`, { 'x-user': 'a' })).status, 200);
    assert.equal((await get(`${url}/v1/models`, { 'x-user': 'b' })).status, 200);
    assert.equal((await get(`${url}/v1/models`, { 'x-user': 'a' })).status, 429);
  });

  it('refuses to register without a limiter', async () => {
    const app = Fastify();
    await assert.rejects(async () => {
      await app.register(rateLimitPlugin, {} as never);
      await app.ready();
    }, /options\.limiter/);
    await app.close();
  });
});
