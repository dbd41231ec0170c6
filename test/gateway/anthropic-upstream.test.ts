/**
 * `/v1/messages` in front of an Anthropic upstream (a FAKE one: no real provider can be run here), driven by
 * Anthropic's SDK: the headers the upstream gets, streams passed through byte for byte, token accounting
 * with prompt-cache figures, pacing from Anthropic's rate-limit headers, and every upstream failure as the
 * SDK's matching error.
 */
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import { request } from 'undici';
import { createGateway, type Gateway } from '../../src/gateway/server.ts';
import { waitFor } from '../helpers/servers.ts';
import { type FakeAnthropic, startFakeAnthropic } from './fake-anthropic.ts';

const OPERATOR_KEY = 'sk-ant-operator';
const CLIENT_KEY = 'client-key';
const TPM = 1_000_000;

let fake: FakeAnthropic;
let gw: Gateway;
let base: string;

before(async () => {
  fake = await startFakeAnthropic();
  gw = await createGateway({
    // A trailing /v1 is accepted.
    anthropicUpstreamUrl: `${fake.url}/v1`,
    anthropicApiKey: OPERATOR_KEY,
    apiKeys: { [CLIENT_KEY]: 'team' },
    cacheDir: false,
    upstreamRetries: 0,
    limits: { tpm: TPM },
  });
  base = await gw.app.listen({ port: 0, host: '127.0.0.1' });
});
beforeEach(() => fake.clear());
after(async () => {
  await gw.close();
  await fake.close();
});

const sdk = (options: { defaultHeaders?: Record<string, string> } = {}) =>
  new Anthropic({ apiKey: CLIENT_KEY, baseURL: base, maxRetries: 0, ...options });

let n = 0;
/** A request no earlier test asked (so never a cache hit), deterministic unless `extra` says otherwise. */
const fresh = (extra: Record<string, unknown> = {}): Anthropic.MessageCreateParamsNonStreaming =>
  ({
    model: 'claude-fake-1',
    max_tokens: 100,
    temperature: 0,
    messages: [{ role: 'user', content: `question ${++n}` }],
    ...extra,
  }) as Anthropic.MessageCreateParamsNonStreaming;

/** The Anthropic error type of an SDK error. */
const errorType = (e: unknown) =>
  ((e as InstanceType<typeof Anthropic.APIError>).error as { error: { type: string } }).error.type;

/** Tokens the tenant has left this minute, read with a count (which reserves none). */
async function tokensLeft(): Promise<number> {
  const { response } = await sdk()
    .messages.countTokens({ model: 'claude-fake-1', messages: [{ role: 'user', content: 'x' }] })
    .withResponse();
  return Number(response.headers.get('x-ratelimit-remaining-tokens'));
}

