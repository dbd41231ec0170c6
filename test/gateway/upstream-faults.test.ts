import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { request } from 'undici';
import { createGateway, type Gateway } from '../../src/gateway/server.ts';
import { waitFor } from '../helpers/servers.ts';
import { type FakeUpstream, startFakeUpstream } from './fake-upstream.ts';

// biome-ignore lint/suspicious/noExplicitAny: test answers are read freely
type Json = Record<string, any>;

let fake: FakeUpstream;
let gw: Gateway;
let base: string;

before(async () => {
  fake = await startFakeUpstream();
  gw = await createGateway({
    upstreamUrl: fake.url,
    cacheDir: false,
    localChatLatencyMs: 0,
    upstreamTimeoutMs: 300,
    upstreamRetries: 1,
  });
  base = await gw.app.listen({ port: 0, host: '127.0.0.1' });
});
beforeEach(() => fake.clear());
after(async () => {
  await gw.close();
  await fake.close();
});

async function post(path: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await request(`${base}${path}`, {
    method: 'POST',
    body: JSON.stringify(body),
    headers: { 'content-type': 'application/json', ...headers },
  });
  const text = await res.body.text();
  return {
    status: res.statusCode,
    headers: res.headers,
    text,
    body: (text.startsWith('{') ? JSON.parse(text) : {}) as Json,
  };
}

const chat = (content: string, extra: Json = {}) => ({
  model: 'fake-chat',
  temperature: 0,
  messages: [{ role: 'user', content }],
  ...extra,
});

describe('upstream failures map to 429/502/504 with OpenAI-style errors and cache nothing', () => {
  const cases = [
    { name: 'a 500', fault: { kind: 'status', status: 500 } as const, status: 502 },
    {
      name: 'a 429 with Retry-After',
      fault: { kind: 'status', status: 429, retryAfter: '1' } as const,
      status: 429,
      type: 'requests',
    },
    { name: 'a reset connection', fault: { kind: 'reset' } as const, status: 502 },
    { name: 'invalid JSON', fault: { kind: 'invalid-json' } as const, status: 502 },
    { name: 'a slow upstream', fault: { kind: 'slow', ms: 1_500 } as const, status: 504 },
  ];
  for (const c of cases) {
    it(`${c.name} -> ${c.status}, and the next identical request goes upstream again`, async () => {
      fake.fail(c.fault);
      const failed = await post('/v1/chat/completions', chat(`fault ${c.name}`));
      assert.equal(failed.status, c.status, failed.text);
      assert.equal(typeof failed.body.error.message, 'string');
      assert.equal(failed.body.error.type, 'type' in c ? c.type : 'server_error');
      assert.ok('param' in failed.body.error && 'code' in failed.body.error);
      if (c.status === 429) assert.ok(Number(failed.headers['retry-after']) >= 1);
      fake.clear();
      const calls = fake.total('/v1/chat/completions');
      const ok = await post('/v1/chat/completions', chat(`fault ${c.name}`));
      assert.equal(ok.status, 200);
      assert.equal(ok.headers['x-clawperf-cache'], 'miss');
      assert.equal(fake.total('/v1/chat/completions') - calls, 1);
    });
  }

  it('a failed embeddings batch fails its callers and caches none of the inputs', async () => {
    fake.fail({ kind: 'status', status: 500 });
    const failed = await post('/v1/embeddings', { model: 'fake-embed', input: ['e1', 'e2'] });
    assert.equal(failed.status, 502);
    fake.clear();
    const ok = await post('/v1/embeddings', { model: 'fake-embed', input: ['e1', 'e2'] });
    assert.equal(ok.status, 200);
    assert.equal(ok.headers['x-clawperf-cache'], 'miss');
  });

  it('leaves no unhandled rejection behind, whatever the failure', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    // A gateway of its own: the failures below open its circuit, which must not outlast this test.
    const own = await createGateway({ upstreamUrl: fake.url, cacheDir: false, upstreamRetries: 0 });
    const send = (path: string, body: unknown) =>
      own.app.inject({ method: 'POST', url: path, payload: body as Json }).then((r) => ({
        status: r.statusCode,
        text: r.body,
      }));
    process.on('unhandledRejection', onUnhandled);
    try {
      const faults = [
        { kind: 'status', status: 500 },
        { kind: 'status', status: 429, retryAfter: '0' },
        { kind: 'reset' },
        { kind: 'invalid-json' },
      ] as const;
      for (const [i, fault] of faults.entries()) {
        fake.fail(fault);
        const results = await Promise.all([
          send('/v1/chat/completions', chat(`unhandled ${i}`)),
          send('/v1/chat/completions', chat(`unhandled ${i}`)),
          send('/v1/chat/completions', chat(`unhandled ${i}`, { stream: true })),
          send('/v1/embeddings', { model: 'fake-embed', input: [`u${i}a`, `u${i}b`] }),
        ]);
        for (const r of results) assert.ok(r.status === 429 || r.status >= 500, `${r.status} ${r.text}`);
        fake.clear();
      }
      // Node reports a rejection nobody handled once the microtasks of its turn have run: two turns on.
      await new Promise((r) => setImmediate(r));
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(unhandled, []);
    } finally {
      process.off('unhandledRejection', onUnhandled);
      fake.clear();
      await own.close();
    }
  });
});

