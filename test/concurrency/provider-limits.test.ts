import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import {
  OutboundLimiter,
  parseDuration,
  parseRateLimitHeaders,
  parseRetryAfter,
} from '../../src/concurrency/provider-limits.ts';
import { ClosedError, RateLimitedError } from '../../src/errors.ts';

describe('provider header parsing', () => {
  it('reads Go-style durations as OpenAI sends them', () => {
    assert.equal(parseDuration('12ms'), 12);
    assert.equal(parseDuration('1s'), 1_000);
    assert.equal(parseDuration('1.5s'), 1_500);
    assert.equal(parseDuration('6m0s'), 360_000);
    assert.equal(parseDuration('1h30m'), 5_400_000);
    assert.equal(parseDuration('2m59.56s'), 179_560);
    assert.equal(parseDuration('20'), 20_000);
  });

  it('rejects malformed durations instead of guessing', () => {
    for (const bad of ['', 'soon', '1x', '-1s', '1s garbage', undefined, null]) {
      assert.equal(parseDuration(bad), undefined, String(bad));
    }
  });

  it('reads Retry-After as seconds or as an HTTP date', () => {
    const now = Date.parse('2026-01-01T00:00:00Z');
    assert.equal(parseRetryAfter('7', now), 7_000);
    assert.equal(parseRetryAfter('Thu, 01 Jan 2026 00:00:30 GMT', now), 30_000);
    assert.equal(parseRetryAfter('Wed, 31 Dec 2025 23:59:00 GMT', now), 0, 'a date in the past is no wait');
    assert.equal(parseRetryAfter('later', now), undefined);
  });

  it('reads OpenAI headers from a fetch Headers object and from a node:http record', () => {
    const values = {
      'x-ratelimit-limit-requests': '60',
      'x-ratelimit-remaining-requests': '59',
      'x-ratelimit-reset-requests': '1s',
      'x-ratelimit-limit-tokens': '150000',
      'x-ratelimit-remaining-tokens': '149984',
      'x-ratelimit-reset-tokens': '6m0s',
    };
    const expected = {
      requests: { limit: 60, remaining: 59, resetMs: 1_000 },
      tokens: { limit: 150_000, remaining: 149_984, resetMs: 360_000 },
    };
    assert.deepEqual(parseRateLimitHeaders(new Headers(values)), expected);
    assert.deepEqual(parseRateLimitHeaders(values), expected);
    assert.deepEqual(parseRateLimitHeaders({ 'X-RateLimit-Remaining-Requests': ['3'] }), {
      requests: { remaining: 3 },
    });
  });

  it('reads retry-after-ms before Retry-After, and Anthropic headers', () => {
    const now = Date.parse('2026-01-01T00:00:00Z');
    assert.deepEqual(parseRateLimitHeaders({ 'retry-after-ms': '250', 'retry-after': '1' }, now), {
      retryAfterMs: 250,
    });
    assert.deepEqual(
      parseRateLimitHeaders(
        {
          'anthropic-ratelimit-requests-limit': '50',
          'anthropic-ratelimit-requests-remaining': '49',
          'anthropic-ratelimit-requests-reset': '2026-01-01T00:00:02Z',
        },
        now,
      ),
      { requests: { limit: 50, remaining: 49, resetMs: 2_000 } },
    );
  });

  it('paces Anthropic tokens by the tightest of its tokens, input-tokens and output-tokens quotas', () => {
    const now = Date.parse('2026-01-01T00:00:00Z');
    const headers = {
      'anthropic-ratelimit-tokens-limit': '100000',
      'anthropic-ratelimit-tokens-remaining': '90000',
      'anthropic-ratelimit-tokens-reset': '2026-01-01T00:00:10Z',
      'anthropic-ratelimit-input-tokens-limit': '80000',
      'anthropic-ratelimit-input-tokens-remaining': '500',
      'anthropic-ratelimit-input-tokens-reset': '2026-01-01T00:00:30Z',
      'anthropic-ratelimit-output-tokens-limit': '16000',
      'anthropic-ratelimit-output-tokens-remaining': '15000',
      'anthropic-ratelimit-output-tokens-reset': '2026-01-01T00:00:05Z',
    };
    assert.deepEqual(parseRateLimitHeaders(headers, now), {
      tokens: { limit: 80_000, remaining: 500, resetMs: 30_000 },
    });
    // Input-tokens alone (no combined quota) still paces.
    assert.deepEqual(
      parseRateLimitHeaders(
        {
          'anthropic-ratelimit-input-tokens-remaining': '7',
          'anthropic-ratelimit-input-tokens-reset': '2026-01-01T00:00:01Z',
        },
        now,
      ),
      { tokens: { remaining: 7, resetMs: 1_000 } },
    );
  });

  it('ignores malformed counts', () => {
    assert.deepEqual(parseRateLimitHeaders({ 'x-ratelimit-remaining-requests': 'many' }), {});
  });
});

