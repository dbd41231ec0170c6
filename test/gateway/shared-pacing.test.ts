/**
 * Provider pacing shared by three gateway processes on one real Redis, against a FAKE provider (no real
 * one can run here) that allows 20 chat completions per 2 s window per key, says so in OpenAI's headers,
 * and refuses with 429 beyond. Sixty requests for one key sent within 2 s spread over the three gateways:
 * the provider accepts at most 20 per window and refuses none (each gateway sends at most the
 * deployment's concurrency while the budget is first learned); every client is answered, waiting, or with
 * a gateway 429 whose Retry-After a retry then meets. With a second deployment, every request succeeds.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { type GatewayProcess, startGatewayProcess } from '../helpers/gateway-process.ts';
import { type RedisServer, startRedis } from '../helpers/redis.ts';
import { type FakeUpstream, startFakeUpstream } from './fake-upstream.ts';

const LIMIT = 20;
const WINDOW_MS = 2_000;
/** The primary deployment's concurrency: what a gateway sends at once before the provider's first answer. */
const CONCURRENCY = 4;

/** The FAKE provider: a fixed window per key, counted as it accepts, refusing beyond its limit. */
interface PacedProvider {
  url: string;
  accepted: number;
  refused: number;
  /** Calls accepted in each window, oldest first. */
  windows: number[];
  close(): Promise<void>;
}

async function startPacedProvider(): Promise<PacedProvider> {
  let start = 0;
  let used = 0;
  const provider = { accepted: 0, refused: 0, windows: [] as number[] };
  const server: Server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const now = Date.now();
      if (now >= start + WINDOW_MS) {
        if (start > 0) provider.windows.push(used);
        start = now;
        used = 0;
      }
      const left = start + WINDOW_MS - now;
      const headers = {
        'content-type': 'application/json',
        'x-ratelimit-limit-requests': String(LIMIT),
        'x-ratelimit-reset-requests': `${left}ms`,
      };
      if (used >= LIMIT) {
        provider.refused++;
        res.writeHead(429, {
          ...headers,
          'x-ratelimit-remaining-requests': '0',
          'retry-after-ms': String(left),
        });
        res.end(
          JSON.stringify({
            error: { message: 'rate limited', type: 'requests', code: 'rate_limit_exceeded' },
          }),
        );
        return;
      }
      used++;
      provider.accepted++;
      res.writeHead(200, { ...headers, 'x-ratelimit-remaining-requests': String(LIMIT - used) });
      res.end(
        JSON.stringify({
          id: `chatcmpl-${provider.accepted}`,
          object: 'chat.completion',
          created: 0,
          model: 'fake-chat',
          choices: [{ index: 0, message: { role: 'assistant', content: 'ok' }, finish_reason: 'stop' }],
          usage: { prompt_tokens: 5, completion_tokens: 1, total_tokens: 6 },
        }),
      );
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return Object.assign(provider, {
    url: `http://127.0.0.1:${port}/v1`,
    async close() {
      provider.windows.push(used);
      server.close();
      server.closeAllConnections();
      await once(server, 'close');
    },
  });
}

let redis: RedisServer;
let spare: FakeUpstream;
const running: GatewayProcess[] = [];

before(async () => {
  redis = await startRedis();
  spare = await startFakeUpstream();
});
after(async () => {
  await stopAll();
  await spare.close();
  await redis.stop();
});

/** The deployment of the paced provider's one key. */
const paced = (provider: PacedProvider) => ({
  name: 'paced',
  api: 'openai',
  baseUrl: provider.url,
  apiKeys: ['sk-shared'],
  models: ['fake-chat'],
  maxConcurrency: CONCURRENCY,
});

/** Starts a gateway process over `deployments`, sharing the test's Redis; resolves with its base URL. */
async function gateway(deployments: unknown[], queueTimeoutMs: number, shared = true): Promise<string> {
  const gw = await startGatewayProcess([
    ...(shared ? ['--redis', redis.url, '--redis-command-timeout-ms', '2000'] : []),
    '--queue-timeout-ms',
    String(queueTimeoutMs),
    '--log-level',
    'warn',
    '--deployments',
    JSON.stringify(deployments),
  ]);
  running.push(gw);
  return gw.base;
}