describe('the Anthropic upstream gets the operator key and the client protocol headers', () => {
  it("sends x-api-key of the operator, the client's anthropic-version and anthropic-beta, never the client's key", async () => {
    const client = sdk({
      defaultHeaders: { 'anthropic-version': '2023-06-01', 'anthropic-beta': 'tools-2099' },
    });
    const m = await client.messages.create(fresh());
    assert.equal(m.id.startsWith('msg_fake_'), true);
    const seen = fake.requests[0]!;
    assert.equal(seen.path, '/v1/messages');
    assert.equal(seen.headers['x-api-key'], OPERATOR_KEY);
    assert.equal(seen.headers.authorization, undefined);
    assert.equal(seen.headers['anthropic-version'], '2023-06-01');
    assert.equal(seen.headers['anthropic-beta'], 'tools-2099');
    assert.ok(!JSON.stringify(seen.headers).includes(CLIENT_KEY));
  });

  it('sends anthropic-version 2023-06-01 when the client sends none, and fields it does not know untouched', async () => {
    const body = { ...fresh(), service_tier: 'auto', context_management: { edits: [] } };
    const res = await request(`${base}/v1/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': CLIENT_KEY },
      body: JSON.stringify(body),
    });
    assert.equal(res.statusCode, 200);
    await res.body.dump();
    assert.equal(fake.requests[0]!.headers['anthropic-version'], '2023-06-01');
    assert.deepEqual(fake.requests[0]!.body, body);
  });

  it('passes count_tokens to the upstream', async () => {
    const count = await sdk().messages.countTokens({
      model: 'claude-fake-1',
      messages: [{ role: 'user', content: 'hi' }],
    });
    assert.equal(count.input_tokens, 42);
    assert.equal(fake.total('/v1/messages/count_tokens'), 1);
  });

  it("lists the upstream's models after local-chat", async () => {
    const page = await sdk().models.list();
    assert.deepEqual(
      page.data.map((m) => m.id),
      ['local-chat', 'claude-fake-1', 'claude-fake-2'],
    );
    assert.equal(fake.requests.find((r) => r.path === '/v1/models')?.headers['x-api-key'], OPERATOR_KEY);
  });
});

describe('streams pass through unchanged', () => {
  it('gives the client the upstream bytes of an uncached stream, as they are', async () => {
    const res = await request(`${base}/v1/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': CLIENT_KEY, 'x-clawperf-cache': 'bypass' },
      body: JSON.stringify({ ...fresh(), stream: true }),
    });
    assert.equal(res.statusCode, 200);
    assert.match(String(res.headers['content-type']), /text\/event-stream/);
    const text = await res.body.text();
    assert.ok(fake.lastStream.length > 0);
    assert.equal(text, fake.lastStream);
  });

  it('rebuilds a deterministic stream for the cache; the next ask is a hit', async () => {
    const ask = fresh();
    const streamed = await sdk()
      .messages.stream(ask as Anthropic.MessageStreamParams)
      .finalMessage();
    assert.equal((streamed.content[0] as Anthropic.TextBlock).text, 'Hello from the fake upstream.');
    await waitFor(async () => {
      const { response } = await sdk().messages.create(ask).withResponse();
      return response.headers.get('x-clawperf-cache') === 'hit';
    });
    assert.equal(fake.total('/v1/messages'), 1);
  });

  it('ends a broken stream with an error event the SDK raises', async () => {
    fake.fail({ kind: 'break-stream' }, 1);
    const stream = sdk().messages.stream({ ...fresh(), stream: true } as Anthropic.MessageStreamParams);
    await assert.rejects(stream.finalMessage(), (e: unknown) => {
      assert.ok(e instanceof Anthropic.APIError, String(e));
      assert.match(String((e as Error).message), /stream/);
      return true;
    });
  });
});

describe('an error event of the upstream', () => {
  it('reaches the client as it was sent, is raised by the SDK, and nothing is cached', async () => {
    const ask = fresh();
    fake.fail({ kind: 'error-event' }, 1);
    const res = await request(`${base}/v1/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': CLIENT_KEY },
      body: JSON.stringify({ ...ask, stream: true }),
    });
    assert.equal(await res.body.text(), fake.lastStream);
    fake.fail({ kind: 'error-event' }, 1);
    const stream = sdk().messages.stream(ask as Anthropic.MessageStreamParams);
    await assert.rejects(stream.finalMessage(), (e: unknown) => {
      assert.ok(e instanceof Anthropic.APIError, String(e));
      assert.equal(errorType(e), 'overloaded_error');
      return true;
    });
    const { response } = await sdk().messages.create(ask).withResponse();
    assert.equal(response.headers.get('x-clawperf-cache'), 'miss');
  });
});

describe('token accounting: every input token, cached or not, counts', () => {
  const usage = {
    input_tokens: 10,
    cache_creation_input_tokens: 200,
    cache_read_input_tokens: 3000,
    output_tokens: 6,
  };
  const used = 10 + 200 + 3000 + 6;

  it('settles a message to input + cache writes + cache reads + output', async () => {
    const before = await tokensLeft();
    fake.usage = { ...usage };
    await sdk().messages.create(fresh({ temperature: 1 }));
    await waitFor(async () => (await tokensLeft()) === before - used, {
      what: `the tenant's tokens to drop by ${used}`,
    });
  });

  it('settles a stream from message_start and the last message_delta', async () => {
    const before = await tokensLeft();
    fake.usage = { ...usage };
    await sdk()
      .messages.stream(fresh({ temperature: 1 }) as Anthropic.MessageStreamParams)
      .finalMessage();
    await waitFor(async () => (await tokensLeft()) === before - used, {
      what: `the tenant's tokens to drop by ${used}`,
    });
  });
});