/**
 * A fake provider (no real one can run here): a fixed window of `limit` requests per `windowMs`, answering
 * with OpenAI's rate-limit headers, and 429 + Retry-After past the limit.
 */
class FakeProvider {
  readonly server: Server;
  count = 0;
  served = 0;
  limited = 0;
  #windowStart = 0;

  constructor(
    readonly limit: number,
    readonly windowMs: number,
  ) {
    this.server = createServer((req, res) => {
      const now = Date.now();
      if (now >= this.#windowStart + this.windowMs) {
        this.#windowStart = now - ((now - this.#windowStart) % this.windowMs);
        this.count = 0;
      }
      const resetMs = this.#windowStart + this.windowMs - now;
      const headers: Record<string, string> = {
        'content-type': 'application/json',
        'x-ratelimit-limit-requests': String(this.limit),
        'x-ratelimit-reset-requests': resetMs >= 1_000 ? `${resetMs / 1_000}s` : `${resetMs}ms`,
      };
      if (this.count >= this.limit) {
        this.limited++;
        headers['x-ratelimit-remaining-requests'] = '0';
        headers['retry-after-ms'] = String(resetMs);
        res.writeHead(429, headers).end('{"error":{"code":"rate_limit_exceeded"}}');
        return;
      }
      this.count++;
      this.served++;
      headers['x-ratelimit-remaining-requests'] = String(this.limit - this.count);
      // A little service time, so calls overlap as they do against a real provider.
      setTimeout(() => res.writeHead(200, headers).end('{"ok":true}'), 2);
      req.resume();
    });
  }

  async start(): Promise<string> {
    this.#windowStart = Date.now();
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/v1/chat/completions`;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    this.server.close();
    await once(this.server, 'close');
  }
}

describe('OutboundLimiter against a fake provider', () => {
  let provider: FakeProvider;
  let url: string;

  before(async () => {
    provider = new FakeProvider(50, 400);
    url = await provider.start();
  });

  after(() => provider.stop());

  it('200 requests sent at once get at most one 429 in total, and all eventually succeed', async () => {
    const outbound = new OutboundLimiter({ maxWaitMs: 60_000 });
    const statuses = await Promise.all(
      Array.from({ length: 200 }, async () => {
        let limitedSeen = 0;
        for (;;) {
          const res = await outbound.run(() => fetch(url, { method: 'POST', body: '{}' }));
          await res.arrayBuffer();
          if (res.status !== 429) return { status: res.status, limitedSeen };
          limitedSeen++;
        }
      }),
    );
    assert.ok(statuses.every((s) => s.status === 200));
    assert.ok(provider.limited <= 1, `the provider answered 429 ${provider.limited} times`);
    console.log(`# fake provider: ${provider.served} served, ${provider.limited} limited`);
    assert.equal(provider.served, 200);
    assert.equal(outbound.stats().limitedResponses, provider.limited);
    assert.ok(outbound.stats().waited > 0, 'callers were held back');
    await outbound.close();
  });
});

