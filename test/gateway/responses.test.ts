/**
 * `/v1/responses` with OpenAI's SDK: on `local-chat` (the embedded default) and in front of an
 * OpenAI-compatible upstream (a FAKE one: no real provider can be run here), with tenants kept apart.
 */
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import OpenAI from 'openai';
import { request } from 'undici';
import { createGateway, type Gateway } from '../../src/gateway/server.ts';
import { waitFor } from '../helpers/servers.ts';
import { type FakeResponses, startFakeResponses } from './fake-responses.ts';

const KEYS = { 'key-a': 'team-a', 'key-b': 'team-b' };

describe('/v1/responses on local-chat', () => {
  let gw: Gateway;
  let client: OpenAI;
  before(async () => {
    gw = await createGateway({ cacheDir: false, localChatLatencyMs: 0 });
    const base = await gw.app.listen({ port: 0, host: '127.0.0.1' });
    client = new OpenAI({ apiKey: 'k', baseURL: `${base}/v1`, maxRetries: 0 });
  });
  after(() => gw.close());

  const ask = (input: string) => ({ model: 'local-chat', input, temperature: 0, store: false });

  it('answers a response, then the same deterministic one from the cache', async () => {
    const first = await client.responses.create(ask('what is a prefix?')).withResponse();
    assert.equal(first.data.object, 'response');
    assert.equal(first.data.status, 'completed');
    assert.match(first.data.output_text, /what is a prefix\?/);
    assert.ok((first.data.usage?.input_tokens ?? 0) > 0);
    assert.equal(first.response.headers.get('x-clawperf-cache'), 'miss');
    const second = await client.responses.create(ask('what is a prefix?')).withResponse();
    assert.equal(second.response.headers.get('x-clawperf-cache'), 'hit');
    assert.deepEqual(second.data, first.data);
  });

  it('streams typed events with sequence numbers, and replays a cached response as a stream', async () => {
    const types: string[] = [];
    const numbers: number[] = [];
    const stream = client.responses.stream(ask('stream a response'));
    stream.on('event', (e) => {
      types.push(e.type);
      numbers.push(e.sequence_number);
    });
    const streamed = await stream.finalResponse();
    assert.equal(types[0], 'response.created');
    assert.equal(types.at(-1), 'response.completed');
    assert.ok(types.includes('response.output_text.delta'));
    assert.deepEqual(
      numbers,
      numbers.map((_, i) => i),
    );
    const { data, response } = await client.responses.create(ask('stream a response')).withResponse();
    assert.equal(response.headers.get('x-clawperf-cache'), 'hit');
    assert.equal(data.output_text, streamed.output_text);
    let text = '';
    for await (const e of await client.responses.create({ ...ask('stream a response'), stream: true })) {
      if (e.type === 'response.output_text.delta') text += e.delta;
    }
    assert.equal(text, streamed.output_text);
  });

  it('does not cache a stored response, one with tools, or one that is not deterministic', async () => {
    for (const extra of [
      { store: true },
      { temperature: 1 },
      { tools: [{ type: 'function', name: 'f', parameters: {} }] },
    ]) {
      const { response } = await client.responses
        .create({ ...ask('uncached'), ...extra } as never)
        .withResponse();
      assert.equal(response.headers.get('x-clawperf-cache'), 'bypass', JSON.stringify(extra));
    }
  });

  it('refuses previous_response_id on local-chat with a clear 400, and other sub-routes with 404', async () => {
    const stored = await client.responses.create({ model: 'local-chat', input: 'remember me' });
    await assert.rejects(
      client.responses.create({ model: 'local-chat', input: 'go on', previous_response_id: stored.id }),
      (e: unknown) => {
        assert.ok(e instanceof OpenAI.BadRequestError);
        assert.equal(e.param, 'previous_response_id');
        assert.match(e.message, /keeps no conversation state/);
        return true;
      },
    );
    await assert.rejects(client.responses.inputItems.list(stored.id), OpenAI.NotFoundError);
    await assert.rejects(client.responses.cancel(stored.id), OpenAI.NotFoundError);
  });

  it('validates the fields it checks, naming the param', async () => {
    for (const [body, param] of [
      [{ model: 'local-chat', input: 7 }, 'input'],
      [{ model: 'local-chat', input: 'x', temperature: 9 }, 'temperature'],
      [{ model: 'local-chat', input: 'x', max_output_tokens: 0 }, 'max_output_tokens'],
      [{ model: 'local-chat', input: 'x', store: 'yes' }, 'store'],
      [{ input: 'x' }, 'model'],
    ] as const) {
      await assert.rejects(client.responses.create(body as never), (e: unknown) => {
        assert.ok(e instanceof OpenAI.BadRequestError, String(e));
        assert.equal(e.param, param);
        return true;
      });
    }
  });
});

