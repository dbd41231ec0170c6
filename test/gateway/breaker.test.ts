/**
 * The gateway's upstream circuit breaker seen from a client (the official `openai` SDK) and from `/readyz`,
 * against a FAKE upstream that fails on demand.
 */
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import OpenAI from 'openai';
import { request } from 'undici';
import type { Gateway } from '../../src/gateway/server.ts';
import { serveGateway } from '../helpers/gateway.ts';
import { type FakeUpstream, startFakeUpstream } from './fake-upstream.ts';

let fake: FakeUpstream;
const gateways: Gateway[] = [];

before(async () => {
  fake = await startFakeUpstream();
});
beforeEach(() => fake.clear());
after(async () => {
  await Promise.all(gateways.map((g) => g.close()));
  await fake.close();
});

async function start(cooldownMs: number): Promise<{ client: OpenAI; base: string }> {
  return serveGateway(gateways, {
    upstreamUrl: fake.url,
    upstreamRetries: 0,
    upstreamFailureThreshold: 2,
    upstreamCooldownMs: cooldownMs,
  });
}

const ask = (client: OpenAI) =>
  client.chat.completions.create({ model: 'fake-chat', messages: [{ role: 'user', content: 'hi' }] });

async function readyz(base: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await request(`${base}/readyz`);
  return { status: res.statusCode, body: (await res.body.json()) as Record<string, unknown> };
}

describe('the upstream circuit never wedges', () => {
  it('opens on 500s, survives a probe answered 429, and serves again once the upstream recovers', async () => {
    // Cooldown 0: the circuit is half-open as soon as it opens, so the next request is the probe.
    const { client, base } = await start(0);
    fake.fail({ kind: 'status', status: 500 }, 2);
    for (let i = 0; i < 2; i++) await assert.rejects(ask(client), OpenAI.APIError);
    assert.deepEqual((await readyz(base)).body.upstream, 'circuit-half-open');
    fake.fail({ kind: 'status', status: 429, retryAfter: '0' }, 1);
    const limited = await ask(client).catch((e: unknown) => e);
    assert.ok(limited instanceof OpenAI.APIError && limited.code === 'upstream_rate_limited');
    const before = fake.total('/v1/chat/completions');
    const answer = await ask(client);
    assert.equal(answer.choices[0]?.message.content, 'fake answer to hi');
    assert.equal(fake.total('/v1/chat/completions'), before + 1);
    assert.deepEqual(await readyz(base), {
      status: 200,
      body: { status: 'ready', upstream: 'up', anthropic: 'local', redis: 'off' },
    });
  });

  it('/readyz answers 503 circuit-open while the circuit refuses calls', async () => {
    const { client, base } = await start(60_000);
    assert.equal((await readyz(base)).status, 200);
    fake.fail({ kind: 'status', status: 500 });
    for (let i = 0; i < 2; i++) await assert.rejects(ask(client), OpenAI.InternalServerError);
    const before = fake.total('/v1/chat/completions');
    const refused = await ask(client).catch((e: unknown) => e);
    assert.ok(refused instanceof OpenAI.APIError && refused.status === 503);
    assert.equal(fake.total('/v1/chat/completions'), before, 'refused without calling the upstream');
    assert.deepEqual(await readyz(base), {
      status: 503,
      body: { status: 'not-ready', upstream: 'circuit-open', anthropic: 'local', redis: 'off' },
    });
  });
});