describe('OutboundLimiter waits are bounded and cancellable', () => {
  const limited = (resetMs: string) => ({
    status: 200,
    headers: {
      'x-ratelimit-limit-requests': '1',
      'x-ratelimit-remaining-requests': '0',
      'x-ratelimit-reset-requests': resetMs,
    },
  });

  it('a wait longer than maxWaitMs is refused at once with RateLimitedError', async () => {
    const outbound = new OutboundLimiter({ maxWaitMs: 1_000 });
    (await outbound.acquire()).done(limited('1h'));
    const error = await outbound.acquire().catch((e: unknown) => e);
    assert.ok(error instanceof RateLimitedError);
    assert.ok(error.retryAfterMs > 1_000);
    assert.equal(outbound.stats().rejected, 1);
    await outbound.close();
  });

  it('an aborted wait rejects with the signal reason and leaves the queue', async () => {
    const outbound = new OutboundLimiter({ maxWaitMs: 60_000 });
    (await outbound.acquire()).done(limited('30s'));
    const controller = new AbortController();
    const waiting = outbound.acquire({ signal: controller.signal });
    assert.equal(outbound.stats().queued, 1);
    const reason = new Error('client went away');
    controller.abort(reason);
    await assert.rejects(waiting, (e) => e === reason);
    assert.equal(outbound.stats().queued, 0);
    await outbound.close();
  });

  it('a caller that gives up leaves its place: those behind it are served in order', async () => {
    const outbound = new OutboundLimiter({ maxWaitMs: 5_000 });
    (await outbound.acquire()).done(limited('20ms'));
    const served: string[] = [];
    const wait = (name: string, signal?: AbortSignal) =>
      outbound.acquire({ signal }).then((permit) => {
        served.push(name);
        return permit;
      });
    const controller = new AbortController();
    const first = wait('first');
    const quitter = wait('quitter', controller.signal);
    const last = wait('last');
    controller.abort(new Error('gone'));
    await assert.rejects(quitter, /gone/);
    assert.equal(outbound.stats().queued, 2);
    // After the reset one probe goes; its answer reports room, and the next in line follows.
    (await first).done({
      status: 200,
      headers: {
        'x-ratelimit-limit-requests': '10',
        'x-ratelimit-remaining-requests': '9',
        'x-ratelimit-reset-requests': '1s',
      },
    });
    (await last).done();
    assert.deepEqual(served, ['first', 'last']);
    assert.equal(outbound.stats().queued, 0);
    await outbound.close();
  });

  it('a waiter is released when the reported reset passes', async () => {
    const outbound = new OutboundLimiter({ maxWaitMs: 5_000 });
    (await outbound.acquire()).done(limited('50ms'));
    const permit = await outbound.acquire();
    permit.done();
    assert.equal(outbound.stats().dispatched, 2);
    await outbound.close();
  });

  it('a 429 holds every caller until its Retry-After', async () => {
    const outbound = new OutboundLimiter({ maxWaitMs: 5_000 });
    (await outbound.acquire()).done({ status: 429, headers: { 'retry-after-ms': '60000' } });
    await assert.rejects(outbound.acquire(), RateLimitedError);
    await outbound.close();
  });

  it('a 429 holds callers for its Retry-After plus a random tenth at most, never less', async () => {
    const heldFor = async (random: number) => {
      const outbound = new OutboundLimiter({ maxWaitMs: 5_000, random: () => random });
      (await outbound.acquire()).done({ status: 429, headers: { 'retry-after-ms': '60000' } });
      const refused = await outbound.acquire().catch((e: unknown) => e);
      await outbound.close();
      assert.ok(refused instanceof RateLimitedError);
      return refused.retryAfterMs;
    };
    const least = await heldFor(0);
    assert.ok(least !== undefined && least >= 59_990 && least <= 60_000, String(least));
    const most = await heldFor(0.999);
    assert.ok(most !== undefined && most >= 65_900 && most <= 66_000, String(most));
    assert.throws(() => new OutboundLimiter({ cooldownJitterRatio: 2 }), /options\.cooldownJitterRatio/);
  });

  it('the token quota holds back a call whose estimate does not fit', async () => {
    const outbound = new OutboundLimiter({ maxWaitMs: 1_000 });
    (await outbound.acquire({ tokens: 10 })).done({
      status: 200,
      headers: {
        'x-ratelimit-limit-requests': '100',
        'x-ratelimit-remaining-requests': '99',
        'x-ratelimit-reset-requests': '1s',
        'x-ratelimit-limit-tokens': '1000',
        'x-ratelimit-remaining-tokens': '100',
        'x-ratelimit-reset-tokens': '1m',
      },
    });
    (await outbound.acquire({ tokens: 50 })).done();
    await assert.rejects(outbound.acquire({ tokens: 500 }), RateLimitedError);
    await outbound.close();
  });

  it('close rejects waiters and later calls with ClosedError', async () => {
    const outbound = new OutboundLimiter({ maxWaitMs: 60_000 });
    (await outbound.acquire()).done(limited('30s'));
    const waiting = outbound.acquire();
    await outbound.close();
    await outbound.close();
    await assert.rejects(waiting, ClosedError);
    await assert.rejects(outbound.acquire(), ClosedError);
  });

  it('invalid options throw a TypeError naming the option', () => {
    assert.throws(() => new OutboundLimiter({ maxWaitMs: -1 }), /options\.maxWaitMs/);
  });
});
