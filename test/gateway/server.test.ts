import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { GatewayConfig } from '../../src/gateway/config.ts';
import { sha256 } from '../../src/gateway/context.ts';
import { createGateway, type Gateway } from '../../src/gateway/server.ts';

const dirs: string[] = [];
const gateways: Gateway[] = [];

async function gateway(config: Partial<GatewayConfig> = {}): Promise<Gateway> {
  const dir = await mkdtemp(join(tmpdir(), 'clawperf-gw-'));
  dirs.push(dir);
  const gw = await createGateway({ cacheDir: dir, localChatLatencyMs: 0, ...config });
  gateways.push(gw);
  return gw;
}

after(async () => {
  await Promise.all(gateways.map((g) => g.close()));
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

// biome-ignore lint/suspicious/noExplicitAny: test answers are read freely
type Json = Record<string, any>;

async function post(gw: Gateway, url: string, payload: unknown, headers: Record<string, string> = {}) {
  const res = await gw.app.inject({ method: 'POST', url, payload: payload as Json, headers });
  return {
    status: res.statusCode,
    headers: res.headers,
    body: res.body === '' ? {} : (JSON.parse(res.body) as Json),
  };
}

const embed = (input: unknown, extra: Json = {}) => ({ model: 'local-embed', input, ...extra });
const chat = (content: string, extra: Json = {}) => ({
  model: 'local-chat',
  temperature: 0,
  messages: [{ role: 'user', content }],
  ...extra,
});

function assertOpenAIError(res: { status: number; body: Json }, status: number, param?: string | RegExp) {
  assert.equal(res.status, status);
  const e = res.body.error;
  assert.ok(e, `no error body: ${JSON.stringify(res.body)}`);
  assert.equal(typeof e.message, 'string');
  assert.equal(typeof e.type, 'string');
  assert.ok('param' in e && 'code' in e);
  if (typeof param === 'string') assert.equal(e.param, param);
  else if (param !== undefined) assert.match(e.param, param);
}

describe('POST /v1/embeddings', () => {
  let gw: Gateway;
  before(async () => {
    gw = await gateway();
  });

  it('answers in OpenAI shape, in input order, with usage', async () => {
    const res = await post(gw, '/v1/embeddings', embed(['alpha', 'beta', 'gamma'], { dimensions: 16 }));
    assert.equal(res.status, 200);
    assert.equal(res.body.object, 'list');
    assert.equal(res.body.model, 'local-embed');
    assert.deepEqual(
      res.body.data.map((d: Json) => [d.object, d.index, d.embedding.length]),
      [
        ['embedding', 0, 16],
        ['embedding', 1, 16],
        ['embedding', 2, 16],
      ],
    );
    const single = await post(gw, '/v1/embeddings', embed('beta', { dimensions: 16 }));
    assert.deepEqual(single.body.data[0].embedding, res.body.data[1].embedding);
    assert.ok(res.body.usage.prompt_tokens > 0);
    assert.equal(res.body.usage.total_tokens, res.body.usage.prompt_tokens);
  });

  it('caches each input separately: a repeat is a hit, a new input among cached ones a miss', async () => {
    const first = await post(gw, '/v1/embeddings', embed(['one', 'two']));
    assert.equal(first.headers['x-clawperf-cache'], 'miss');
    const again = await post(gw, '/v1/embeddings', embed(['two', 'one']));
    assert.equal(again.headers['x-clawperf-cache'], 'hit');
    assert.deepEqual(again.body.data[0].embedding, first.body.data[1].embedding);
    const calls = gw.stats().upstreamItems;
    const mixed = await post(gw, '/v1/embeddings', embed(['one', 'three']));
    assert.equal(mixed.headers['x-clawperf-cache'], 'miss');
    assert.equal(gw.stats().upstreamItems - calls, 1, 'only the new input went upstream');
  });

  it('a hit answers the same JSON text as the miss, as floats and as base64', async () => {
    for (const extra of [{}, { encoding_format: 'base64' }, { encoding_format: 'float' }]) {
      const send = () =>
        gw.app.inject({ method: 'POST', url: '/v1/embeddings', payload: embed(['same text', 'x'], extra) });
      const miss = await send();
      const hit = await send();
      assert.equal(hit.headers['x-clawperf-cache'], 'hit');
      assert.equal(hit.headers['content-type'], 'application/json; charset=utf-8');
      assert.equal(hit.body, miss.body);
      const parsed = JSON.parse(hit.body) as Json;
      const first = parsed.data[0].embedding;
      assert.equal(
        typeof first,
        'encoding_format' in extra && extra.encoding_format === 'base64' ? 'string' : 'object',
      );
    }
  });

  it('a value of another shape under an embedding key is a miss, and is replaced', async () => {
    const key = `emb:default:local-embed::${sha256('reshaped')}`;
    await gw.cache.set(key, { e: [1, 2, 3], t: 1 });
    const res = await post(gw, '/v1/embeddings', embed('reshaped'));
    assert.equal(res.status, 200);
    assert.equal(res.headers['x-clawperf-cache'], 'miss');
    assert.equal(res.body.data[0].embedding.length, 256);
    const again = await post(gw, '/v1/embeddings', embed('reshaped'));
    assert.equal(again.headers['x-clawperf-cache'], 'hit');
    assert.deepEqual(again.body, res.body);
  });

  it('keys the cache by dimensions too', async () => {
    const a = await post(gw, '/v1/embeddings', embed('dims', { dimensions: 8 }));
    const b = await post(gw, '/v1/embeddings', embed('dims', { dimensions: 32 }));
    assert.equal(b.headers['x-clawperf-cache'], 'miss');
    assert.equal(a.body.data[0].embedding.length, 8);
    assert.equal(b.body.data[0].embedding.length, 32);
  });

  it('encodes base64 as little-endian float32 when asked', async () => {
    const floats = await post(gw, '/v1/embeddings', embed('b64', { dimensions: 8 }));
    const b64 = await post(gw, '/v1/embeddings', embed('b64', { dimensions: 8, encoding_format: 'base64' }));
    const buf = Buffer.from(b64.body.data[0].embedding, 'base64');
    const decoded = Array.from(new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4));
    const expected: number[] = floats.body.data[0].embedding;
    for (let i = 0; i < expected.length; i++) assert.ok(Math.abs(expected[i]! - decoded[i]!) < 1e-6);
  });

  it('makes at most 20 upstream calls for 1,000 concurrent requests with distinct inputs', async () => {
    const g = await gateway();
    const results = await Promise.all(
      Array.from({ length: 1000 }, (_, i) => post(g, '/v1/embeddings', embed(`distinct input ${i}`))),
    );
    assert.ok(results.every((r) => r.status === 200));
    const calls = g.stats().upstreamCalls;
    assert.ok(calls <= 20, `${calls} upstream calls`);
    assert.equal(g.stats().upstreamItems, 1000);
  });

  it('makes one upstream call for 1,000 concurrent identical requests', async () => {
    const g = await gateway();
    const results = await Promise.all(
      Array.from({ length: 1000 }, () => post(g, '/v1/embeddings', embed('same'))),
    );
    assert.ok(results.every((r) => r.status === 200));
    assert.equal(g.stats().upstreamCalls, 1);
  });
});

describe('POST /v1/chat/completions', () => {
  let gw: Gateway;
  before(async () => {
    gw = await gateway();
  });

  it('a hit answers the same JSON text as the miss', async () => {
    const send = () =>
      gw.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chat('same bytes') });
    const miss = await send();
    const hit = await send();
    assert.equal(miss.headers['x-clawperf-cache'], 'miss');
    assert.equal(hit.headers['x-clawperf-cache'], 'hit');
    assert.equal(hit.headers['content-type'], 'application/json; charset=utf-8');
    assert.equal(hit.body, miss.body);
    assert.equal((JSON.parse(hit.body) as Json).object, 'chat.completion');
  });

  it('caches a deterministic request (temperature 0, no tools)', async () => {
    const a = await post(gw, '/v1/chat/completions', chat('cache me'));
    assert.equal(a.status, 200);
    assert.equal(a.body.object, 'chat.completion');
    assert.ok(a.body.usage.total_tokens > 0);
    assert.equal(a.headers['x-clawperf-cache'], 'miss');
    const b = await post(gw, '/v1/chat/completions', chat('cache me'));
    assert.equal(b.headers['x-clawperf-cache'], 'hit');
    assert.deepEqual(b.body, a.body);
  });

  it('does not cache a non-deterministic request or one with tools', async () => {
    const calls = gw.stats().upstreamCalls;
    for (const body of [
      chat('warm', { temperature: 0.7 }),
      chat('warm', { temperature: 0.7 }),
      chat('tools', { tools: [{ type: 'function', function: { name: 'f' } }] }),
      chat('tools', { tools: [{ type: 'function', function: { name: 'f' } }] }),
    ]) {
      const res = await post(gw, '/v1/chat/completions', body);
      assert.equal(res.headers['x-clawperf-cache'], 'bypass');
    }
    assert.equal(gw.stats().upstreamCalls - calls, 4);
  });

  it('skips the cache with x-clawperf-cache: bypass or cache-control: no-cache, and caches with force', async () => {
    await post(gw, '/v1/chat/completions', chat('headers'));
    for (const headers of [{ 'x-clawperf-cache': 'bypass' }, { 'cache-control': 'no-cache' }] as Record<
      string,
      string
    >[]) {
      const res = await post(gw, '/v1/chat/completions', chat('headers'), headers);
      assert.equal(res.headers['x-clawperf-cache'], 'bypass');
    }
    const forced = chat('forced', { temperature: 1 });
    const a = await post(gw, '/v1/chat/completions', forced, { 'x-clawperf-cache': 'force' });
    const b = await post(gw, '/v1/chat/completions', forced, { 'x-clawperf-cache': 'force' });
    assert.equal(a.headers['x-clawperf-cache'], 'miss');
    assert.equal(b.headers['x-clawperf-cache'], 'hit');
  });

  it('makes one upstream call for concurrent identical deterministic requests', async () => {
    const g = await gateway({ localChatLatencyMs: 20 });
    const results = await Promise.all(
      Array.from({ length: 200 }, () => post(g, '/v1/chat/completions', chat('herd'))),
    );
    assert.ok(results.every((r) => r.status === 200));
    assert.equal(g.stats().upstreamCalls, 1);
  });
});

