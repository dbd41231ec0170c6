/**
 * `/v1/messages`, `/v1/messages/count_tokens` and Anthropic's `/v1/models` on the embedded default
 * (`local-chat`, no upstream), driven by Anthropic's own SDK: answers, streams, the cache, per-tenant keys
 * and the errors its classes are raised for.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { request } from 'undici';
import { createGateway, type Gateway } from '../../src/gateway/server.ts';
import { waitFor } from '../helpers/servers.ts';

const KEYS = { 'key-a': 'team-a', 'key-b': 'team-b' };

let gw: Gateway;
let base: string;

before(async () => {
  gw = await createGateway({ cacheDir: false, localChatLatencyMs: 0, apiKeys: KEYS });
  base = await gw.app.listen({ port: 0, host: '127.0.0.1' });
});
after(() => gw.close());

const sdk = (apiKey = 'key-a') => new Anthropic({ apiKey, baseURL: base, maxRetries: 0 });

/** A deterministic request (temperature 0), with `extra` fields. */
const ask = (
  content: string,
  extra: Record<string, unknown> = {},
): Anthropic.MessageCreateParamsNonStreaming =>
  ({
    model: 'local-chat',
    max_tokens: 200,
    temperature: 0,
    messages: [{ role: 'user', content }],
    ...extra,
  }) as Anthropic.MessageCreateParamsNonStreaming;

describe('/v1/messages on local-chat, with the Anthropic SDK', () => {
  it('answers a message in Anthropic shape, then the same request from the cache', async () => {
    const first = await sdk().messages.create(ask('what is a cache?')).withResponse();
    assert.equal(first.data.type, 'message');
    assert.equal(first.data.role, 'assistant');
    assert.equal(first.data.model, 'local-chat');
    assert.equal(first.data.content[0]?.type, 'text');
    assert.match((first.data.content[0] as Anthropic.TextBlock).text, /what is a cache\?/);
    assert.equal(first.data.stop_reason, 'end_turn');
    assert.ok(first.data.usage.input_tokens > 0 && first.data.usage.output_tokens > 0);
    assert.equal(first.response.headers.get('x-clawperf-cache'), 'miss');
    const second = await sdk().messages.create(ask('what is a cache?')).withResponse();
    assert.equal(second.response.headers.get('x-clawperf-cache'), 'hit');
    assert.deepEqual(second.data, first.data);
  });

  it('streams to the final message, and replays a cached answer as a valid event stream', async () => {
    const stream = sdk().messages.stream(ask('stream me'));
    const events: string[] = [];
    stream.on('streamEvent', (e) => events.push(e.type));
    const streamed = await stream.finalMessage();
    assert.deepEqual(
      [...new Set(events)],
      [
        'message_start',
        'content_block_start',
        'content_block_delta',
        'content_block_stop',
        'message_delta',
        'message_stop',
      ],
    );
    const created = await sdk().messages.create(ask('stream me')).withResponse();
    assert.equal(created.response.headers.get('x-clawperf-cache'), 'hit');
    assert.deepEqual(created.data.content, streamed.content);
    assert.equal(created.data.usage.output_tokens, streamed.usage.output_tokens);
    const replayed = await sdk().messages.stream(ask('stream me')).finalMessage();
    assert.deepEqual(replayed.content, streamed.content);
    assert.equal(replayed.stop_reason, 'end_turn');
    assert.equal(replayed.usage.output_tokens, streamed.usage.output_tokens);
  });

  it('cuts the answer at max_tokens and says so', async () => {
    const m = await sdk().messages.create(ask('a long question', { max_tokens: 5 }));
    assert.equal(m.stop_reason, 'max_tokens');
    assert.ok((m.content[0] as Anthropic.TextBlock).text.length <= 20);
  });

  it('does not cache an answer that is not deterministic, nor one with tools', async () => {
    const hot = await sdk()
      .messages.create(ask('hot', { temperature: 1 }))
      .withResponse();
    assert.equal(hot.response.headers.get('x-clawperf-cache'), 'bypass');
    const tools = [{ name: 'f', description: 'f', input_schema: { type: 'object' as const } }];
    const withTools = await sdk().messages.create(ask('tools', { tools })).withResponse();
    assert.equal(withTools.response.headers.get('x-clawperf-cache'), 'bypass');
  });

  it("keeps tenants apart: x-api-key picks the tenant, and one tenant never gets another one's cached answer", async () => {
    await sdk('key-a').messages.create(ask('tenant question'));
    const b = await sdk('key-b').messages.create(ask('tenant question')).withResponse();
    assert.equal(b.response.headers.get('x-clawperf-cache'), 'miss');
    // A bearer token (Anthropic's authToken) is a client key too.
    const bearer = new Anthropic({ authToken: 'key-b', apiKey: null, baseURL: base, maxRetries: 0 });
    const again = await bearer.messages.create(ask('tenant question')).withResponse();
    assert.equal(again.response.headers.get('x-clawperf-cache'), 'hit');
  });

  it('counts tokens', async () => {
    const count = await sdk().messages.countTokens({
      model: 'local-chat',
      system: 'You are terse.',
      messages: [{ role: 'user', content: 'count these words please' }],
    });
    // ceil((14 + 24) / 4) by the documented estimate.
    assert.equal(count.input_tokens, 10);
  });
});