describe('/v1/responses in front of an upstream, tenants apart', () => {
  let fake: FakeResponses;
  let gw: Gateway;
  let base: string;
  before(async () => {
    fake = await startFakeResponses();
    gw = await createGateway({ upstreamUrl: fake.url, apiKeys: KEYS, cacheDir: false, upstreamRetries: 0 });
    base = await gw.app.listen({ port: 0, host: '127.0.0.1' });
  });
  beforeEach(() => fake.clear());
  after(async () => {
    await gw.close();
    await fake.close();
  });
  const sdk = (key: string) => new OpenAI({ apiKey: key, baseURL: `${base}/v1`, maxRetries: 0 });

  it('passes the request untouched and the response back, with its usage settled', async () => {
    const body = {
      model: 'gpt-fake',
      input: [{ role: 'user', content: 'hi' }],
      instructions: 'be brief',
      reasoning: { effort: 'low' },
    };
    const created = await sdk('key-a').responses.create(body as never);
    assert.equal(created.id, 'resp_fake_1');
    assert.deepEqual(fake.requests[0]!.body, body);
    assert.equal(fake.requests[0]!.headers.authorization, undefined);
  });

  it('lets the creator read, continue and delete its response, and no other tenant even learn it exists', async () => {
    const a = sdk('key-a');
    const b = sdk('key-b');
    const created = await a.responses.create({ model: 'gpt-fake', input: 'secret plan' });
    const streamed = a.responses.stream({ model: 'gpt-fake', input: 'streamed secret' });
    const streamedId = (await streamed.finalResponse()).id;
    for (const id of [created.id, streamedId]) {
      assert.equal((await a.responses.retrieve(id)).id, id);
      const before = fake.requests.length;
      await assert.rejects(b.responses.retrieve(id), OpenAI.NotFoundError);
      await assert.rejects(b.responses.delete(id), OpenAI.NotFoundError);
      await assert.rejects(
        b.responses.create({ model: 'gpt-fake', input: 'go on', previous_response_id: id }),
        (e: unknown) => {
          assert.ok(e instanceof OpenAI.BadRequestError);
          assert.equal(e.code, 'previous_response_not_found');
          assert.equal(e.param, 'previous_response_id');
          return true;
        },
      );
      // None of the refused requests reached the upstream.
      assert.equal(fake.requests.length, before);
    }
    const continued = await a.responses.create({
      model: 'gpt-fake',
      input: 'go on',
      previous_response_id: created.id,
    });
    assert.equal(fake.requests.at(-1)!.body?.previous_response_id, created.id);
    assert.ok(continued.id.startsWith('resp_fake_'));
    await a.responses.delete(created.id);
    assert.equal(fake.total(`/v1/responses/${created.id}`, 'DELETE'), 1);
    // Deleted: it belongs to nobody now, and the upstream is not asked again.
    await assert.rejects(a.responses.retrieve(created.id), OpenAI.NotFoundError);
    assert.equal(fake.total(`/v1/responses/${created.id}`, 'GET'), 1);
  });

  it('settles the token limit to the usage of response.completed', async () => {
    const own = await createGateway({ upstreamUrl: fake.url, cacheDir: false, limits: { tpm: 100_000 } });
    try {
      const url = await own.app.listen({ port: 0, host: '127.0.0.1' });
      const client = new OpenAI({ apiKey: 'k', baseURL: `${url}/v1`, maxRetries: 0 });
      fake.usage = { input_tokens: 4000, cached_tokens: 3000, output_tokens: 50 };
      await client.responses.stream({ model: 'gpt-fake', input: 'x', max_output_tokens: 10 }).finalResponse();
      // Probes that use no tokens, each reserving 1 + 9, then show what the stream settled to: 4050 tokens.
      fake.usage = { input_tokens: 0, cached_tokens: 0, output_tokens: 0 };
      const left = async () => {
        const res = await request(`${url}/v1/responses`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'gpt-fake', input: 'abcd', max_output_tokens: 9 }),
        });
        await res.body.dump();
        return Number(res.headers['x-ratelimit-remaining-tokens']);
      };
      await waitFor(async () => (await left()) === 100_000 - 4050 - 10, { what: 'the stream to settle' });
    } finally {
      await own.close();
    }
  });
});