describe('the disk cache across a restart', () => {
  it('keeps the answers that were reused and skips those asked once', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'clawperf-gw-'));
    dirs.push(dir);
    const first = await createGateway({ cacheDir: dir, localChatLatencyMs: 0 });
    for (const content of ['asked twice', 'asked twice', 'asked once']) {
      assert.equal((await post(first, '/v1/chat/completions', chat(content))).status, 200);
    }
    await first.close();
    const second = await gateway({ cacheDir: dir });
    const twice = await post(second, '/v1/chat/completions', chat('asked twice'));
    assert.equal(twice.headers['x-clawperf-cache'], 'hit', 'written to disk at its reuse');
    const once = await post(second, '/v1/chat/completions', chat('asked once'));
    assert.equal(once.headers['x-clawperf-cache'], 'miss', 'never written: it was used once');
  });
});

describe('bad input gets an OpenAI-style 4xx and the gateway serves the next request', () => {
  let gw: Gateway;
  before(async () => {
    gw = await gateway({ bodyLimitBytes: 1024 });
  });

  it('rejects malformed JSON, wrong types, empty input, unknown models and oversized bodies', async () => {
    const raw = await gw.app.inject({
      method: 'POST',
      url: '/v1/chat/completions',
      payload: '{"model": "local-chat", "messages": [',
      headers: { 'content-type': 'application/json' },
    });
    assertOpenAIError({ status: raw.statusCode, body: JSON.parse(raw.body) }, 400, 'body');
    assertOpenAIError(await post(gw, '/v1/embeddings', { model: 'local-embed', input: 42 }), 400, 'input');
    assertOpenAIError(await post(gw, '/v1/embeddings', embed([])), 400, 'input');
    assertOpenAIError(await post(gw, '/v1/embeddings', embed('')), 400, 'input[0]');
    assertOpenAIError(await post(gw, '/v1/embeddings', embed('x', { dimensions: 'big' })), 400, 'dimensions');
    assertOpenAIError(await post(gw, '/v1/embeddings', { input: 'x' }), 400, 'model');
    assertOpenAIError(
      await post(gw, '/v1/chat/completions', { model: 'local-chat', messages: 'hi' }),
      400,
      'messages',
    );
    assertOpenAIError(await post(gw, '/v1/chat/completions', chat('x', { stream: 'yes' })), 400, 'stream');
    assertOpenAIError(
      await post(gw, '/v1/chat/completions', chat('x', { max_tokens: -1 })),
      400,
      'max_tokens',
    );
    const unknown = await post(gw, '/v1/chat/completions', chat('x', { model: 'gpt-unknown' }));
    assertOpenAIError(unknown, 404, 'model');
    assert.equal(unknown.body.error.code, 'model_not_found');
    assertOpenAIError(await post(gw, '/v1/embeddings', embed('x'.repeat(4096))), 413);
    assertOpenAIError(await post(gw, '/v1/nothing', {}), 404);
    const ok = await post(gw, '/v1/embeddings', embed('still up'));
    assert.equal(ok.status, 200);
  });
});

