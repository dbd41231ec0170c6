/**
 * Deployments: several upstreams per model, weighted and latency-aware routing, and fallback before the
 * first byte, driven with OpenAI's SDK against FAKE upstreams (no real provider can be run here): healthy,
 * failing, rate limited, slow and down ones at once.
 */
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import OpenAI from 'openai';
import { request } from 'undici';
import type { DeploymentConfig } from '../../src/gateway/deployments-config.ts';
import { createGateway, type Gateway } from '../../src/gateway/server.ts';
import { freePort } from '../helpers/servers.ts';
import { type FakeResponses, startFakeResponses } from './fake-responses.ts';
import { type FakeUpstream, startFakeUpstream } from './fake-upstream.ts';

type Entry = Partial<DeploymentConfig> & { name: string; baseUrl: string };

const deployment = (entry: Entry) => ({ api: 'openai', models: ['fake-chat'], ...entry });

let a: FakeUpstream;
let b: FakeUpstream;
const gateways: Gateway[] = [];

before(async () => {
  a = await startFakeUpstream();
  b = await startFakeUpstream();
});
beforeEach(() => {
  a.clear();
  b.clear();
  a.keys.length = 0;
  b.keys.length = 0;
});
after(async () => {
  await Promise.all(gateways.map((g) => g.close()));
  await a.close();
  await b.close();
});

/** A gateway over `entries`, and an OpenAI client of it. */
async function serve(entries: Entry[], extra: Parameters<typeof createGateway>[0] = {}) {
  const gw = await createGateway({
    cacheDir: false,
    upstreamTimeoutMs: 2_000,
    deployments: entries.map(deployment) as never,
    ...extra,
  });
  gateways.push(gw);
  const base = await gw.app.listen({ port: 0, host: '127.0.0.1' });
  return { gw, base, client: new OpenAI({ apiKey: 'k', baseURL: `${base}/v1`, maxRetries: 0 }) };
}

/** Asks `n` chat completions (never cached) and counts which deployment answered each. */
async function spread(client: OpenAI, n: number): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const { response } = await client.chat.completions
      .create({ model: 'fake-chat', messages: [{ role: 'user', content: `q${i}` }] })
      .withResponse();
    const name = response.headers.get('x-clawperf-deployment') ?? 'none';
    counts[name] = (counts[name] ?? 0) + 1;
  }
  return counts;
}

describe('routing', () => {
  it('splits traffic by weight between equally fast deployments', async () => {
    const { client } = await serve([
      { name: 'heavy', baseUrl: a.url, weight: 3 },
      { name: 'light', baseUrl: b.url, weight: 1 },
    ]);
    const counts = await spread(client, 400);
    const share = (counts.heavy ?? 0) / 400;
    assert.ok(share > 0.6 && share < 0.9, `heavy got ${share}`);
  });

  it('prefers the faster of two deployments of one weight', async () => {
    const { client } = await serve([
      { name: 'slow', baseUrl: a.url },
      { name: 'fast', baseUrl: b.url },
    ]);
    a.fail({ kind: 'slow', ms: 15 });
    // Two draws compared on latency: the faster answers when drawn at all, 3 times in 4 (half by weight).
    const counts = await spread(client, 200);
    assert.ok((counts.fast ?? 0) > 125, JSON.stringify(counts));
  });

  it('sends each model under its upstream name, and lists every served model', async () => {
    const { client } = await serve([
      { name: 'mapped', baseUrl: a.url, models: { 'my-chat': 'fake-chat' } as never },
    ]);
    const answer = await client.chat.completions.create({
      model: 'my-chat',
      messages: [{ role: 'user', content: 'hi' }],
    });
    assert.equal(answer.choices[0]?.message.content, 'fake answer to hi');
    assert.equal(a.lastChat?.model, 'fake-chat');
    const ids: string[] = [];
    for await (const m of client.models.list()) ids.push(m.id);
    assert.ok(ids.includes('my-chat'));
    await assert.rejects(
      client.chat.completions.create({ model: 'other', messages: [{ role: 'user', content: 'x' }] }),
      OpenAI.NotFoundError,
    );
  });
});