describe('with an upstream', () => {
  it('passes other models through and relays the upstream 404 in OpenAI shape', async () => {
    const ok = await post('/v1/embeddings', { model: 'fake-embed', input: ['a', 'b'], dimensions: 4 });
    assert.equal(ok.status, 200);
    assert.deepEqual(
      ok.body.data.map((d: Json) => d.index),
      [0, 1],
    );
    assert.equal(ok.body.data[0].embedding.length, 4);
    const missing = await post('/v1/embeddings', { model: 'no-such-model', input: 'a' });
    assert.equal(missing.status, 404);
    assert.equal(missing.body.error.code, 'model_not_found');
    const local = await post('/v1/embeddings', { model: 'local-embed', input: 'a' });
    assert.equal(local.status, 200);
  });

  it('lists the upstream models beside the local ones', async () => {
    const res = await request(`${base}/v1/models`);
    const ids = ((await res.body.json()) as Json).data.map((m: Json) => m.id);
    assert.deepEqual(ids, ['local-embed', 'local-chat', 'fake-model']);
  });

  it('batches concurrent distinct embedding inputs into at most 20 upstream calls', async () => {
    const before = fake.embedBatches.length;
    const results = await Promise.all(
      Array.from({ length: 1000 }, (_, i) =>
        gw.app.inject({
          method: 'POST',
          url: '/v1/embeddings',
          payload: { model: 'fake-embed', input: `batch ${i}` },
        }),
      ),
    );
    assert.ok(results.every((r) => r.statusCode === 200));
    const calls = fake.embedBatches.length - before;
    assert.ok(calls <= 20, `${calls} upstream calls`);
  });
});