describe('Anthropic errors, as the SDK raises them', () => {
  it('401 authentication_error for a missing or wrong key', async () => {
    await assert.rejects(sdk('wrong').messages.create(ask('x')), (e: unknown) => {
      assert.ok(e instanceof Anthropic.AuthenticationError);
      assert.equal(e.status, 401);
      assert.equal((e.error as { error: { type: string } }).error.type, 'authentication_error');
      return true;
    });
    const res = await request(`${base}/v1/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(ask('x')),
    });
    assert.equal(res.statusCode, 401);
    assert.deepEqual((await res.body.json()) as object, {
      type: 'error',
      error: {
        type: 'authentication_error',
        message: 'you must provide an API key (Authorization: Bearer <key>, or x-api-key: <key>)',
      },
    });
  });

  it('400 invalid_request_error naming the field', async () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ model: 'local-chat', messages: [{ role: 'user', content: 'x' }] }, /^max_tokens: Field required/],
      [{ ...ask('x'), temperature: 3 }, /^temperature: must be a number in \[0, 1\], got 3/],
      [{ ...ask('x'), messages: [{ role: 'system', content: 'x' }] }, /^messages\.0\.role: /],
      [
        { ...ask('x'), messages: [{ role: 'user', content: [{ text: 'no type' }] }] },
        /^messages\.0\.content\.0: /,
      ],
      [{ ...ask('x'), system: 7 }, /^system: /],
      [{ ...ask('x'), stop_sequences: 'END' }, /^stop_sequences: /],
      [{ ...ask('x'), metadata: { user_id: 5 } }, /^metadata\.user_id: /],
      [{ ...ask('x'), max_tokens: 0 }, /^max_tokens: must be an integer >= 1/],
    ];
    for (const [body, message] of cases) {
      await assert.rejects(sdk().messages.create(body as never), (e: unknown) => {
        assert.ok(e instanceof Anthropic.BadRequestError, String(e));
        assert.equal((e.error as { error: { type: string } }).error.type, 'invalid_request_error');
        assert.match((e.error as { error: { message: string } }).error.message, message);
        return true;
      });
    }
  });

  it('404 not_found_error for a model it cannot serve, and for an unknown path', async () => {
    await assert.rejects(sdk().messages.create(ask('x', { model: 'claude-nowhere' })), (e: unknown) => {
      assert.ok(e instanceof Anthropic.NotFoundError);
      assert.equal((e.error as { error: { type: string } }).error.type, 'not_found_error');
      return true;
    });
    const res = await request(`${base}/v1/messages/batches`, {
      method: 'POST',
      headers: { 'x-api-key': 'key-a' },
    });
    assert.equal(res.statusCode, 404);
    assert.equal(((await res.body.json()) as { error: { type: string } }).error.type, 'not_found_error');
  });

  it('400 for a body that is not JSON, in Anthropic shape', async () => {
    const res = await request(`${base}/v1/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': 'key-a' },
      body: '{"model":',
    });
    assert.equal(res.statusCode, 400);
    const body = (await res.body.json()) as { type: string; error: { type: string } };
    assert.equal(body.type, 'error');
    assert.equal(body.error.type, 'invalid_request_error');
  });
});