describe('upstream failures as the SDK classes', () => {
  it('a 429 that outlasts the retries: RateLimitError with the upstream retry-after', async () => {
    fake.fail({ kind: 'status', status: 429, type: 'rate_limit_error', retryAfter: '7' }, 1);
    await assert.rejects(sdk().messages.create(fresh()), (e: unknown) => {
      assert.ok(e instanceof Anthropic.RateLimitError, String(e));
      assert.equal(errorType(e), 'rate_limit_error');
      assert.equal(e.headers?.get('retry-after'), '7');
      return true;
    });
  });

  it('a 529: InternalServerError with status 529 and overloaded_error', async () => {
    fake.fail({ kind: 'status', status: 529, type: 'overloaded_error' }, 1);
    await assert.rejects(sdk().messages.create(fresh()), (e: unknown) => {
      assert.ok(e instanceof Anthropic.InternalServerError, String(e));
      assert.equal(e.status, 529);
      assert.equal(errorType(e), 'overloaded_error');
      assert.ok(Number(e.headers?.get('retry-after')) >= 1);
      return true;
    });
  });

  it('a 500: InternalServerError with api_error', async () => {
    fake.fail({ kind: 'status', status: 500, type: 'api_error' }, 1);
    await assert.rejects(sdk().messages.create(fresh()), (e: unknown) => {
      assert.ok(e instanceof Anthropic.InternalServerError, String(e));
      assert.equal(errorType(e), 'api_error');
      return true;
    });
  });

  it("relays the upstream's own 4xx: 400, 403", async () => {
    for (const [status, type, cls] of [
      [400, 'invalid_request_error', Anthropic.BadRequestError],
      [403, 'permission_error', Anthropic.PermissionDeniedError],
    ] as const) {
      fake.fail({ kind: 'status', status, type }, 1);
      await assert.rejects(sdk().messages.create(fresh()), (e: unknown) => {
        assert.ok(e instanceof cls, String(e));
        assert.equal(errorType(e), type);
        assert.equal((e as InstanceType<typeof Anthropic.APIError>).message.includes(`fake ${type}`), true);
        return true;
      });
    }
  });

  it('a streamed request refused before its first event is an error answer, not a stream', async () => {
    fake.fail({ kind: 'status', status: 529, type: 'overloaded_error' }, 1);
    const stream = sdk().messages.stream(fresh() as Anthropic.MessageStreamParams);
    await assert.rejects(stream.finalMessage(), (e: unknown) => {
      assert.ok(e instanceof Anthropic.InternalServerError, String(e));
      assert.equal(e.status, 529);
      return true;
    });
  });
});

describe('pacing from Anthropic rate-limit headers', () => {
  // Its own gateway and upstream: the pacing it learns would hold every later call.
  let paced: FakeAnthropic;
  let pacedGw: Gateway;
  let pacedBase: string;
  before(async () => {
    paced = await startFakeAnthropic();
    pacedGw = await createGateway({
      anthropicUpstreamUrl: paced.url,
      cacheDir: false,
      upstreamRetries: 0,
    });
    pacedBase = await pacedGw.app.listen({ port: 0, host: '127.0.0.1' });
  });
  after(async () => {
    await pacedGw.close();
    await paced.close();
  });

  it('holds calls the upstream said it has no room for, and answers 429 with when to retry', async () => {
    const client = new Anthropic({ apiKey: 'any', baseURL: pacedBase, maxRetries: 0 });
    paced.answerHeaders = {
      'anthropic-ratelimit-requests-limit': '50',
      'anthropic-ratelimit-requests-remaining': '0',
      'anthropic-ratelimit-requests-reset': new Date(Date.now() + 120_000).toISOString(),
    };
    await client.messages.create(fresh());
    await assert.rejects(client.messages.create(fresh()), (e: unknown) => {
      assert.ok(e instanceof Anthropic.RateLimitError, String(e));
      assert.equal(errorType(e), 'rate_limit_error');
      assert.ok(Number(e.headers?.get('retry-after')) > 60);
      return true;
    });
    // The second call never reached the upstream.
    assert.equal(paced.total('/v1/messages'), 1);
  });
});