describe('every response', () => {
  it('carries x-clawperf-cache, x-clawperf-overhead-ms and traceparent', async () => {
    const gw = await gateway();
    const responses = [
      await gw.app.inject({ method: 'GET', url: '/healthz' }),
      await gw.app.inject({ method: 'GET', url: '/nope' }),
      await gw.app.inject({ method: 'POST', url: '/v1/embeddings', payload: embed('headers') }),
      await gw.app.inject({ method: 'POST', url: '/v1/embeddings', payload: { model: 'x' } }),
    ];
    for (const res of responses) {
      assert.match(String(res.headers['x-clawperf-cache']), /^(hit|miss|bypass)$/);
      assert.match(String(res.headers['x-clawperf-overhead-ms']), /^\d+\.\d{3}$/);
      assert.match(String(res.headers.traceparent), /^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
    }
  });

  it('continues the caller trace', async () => {
    const gw = await gateway();
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const res = await gw.app.inject({
      method: 'GET',
      url: '/healthz',
      headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01` },
    });
    assert.equal(String(res.headers.traceparent).split('-')[1], traceId);
  });
});

describe('tenants and API keys', () => {
  it('maps keys to tenants, refuses missing or wrong keys, and keeps tenants apart in the cache', async () => {
    const gw = await gateway({ apiKeys: { 'key-a': 'team-a', 'key-b': 'team-b' } });
    assertOpenAIError(await post(gw, '/v1/embeddings', embed('t')), 401);
    assertOpenAIError(await post(gw, '/v1/embeddings', embed('t'), { authorization: 'Bearer wrong' }), 401);
    const a1 = await post(gw, '/v1/embeddings', embed('t'), { authorization: 'Bearer key-a' });
    const a2 = await post(gw, '/v1/embeddings', embed('t'), { authorization: 'Bearer key-a' });
    const b1 = await post(gw, '/v1/embeddings', embed('t'), { authorization: 'Bearer key-b' });
    assert.deepEqual(
      [a1.headers['x-clawperf-cache'], a2.headers['x-clawperf-cache'], b1.headers['x-clawperf-cache']],
      ['miss', 'hit', 'miss'],
    );
  });

  it('without keys serves loopback clients only', async () => {
    const gw = await gateway();
    const remote = await gw.app.inject({
      method: 'POST',
      url: '/v1/embeddings',
      payload: embed('x'),
      remoteAddress: '203.0.113.9',
    });
    assert.equal(remote.statusCode, 401);
    assert.match(JSON.parse(remote.body).error.message, /loopback/);
    const local = await gw.app.inject({
      method: 'POST',
      url: '/v1/embeddings',
      payload: embed('x'),
      remoteAddress: '::1',
    });
    assert.equal(local.statusCode, 200);
  });
});

describe('rate limits', () => {
  it('are off by default', async () => {
    const gw = await gateway();
    for (let i = 0; i < 30; i++)
      assert.equal((await post(gw, '/v1/embeddings', embed(`free ${i}`))).status, 200);
  });

  it('refuse requests over the RPM with 429, Retry-After and rate-limit headers', async () => {
    const gw = await gateway({ limits: { rpm: 2 }, apiKeys: { k1: 'one', k2: 'two' } });
    const auth = { authorization: 'Bearer k1' };
    const first = await post(gw, '/v1/embeddings', embed('r1'), auth);
    assert.equal(first.headers['x-ratelimit-limit-requests'], '2');
    assert.equal(first.headers['x-ratelimit-remaining-requests'], '1');
    assert.equal((await post(gw, '/v1/embeddings', embed('r2'), auth)).status, 200);
    const refused = await post(gw, '/v1/embeddings', embed('r3'), auth);
    assertOpenAIError(refused, 429);
    assert.equal(refused.body.error.code, 'rate_limit_exceeded');
    assert.ok(Number(refused.headers['retry-after']) >= 1);
    assert.equal((await post(gw, '/v1/embeddings', embed('r3'), { authorization: 'Bearer k2' })).status, 200);
  });

  it('reserve estimated tokens against the TPM and settle them from usage', async () => {
    const gw = await gateway({ limits: { tpm: 1000 } });
    const a = await post(gw, '/v1/chat/completions', chat('short', { max_tokens: 900 }));
    assert.equal(a.status, 200);
    await new Promise((r) => setImmediate(r));
    const b = await post(gw, '/v1/chat/completions', chat('short again', { max_tokens: 900 }));
    assert.equal(b.status, 200, 'the first reservation was settled down to its real usage');
    const remaining = Number(b.headers['x-ratelimit-remaining-tokens']);
    assert.ok(remaining < 1000 - 900, `remaining ${remaining}`);
    const tooBig = await post(gw, '/v1/chat/completions', chat('huge', { max_tokens: 5000 }));
    assertOpenAIError(tooBig, 429);
  });
});

describe('rate-limit headers', () => {
  const names = (headers: Json) => Object.keys(headers).filter((h) => h.startsWith('x-ratelimit-'));

  it('are sent on every answer of a limited route when limits are configured', async () => {
    const gw = await gateway({ limits: { rpm: 1000, tpm: 1_000_000 } });
    const answers = [
      await post(gw, '/v1/embeddings', embed('headers miss')),
      await post(gw, '/v1/embeddings', embed('headers miss')),
      await post(gw, '/v1/embeddings', embed(['headers a', 'headers b'])),
      await post(gw, '/v1/embeddings', embed('headers bypass'), { 'x-clawperf-cache': 'bypass' }),
      await post(gw, '/v1/chat/completions', chat('headers chat')),
      await post(gw, '/v1/chat/completions', chat('headers chat')),
      await post(gw, '/v1/chat/completions', chat('headers random', { temperature: 1 })),
    ];
    const stream = await gw.app.inject({
      method: 'POST',
      url: '/v1/chat/completions',
      payload: chat('headers stream', { stream: true }),
    });
    const cachedStream = await gw.app.inject({
      method: 'POST',
      url: '/v1/chat/completions',
      payload: chat('headers chat', { stream: true }),
    });
    assert.deepEqual(
      [...answers.map((a) => a.headers['x-clawperf-cache']), cachedStream.headers['x-clawperf-cache']],
      ['miss', 'hit', 'miss', 'bypass', 'miss', 'hit', 'bypass', 'hit'],
    );
    for (const headers of [...answers.map((a) => a.headers), stream.headers, cachedStream.headers]) {
      assert.deepEqual(names(headers).sort(), [
        'x-ratelimit-limit-requests',
        'x-ratelimit-limit-tokens',
        'x-ratelimit-remaining-requests',
        'x-ratelimit-remaining-tokens',
        'x-ratelimit-reset-requests',
        'x-ratelimit-reset-tokens',
      ]);
      assert.equal(headers['x-ratelimit-limit-requests'], '1000');
      assert.match(String(headers['x-ratelimit-reset-tokens']), /^\d+ms$/);
    }
    const remaining = [...answers.map((a) => a.headers), stream.headers, cachedStream.headers].map((h) =>
      Number(h['x-ratelimit-remaining-requests']),
    );
    assert.deepEqual(
      remaining,
      remaining.map((_, i) => 999 - i),
      'each answer reports the count after its own request',
    );
  });

  it('are sent on a request the limiter refuses', async () => {
    const gw = await gateway({ limits: { rpm: 1 }, apiKeys: { k: 'refused' } });
    const auth = { authorization: 'Bearer k' };
    assert.equal((await post(gw, '/v1/embeddings', embed('one'), auth)).status, 200);
    const refused = await post(gw, '/v1/chat/completions', chat('two'), auth);
    assert.equal(refused.status, 429);
    assert.equal(refused.headers['x-ratelimit-limit-requests'], '1');
    assert.equal(refused.headers['x-ratelimit-remaining-requests'], '0');
  });

  it('are not sent when no limits are configured', async () => {
    const gw = await gateway();
    const answers = [
      await post(gw, '/v1/embeddings', embed('free headers')),
      await post(gw, '/v1/embeddings', embed('free headers')),
      await post(gw, '/v1/chat/completions', chat('free chat')),
      await post(gw, '/v1/chat/completions', chat('free chat', { temperature: 1 })),
    ];
    const stream = await gw.app.inject({
      method: 'POST',
      url: '/v1/chat/completions',
      payload: chat('free stream', { stream: true }),
    });
    for (const headers of [...answers.map((a) => a.headers), stream.headers]) {
      assert.deepEqual(names(headers), []);
      assert.ok(headers['x-clawperf-cache'] !== undefined);
    }
  });
});

describe('backpressure', () => {
  it('answers 503 with Retry-After when the upstream queue is full', async () => {
    const gw = await gateway({ localChatLatencyMs: 1000, maxConcurrency: 1, maxQueueSize: 1 });
    const results = await Promise.all(
      Array.from({ length: 4 }, (_, i) =>
        post(gw, '/v1/chat/completions', chat(`busy ${i}`, { temperature: 1 })),
      ),
    );
    const statuses = results.map((r) => r.status).sort();
    assert.deepEqual(statuses, [200, 200, 503, 503]);
    const refused = results.find((r) => r.status === 503)!;
    assert.equal(refused.body.error.code, 'overloaded');
    assert.ok(Number(refused.headers['retry-after']) >= 1);
  });
});

describe('operations endpoints', () => {
  it('lists the local models, and answers /healthz and /readyz', async () => {
    const gw = await gateway();
    const models = JSON.parse((await gw.app.inject({ method: 'GET', url: '/v1/models' })).body);
    assert.deepEqual(
      models.data.map((m: Json) => m.id),
      ['local-embed', 'local-chat'],
    );
    assert.equal((await gw.app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200);
    const ready = await gw.app.inject({ method: 'GET', url: '/readyz' });
    assert.equal(ready.statusCode, 200);
    assert.deepEqual(JSON.parse(ready.body), {
      status: 'ready',
      upstream: 'local',
      anthropic: 'local',
      redis: 'off',
    });
  });

  it('exposes Prometheus metrics of every component and the gen_ai metrics', async () => {
    const gw = await gateway();
    await post(gw, '/v1/embeddings', embed('metrics'));
    await post(gw, '/v1/chat/completions', chat('metrics'));
    const res = await gw.app.inject({ method: 'GET', url: '/metrics' });
    assert.equal(res.statusCode, 200);
    for (const name of [
      'gen_ai_client_operation_duration_seconds_bucket',
      'gen_ai_client_token_usage_bucket',
      'clawperf_cache_l1_hits',
      'clawperf_batcher_batches_total',
      'clawperf_backpressure_processing',
      'clawperf_memory_',
      'clawperf_gateway_upstream_calls_saved',
      'clawperf_local_upstream_embed_calls_total',
      'clawperf_tracer_',
    ]) {
      assert.ok(res.body.includes(name), `metrics lack ${name}`);
    }
  });

  it('keeps admin and debug routes disabled (404) without a token', async () => {
    const gw = await gateway();
    assert.equal((await post(gw, '/admin/cache/invalidate', { key: 'x' })).status, 404);
    assert.equal((await gw.app.inject({ method: 'GET', url: '/debug/eventloop' })).statusCode, 404);
  });

  it('requires the admin token, then invalidates by key and by tag', async () => {
    const gw = await gateway({ adminToken: 'secret' });
    const admin = { authorization: 'Bearer secret' };
    assert.equal((await post(gw, '/admin/cache/invalidate', { key: 'x' })).status, 401);
    assert.equal(
      (await post(gw, '/admin/cache/invalidate', { key: 'x' }, { authorization: 'Bearer no' })).status,
      401,
    );
    assert.equal((await post(gw, '/admin/cache/invalidate', {}, admin)).status, 400);
    const first = await post(gw, '/v1/chat/completions', chat('invalidate me'));
    const key = String(first.headers['x-clawperf-cache-key']);
    assert.equal(
      (await post(gw, '/v1/chat/completions', chat('invalidate me'))).headers['x-clawperf-cache'],
      'hit',
    );
    assert.equal((await post(gw, '/admin/cache/invalidate', { key }, admin)).status, 200);
    assert.equal(
      (await post(gw, '/v1/chat/completions', chat('invalidate me'))).headers['x-clawperf-cache'],
      'miss',
    );
    await post(gw, '/v1/embeddings', embed('tagged'));
    assert.equal(
      (await post(gw, '/admin/cache/invalidate', { tag: 'model:local-embed' }, admin)).status,
      200,
    );
    assert.equal((await post(gw, '/v1/embeddings', embed('tagged'))).headers['x-clawperf-cache'], 'miss');
  });

  it('serves /debug/eventloop to the admin token only', async () => {
    const gw = await gateway({ adminToken: 'secret' });
    assert.equal((await gw.app.inject({ method: 'GET', url: '/debug/eventloop' })).statusCode, 401);
    const res = await gw.app.inject({
      method: 'GET',
      url: '/debug/eventloop?seconds=0.05',
      headers: { authorization: 'Bearer secret' },
    });
    assert.equal(res.statusCode, 200);
    assert.ok('p99' in JSON.parse(res.body));
  });
});