describe('GET /v1/models speaks the shape the client asks for', () => {
  it("answers Anthropic's page to Anthropic's SDK", async () => {
    const page = await sdk().models.list();
    assert.deepEqual(
      page.data.map((m) => [m.type, m.id]),
      [['model', 'local-chat']],
    );
    assert.match(page.data[0]!.created_at, /^\d{4}-\d\d-\d\dT/);
    const one = await sdk().models.retrieve('local-chat');
    assert.equal(one.id, 'local-chat');
    await assert.rejects(sdk().models.retrieve('local-nothing'), Anthropic.NotFoundError);
  });

  it("answers OpenAI's list without anthropic-version", async () => {
    const openai = new OpenAI({ apiKey: 'key-a', baseURL: `${base}/v1`, maxRetries: 0 });
    const ids: string[] = [];
    for await (const m of openai.models.list()) ids.push(m.id);
    assert.deepEqual(ids, ['local-embed', 'local-chat']);
  });

  it('pages by limit, after_id and before_id', async () => {
    const res = await request(`${base}/v1/models?limit=1`, {
      headers: { 'x-api-key': 'key-a', 'anthropic-version': '2023-06-01' },
    });
    assert.deepEqual(await res.body.json(), {
      data: [(await sdk().models.retrieve('local-chat')) as unknown],
      has_more: false,
      first_id: 'local-chat',
      last_id: 'local-chat',
    });
    const bad = await request(`${base}/v1/models?limit=0`, {
      headers: { 'x-api-key': 'key-a', 'anthropic-version': '2023-06-01' },
    });
    assert.equal(bad.statusCode, 400);
    assert.equal(
      ((await bad.body.json()) as { error: { type: string } }).error.type,
      'invalid_request_error',
    );
  });
});

describe("the gateway's own refusals on /v1/messages", () => {
  /** A gateway of its own with `config`, closed after the test. */
  async function own(
    t: { after: (fn: () => Promise<void>) => void },
    config: Parameters<typeof createGateway>[0],
  ) {
    const g = await createGateway({ cacheDir: false, localChatLatencyMs: 0, ...config });
    t.after(() => g.close());
    const url = await g.app.listen({ port: 0, host: '127.0.0.1' });
    return { g, client: new Anthropic({ apiKey: 'k', baseURL: url, maxRetries: 0 }) };
  }

  it('429 rate_limit_error with retry-after past the tenant limit', async (t) => {
    const { client } = await own(t, { limits: { rpm: 1 } });
    await client.messages.create(ask('one'));
    await assert.rejects(client.messages.create(ask('two')), (e: unknown) => {
      assert.ok(e instanceof Anthropic.RateLimitError, String(e));
      assert.equal((e.error as { error: { type: string } }).error.type, 'rate_limit_error');
      assert.ok(Number(e.headers?.get('retry-after')) >= 1);
      return true;
    });
  });

  it('529 overloaded_error with retry-after when its upstream slots and queue are full', async (t) => {
    const { g, client } = await own(t, { localChatLatencyMs: 60_000, maxConcurrency: 1, maxQueueSize: 0 });
    const holder = new AbortController();
    const held = client.messages.create(ask('hold the slot'), { signal: holder.signal }).catch(() => {});
    await waitFor(() => g.stats().upstreamCalls === 1, { what: 'the first call to hold the slot' });
    await assert.rejects(client.messages.create(ask('no room')), (e: unknown) => {
      assert.ok(e instanceof Anthropic.InternalServerError, String(e));
      assert.equal(e.status, 529);
      assert.equal((e.error as { error: { type: string } }).error.type, 'overloaded_error');
      assert.ok(Number(e.headers?.get('retry-after')) >= 1);
      return true;
    });
    holder.abort();
    await held;
  });

  it('413 request_too_large for a body over the limit', async (t) => {
    const { client } = await own(t, { bodyLimitBytes: 1024 });
    await assert.rejects(client.messages.create(ask('x'.repeat(4096))), (e: unknown) => {
      assert.ok(e instanceof Anthropic.APIError, String(e));
      assert.equal(e.status, 413);
      assert.equal((e.error as { error: { type: string } }).error.type, 'request_too_large');
      return true;
    });
  });
});