describe('streaming', () => {
  async function stream(body: Json) {
    const res = await request(`${base}/v1/chat/completions`, {
      method: 'POST',
      body: JSON.stringify(body),
      headers: { 'content-type': 'application/json' },
    });
    const chunks: string[] = [];
    for await (const chunk of res.body) chunks.push(chunk.toString());
    return { status: res.statusCode, headers: res.headers, chunks, text: chunks.join('') };
  }

  it('passes the upstream stream through chunk by chunk', async () => {
    const res = await stream(chat('stream please', { stream: true }));
    assert.equal(res.status, 200);
    assert.match(String(res.headers['content-type']), /text\/event-stream/);
    assert.equal(res.headers['x-clawperf-cache'], 'miss');
    assert.ok(res.headers.traceparent);
    assert.ok(res.chunks.length > 1, `${res.chunks.length} chunks`);
    assert.match(res.text, /"content":"fake"/);
    assert.ok(res.text.endsWith('data: [DONE]\n\n'));
  });

  it('streams the local chat model', async () => {
    const res = await stream({ ...chat('local stream', { stream: true }), model: 'local-chat' });
    assert.equal(res.status, 200);
    assert.match(res.text, /chat\.completion\.chunk/);
    assert.ok(res.text.endsWith('data: [DONE]\n\n'));
  });

  it('replays a cached deterministic answer as a stream', async () => {
    const body = chat('cached then streamed');
    const whole = await post('/v1/chat/completions', body);
    assert.equal(whole.headers['x-clawperf-cache'], 'miss');
    const key = String(whole.headers['x-clawperf-cache-key']);
    await waitFor(async () => (await gw.cache.get(key)) !== undefined, { what: 'the answer to be cached' });
    const calls = fake.total('/v1/chat/completions');
    const res = await stream({ ...body, stream: true, stream_options: { include_usage: true } });
    assert.equal(res.status, 200);
    assert.equal(res.headers['x-clawperf-cache'], 'hit');
    assert.equal(fake.total('/v1/chat/completions'), calls);
    const events = res.text.split('\n\n').filter(Boolean);
    assert.equal(events.at(-1), 'data: [DONE]');
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e.slice(6)));
    assert.equal(
      chunks.map((c) => c.choices[0]?.delta?.content ?? '').join(''),
      whole.body.choices[0].message.content,
    );
    assert.equal(chunks.at(-1).usage.total_tokens, whole.body.usage.total_tokens);
  });

  it('caches a streamed deterministic answer whole, for streamed and plain requests alike', async () => {
    const body = chat('streamed first');
    const first = await stream({ ...body, stream: true });
    assert.equal(first.headers['x-clawperf-cache'], 'miss');
    const key = String(first.headers['x-clawperf-cache-key']);
    await waitFor(async () => (await gw.cache.get(key)) !== undefined, {
      what: 'the streamed answer to be cached',
    });
    const calls = fake.total('/v1/chat/completions');
    const plain = await post('/v1/chat/completions', body);
    assert.equal(plain.headers['x-clawperf-cache'], 'hit');
    assert.equal(plain.body.object, 'chat.completion');
    assert.equal(plain.body.choices[0].message.content, 'fake answer to streamed first');
    assert.equal(plain.body.choices[0].finish_reason, 'stop');
    assert.equal(plain.body.usage.total_tokens, 8, 'usage the gateway asked the upstream for');
    const again = await stream({ ...body, stream: true });
    assert.equal(again.headers['x-clawperf-cache'], 'hit');
    const content = again.text
      .split('\n\n')
      .filter((e) => e.startsWith('data: {'))
      .map((e) => JSON.parse(e.slice(6)).choices[0]?.delta?.content ?? '')
      .join('');
    assert.equal(content, 'fake answer to streamed first');
    assert.equal(fake.total('/v1/chat/completions'), calls, 'both answered from the cache');
  });

  it('asks the upstream for usage and hides it from a client that did not ask', async () => {
    const res = await stream(chat('usage please', { stream: true }));
    const options = fake.lastChat?.stream_options as { include_usage?: unknown } | undefined;
    assert.equal(options?.include_usage, true, JSON.stringify(fake.lastChat));
    assert.doesNotMatch(res.text, /"usage"/);
    assert.ok(res.text.endsWith('data: [DONE]\n\n'));
    const asked = await stream(
      chat('usage asked', { stream: true, stream_options: { include_usage: true } }),
    );
    assert.match(asked.text, /"total_tokens":8/);
  });

  it('does not cache a stream it cannot rebuild exactly, or one that broke off', async () => {
    const tool = await stream(chat('please use a tool', { stream: true }));
    assert.match(tool.text, /tool_calls/, 'the tool call is passed through');
    const cut = await stream(chat('this will be cut short', { stream: true })).catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 50));
    for (const prompt of ['please use a tool', 'this will be cut short']) {
      const calls = fake.total('/v1/chat/completions');
      const res = await post('/v1/chat/completions', chat(prompt));
      assert.equal(res.headers['x-clawperf-cache'], 'miss', `${prompt}: ${String(cut)}`);
      assert.equal(fake.total('/v1/chat/completions'), calls + 1);
    }
  });

  it('maps a failure before the stream starts to an error answer', async () => {
    fake.fail({ kind: 'status', status: 500 });
    const res = await stream(chat('stream fail', { stream: true }));
    assert.equal(res.status, 502);
    assert.equal(JSON.parse(res.text).error.type, 'server_error');
  });
});