/** Stops the gateways of a case. */
const stopAll = () => Promise.all(running.splice(0).map((gw) => gw.stop()));

/** One chat completion, retried after the gateway's Retry-After while it answers 429. */
async function ask(base: string, i: number) {
  const outcome = { status: 0, retries: 0, deployment: '' };
  for (;;) {
    const res = await request(`${base}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'fake-chat', messages: [{ role: 'user', content: `question ${i}` }] }),
    });
    await res.body.text();
    outcome.status = res.statusCode;
    outcome.deployment = String(res.headers['x-clawperf-deployment'] ?? '');
    if (res.statusCode !== 429) return outcome;
    outcome.retries++;
    const wait = Number(res.headers['retry-after']);
    assert.ok(wait > 0 && wait <= 3, `Retry-After ${res.headers['retry-after']}`);
    await new Promise((r) => setTimeout(r, wait * 1_000));
  }
}

/** Sends `n` requests within the first second, spread in turn over `bases`. */
function burst(bases: string[], n: number) {
  return Promise.all(
    Array.from({ length: n }, async (_, i) => {
      await new Promise((r) => setTimeout(r, (i * 1_000) / n));
      return ask(bases[i % bases.length]!, i);
    }),
  );
}

describe('provider pacing shared by three gateway processes on one Redis', () => {
  it('60 requests for one key within 2 s: at most 20 per window reach the provider, none refused', async () => {
    const provider = await startPacedProvider();
    try {
      const deployments = [paced(provider)];
      const bases = await Promise.all([0, 1, 2].map(() => gateway(deployments, 1_000)));
      const outcomes = await burst(bases, 60);
      assert.deepEqual(
        outcomes.filter((o) => o.status !== 200),
        [],
        'every request answered in the end',
      );
      assert.equal(provider.accepted, 60);
      assert.ok(
        outcomes.some((o) => o.retries > 0),
        'past the queue timeout the gateway answered 429 with a Retry-After that a retry met',
      );
      assert.equal(provider.refused, 0, 'no request the provider had to refuse');
      for (const n of provider.windows) assert.ok(n <= LIMIT, `a window took ${n}: ${provider.windows}`);
    } finally {
      await provider.close();
      await stopAll();
    }
  });

  it('without Redis, one gateway alone keeps within the provider limit the same way', async () => {
    const provider = await startPacedProvider();
    try {
      const deployments = [paced(provider)];
      const base = await gateway(deployments, 1_000, false);
      const outcomes = await burst([base], 60);
      assert.deepEqual(
        outcomes.filter((o) => o.status !== 200),
        [],
      );
      assert.equal(provider.refused, 0);
      for (const n of provider.windows) assert.ok(n <= LIMIT, `a window took ${n}: ${provider.windows}`);
    } finally {
      await provider.close();
      await stopAll();
    }
  });

  it('with a second deployment, every request succeeds at once and the provider limit still holds', async () => {
    const provider = await startPacedProvider();
    try {
      const deployments = [
        paced(provider),
        { name: 'spare', api: 'openai', baseUrl: spare.url, models: ['fake-chat'], priority: 1 },
      ];
      const bases = await Promise.all([0, 1, 2].map(() => gateway(deployments, 200)));
      const outcomes = await burst(bases, 60);
      assert.deepEqual(
        outcomes.filter((o) => o.status !== 200 || o.retries > 0),
        [],
        'no client saw a failure',
      );
      assert.equal(provider.refused, 0);
      for (const n of provider.windows) assert.ok(n <= LIMIT, `a window took ${n}: ${provider.windows}`);
      const bySpare = outcomes.filter((o) => o.deployment === 'spare').length;
      assert.ok(bySpare >= 60 - 2 * LIMIT, `the spare deployment took the rest (${bySpare})`);
      const metrics = await (await request(`${bases[0]}/metrics`)).body.text();
      const remaining = metrics.match(
        /clawperf_gateway_deployment_pacing_remaining\{deployment="paced",key="0",quota="requests"\} (-?\d+)/,
      );
      assert.ok(remaining !== null, 'the pacing state is a metric');
      assert.ok(Number(remaining[1]) >= 0 && Number(remaining[1]) <= LIMIT, remaining[0]);
    } finally {
      await provider.close();
      await stopAll();
    }
  });
});
