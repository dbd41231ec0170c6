import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import Fastify from 'fastify';
import OpenAI, { AuthenticationError, NotFoundError } from 'openai';
import { MODELS_TTL_MS, registerModels } from '../../src/gateway/models.ts';
import { apiError } from '../../src/gateway/openai.ts';
import { createGateway, type Gateway } from '../../src/gateway/server.ts';
import { UpstreamClient } from '../../src/gateway/upstream.ts';
import { ManualClock } from '../../src/internal/clock.ts';
import { type FakeUpstream, startFakeUpstream } from './fake-upstream.ts';

const KEY = 'sk-models-test';
const MODELS = '/v1/models';

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

/** A gateway with client keys and the fake upstream, listening on a free loopback port. */
async function serve(): Promise<{ gw: Gateway; base: string }> {
  const gw = await createGateway({
    apiKeys: { [KEY]: 'team' },
    upstreamUrl: fake.url,
    upstreamRetries: 0,
    cacheDir: false,
    localChatLatencyMs: 0,
  });
  gateways.push(gw);
  return { gw, base: await gw.app.listen({ port: 0, host: '127.0.0.1' }) };
}

const sdk = (base: string, apiKey = KEY) => new OpenAI({ baseURL: `${base}/v1`, apiKey, maxRetries: 0 });

async function ids(client: OpenAI): Promise<string[]> {
  const out: string[] = [];
  for await (const model of client.models.list()) out.push(model.id);
  return out;
}

describe('the models routes need the client key when keys are configured', () => {
  it('answers 401 without a key or with a wrong one, and never asks the upstream for them', async () => {
    const { base } = await serve();
    const upstreamCalls = fake.total(MODELS);
    for (const path of ['/v1/models', '/v1/models/local-chat']) {
      const res = await fetch(`${base}${path}`);
      assert.equal(res.status, 401, path);
      const body = (await res.json()) as { error: { code: string; type: string } };
      assert.equal(body.error.code, 'invalid_api_key');
      assert.equal(body.error.type, 'invalid_request_error');
    }
    const wrong = sdk(base, 'sk-wrong');
    await assert.rejects(wrong.models.list(), AuthenticationError);
    await assert.rejects(wrong.models.retrieve('local-chat'), AuthenticationError);
    assert.equal(fake.total(MODELS), upstreamCalls);
  });

  it('lists the local models and the upstream ones with the key', async () => {
    const { base } = await serve();
    assert.deepEqual(await ids(sdk(base)), ['local-embed', 'local-chat', 'fake-model']);
  });
});

describe('GET /v1/models/{model}', () => {
  it("retrieves a local or an upstream model in OpenAI's shape", async () => {
    const { base } = await serve();
    const client = sdk(base);
    const local = await client.models.retrieve('local-chat');
    assert.equal(local.id, 'local-chat');
    assert.equal(local.object, 'model');
    assert.equal(local.owned_by, 'clawperf-local');
    assert.equal(typeof local.created, 'number');
    assert.deepEqual(await client.models.retrieve('fake-model'), {
      id: 'fake-model',
      object: 'model',
      created: 0,
      owned_by: 'fake',
    });
  });

  it("answers 404 model_not_found in OpenAI's error shape for an unknown id", async () => {
    const { base } = await serve();
    const error = await sdk(base)
      .models.retrieve('no-such/model')
      .then(
        () => assert.fail('an unknown model was found'),
        (e: unknown) => e,
      );
    assert.ok(error instanceof NotFoundError, String(error));
    assert.equal(error.status, 404);
    assert.equal(error.code, 'model_not_found');
    assert.equal(error.param, 'model');
    assert.equal(error.type, 'invalid_request_error');
    assert.match(error.message, /no-such\/model/);
  });
});

describe("the upstream's model list", () => {
  it('is fetched once for many list and retrieve calls', async () => {
    const { base } = await serve();
    const client = sdk(base);
    const before = fake.total(MODELS);
    await Promise.all([ids(client), ids(client), client.models.retrieve('fake-model')]);
    await ids(client);
    await client.models.retrieve('local-embed');
    await client.models.retrieve('fake-model');
    assert.equal(fake.total(MODELS) - before, 1);
  });

  it('still serves the local models when the upstream fails', async () => {
    const { base } = await serve();
    fake.fail({ kind: 'status', status: 500 });
    assert.deepEqual(await ids(sdk(base)), ['local-embed', 'local-chat']);
    assert.equal((await sdk(base).models.retrieve('local-chat')).id, 'local-chat');
  });

  it(`is fetched again once it is ${MODELS_TTL_MS / 1000} s old, and not before`, async () => {
    const clock = new ManualClock();
    const upstream = new UpstreamClient({ baseUrl: fake.url, timeoutMs: 5_000, retries: 0, connections: 1 });
    const app = Fastify();
    registerModels(app, {
      upstream,
      clock,
      tenantOf: (request) =>
        request.headers.authorization === `Bearer ${KEY}`
          ? 'team'
          : apiError(401, 'no key', 'invalid_request_error', 'invalid_api_key'),
    });
    after(async () => {
      await app.close();
      await upstream.close();
    });
    const client = sdk(await app.listen({ port: 0, host: '127.0.0.1' }));
    const before = fake.total(MODELS);
    await ids(client);
    await clock.advance(MODELS_TTL_MS - 1);
    await ids(client);
    assert.equal(fake.total(MODELS) - before, 1);
    await clock.advance(1);
    assert.deepEqual(await ids(client), ['local-embed', 'local-chat', 'fake-model']);
    assert.equal(fake.total(MODELS) - before, 2);
  });
});