describe('the deployment of an answer', () => {
  it('is named on embeddings too, and absent from an answer the cache gave', async () => {
    const { client } = await serve([{ name: 'embedder', baseUrl: a.url, models: ['fake-embed'] as never }]);
    const first = await client.embeddings
      .create({ model: 'fake-embed', input: ['one', 'two'] })
      .withResponse();
    assert.equal(first.response.headers.get('x-clawperf-deployment'), 'embedder');
    const again = await client.embeddings
      .create({ model: 'fake-embed', input: ['one', 'two'] })
      .withResponse();
    assert.equal(again.response.headers.get('x-clawperf-cache'), 'hit');
    assert.equal(again.response.headers.get('x-clawperf-deployment'), null);
  });
});

describe('fallback before the first byte', () => {
  it('moves on from a 5xx, a reset and a timeout to another deployment: no client sees a failure', async () => {
    const { client } = await serve(
      [
        { name: 'first', baseUrl: a.url, priority: 0 },
        { name: 'second', baseUrl: b.url, priority: 1 },
      ],
      { upstreamTimeoutMs: 300 },
    );
    for (const fault of [
      { kind: 'status', status: 500 },
      { kind: 'reset' },
      { kind: 'slow', ms: 1_000 },
    ] as const) {
      a.fail(fault);
      const counts = await spread(client, 3);
      assert.deepEqual(counts, { second: 3 }, fault.kind);
      a.clear();
    }
  });

  it('moves a 429 to the next key of the same deployment first', async () => {
    const { client } = await serve([{ name: 'pooled', baseUrl: a.url, apiKeys: ['sk-1', 'sk-2'] }]);
    a.fail({ kind: 'status', status: 429, retryAfter: '30' }, 1);
    const { response } = await client.chat.completions
      .create({ model: 'fake-chat', messages: [{ role: 'user', content: 'hi' }] })
      .withResponse();
    assert.equal(response.headers.get('x-clawperf-deployment'), 'pooled');
    assert.deepEqual(a.keys, ['Bearer sk-1', 'Bearer sk-2']);
  });

  it('skips a key cooling down after a 429 while another key has budget', async () => {
    const { client } = await serve([{ name: 'pooled', baseUrl: a.url, apiKeys: ['sk-1', 'sk-2'] }]);
    a.fail({ kind: 'status', status: 429, retryAfter: '5' }, 1);
    for (let i = 0; i < 4; i++) {
      await client.chat.completions.create({
        model: 'fake-chat',
        messages: [{ role: 'user', content: `k${i}` }],
      });
    }
    assert.deepEqual(a.keys, ['Bearer sk-1', 'Bearer sk-2', 'Bearer sk-2', 'Bearer sk-2', 'Bearer sk-2']);
  });

  it('reaches an upstream that is down, then its fallback', async () => {
    const down = `http://127.0.0.1:${await freePort()}/v1`;
    const { client } = await serve([
      { name: 'down', baseUrl: down, priority: 0 },
      { name: 'up', baseUrl: b.url, priority: 1 },
    ]);
    assert.deepEqual(await spread(client, 3), { up: 3 });
  });

  it('fails a stream after its first byte with an error event, and does not replay it elsewhere', async () => {
    const { client } = await serve([
      { name: 'first', baseUrl: a.url, priority: 0 },
      { name: 'second', baseUrl: b.url, priority: 1 },
    ]);
    const before = b.total('/v1/chat/completions');
    const stream = await client.chat.completions.create({
      model: 'fake-chat',
      stream: true,
      messages: [{ role: 'user', content: 'please cut this stream' }],
    });
    await assert.rejects(async () => {
      for await (const _chunk of stream) {
        // read on
      }
    }, OpenAI.APIError);
    assert.equal(b.total('/v1/chat/completions'), before);
  });

  it('answers 503 with Retry-After when every deployment keeps failing, and says which model is unserved', async () => {
    const { client, base } = await serve(
      [
        { name: 'first', baseUrl: a.url },
        { name: 'second', baseUrl: b.url },
      ],
      { upstreamRetries: 0, upstreamFailureThreshold: 1, upstreamCooldownMs: 60_000 },
    );
    a.fail({ kind: 'status', status: 503 });
    b.fail({ kind: 'status', status: 503 });
    await assert.rejects(
      client.chat.completions.create({ model: 'fake-chat', messages: [{ role: 'user', content: 'x' }] }),
      OpenAI.APIError,
    );
    const ready = await request(`${base}/readyz`);
    assert.equal(ready.statusCode, 503);
    const body = (await ready.body.json()) as { unserved?: string[]; deployments?: Record<string, string> };
    assert.deepEqual(body.unserved, ['fake-chat']);
    assert.deepEqual(body.deployments, { first: 'circuit-open', second: 'circuit-open' });
    const refused = await client.chat.completions
      .create({ model: 'fake-chat', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    assert.ok(refused instanceof OpenAI.APIError && refused.status === 503, String(refused));
    assert.ok(Number(refused.headers?.get('retry-after')) >= 1);
  });

  it('exports per-deployment requests, failures by kind and fallbacks', async () => {
    const { client, base } = await serve([
      { name: 'first', baseUrl: a.url, priority: 0 },
      { name: 'second', baseUrl: b.url, priority: 1 },
    ]);
    a.fail({ kind: 'status', status: 500 }, 1);
    await spread(client, 1);
    const text = await (await request(`${base}/metrics`)).body.text();
    assert.match(
      text,
      /clawperf_gateway_deployment_failures_total\{deployment="first",kind="server_error"\} 1/,
    );
    assert.match(text, /clawperf_gateway_deployment_fallbacks_total\{deployment="first"\} 1/);
    assert.match(text, /clawperf_gateway_deployment_requests_total\{deployment="second"\} 1/);
    assert.match(text, /clawperf_gateway_deployment_concurrency_limit\{deployment="second"\} \d+/);
  });
});

describe('stored responses stay with the deployment and key that stored them', () => {
  let r1: FakeResponses;
  let r2: FakeResponses;
  before(async () => {
    r1 = await startFakeResponses();
    r2 = await startFakeResponses();
  });
  after(async () => {
    await r1.close();
    await r2.close();
  });

  it('reads, continues and deletes a response at its deployment and key only', async () => {
    const { client } = await serve([
      { name: 'one', baseUrl: r1.url, apiKeys: ['sk-a', 'sk-b'], models: ['gpt-fake'] as never },
      { name: 'two', baseUrl: r2.url, apiKeys: ['sk-c'], models: ['gpt-fake'] as never },
    ]);
    const { data: created, response } = await client.responses
      .create({ model: 'gpt-fake', input: 'x' })
      .withResponse();
    const where = response.headers.get('x-clawperf-deployment')!;
    const [home, other] = where === 'one' ? [r1, r2] : [r2, r1];
    const key = home.requests[0]!.headers.authorization;
    for (let i = 0; i < 6; i++) {
      await client.responses.create({
        model: 'gpt-fake',
        input: `go on ${i}`,
        previous_response_id: created.id,
      });
      await client.responses.retrieve(created.id);
    }
    const continued = home.requests.filter((r) => r.body?.previous_response_id === created.id);
    assert.equal(continued.length, 6);
    assert.ok(continued.every((r) => r.headers.authorization === key));
    assert.equal(other.requests.filter((r) => r.body?.previous_response_id !== undefined).length, 0);
    assert.equal(home.total(`/v1/responses/${created.id}`, 'GET'), 6);
    await client.responses.delete(created.id);
    assert.equal(home.total(`/v1/responses/${created.id}`, 'DELETE'), 1);
  });
});
