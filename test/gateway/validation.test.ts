import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type OpenAI from 'openai';
import { APIError, BadRequestError, NotFoundError } from 'openai';
import { type GatewayConfig, loadConfig } from '../../src/gateway/config.ts';
import { MAX_EMBEDDING_REQUEST_TOKENS } from '../../src/gateway/openai.ts';
import type { Gateway } from '../../src/gateway/server.ts';
import { serveGateway } from '../helpers/gateway.ts';
import { waitFor } from '../helpers/servers.ts';
import { type FakeUpstream, startFakeUpstream } from './fake-upstream.ts';

const gateways: Gateway[] = [];
let fake: FakeUpstream;

before(async () => {
  fake = await startFakeUpstream();
});
after(async () => {
  await Promise.all(gateways.map((g) => g.close()));
  await fake.close();
});

/** A gateway listening on a free loopback port, and the official SDK pointed at it. */
const serve = (config: Partial<GatewayConfig> = {}) => serveGateway(gateways, config);

/** Asserts an answer is `status` with exactly OpenAI's error shape, and no code of Fastify's own. */
function assertOpenAIError(status: number, text: string, expected: number): Record<string, unknown> {
  assert.equal(status, expected, text);
  const body = JSON.parse(text) as { error: Record<string, unknown> };
  assert.deepEqual(Object.keys(body), ['error'], text);
  assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type'], text);
  assert.equal(typeof body.error.message, 'string');
  assert.equal(body.error.type, 'invalid_request_error');
  assert.doesNotMatch(String(body.error.code), /^FST_/, text);
  return body.error;
}

/** Writes `request` as raw bytes and resolves with the status and body of the answer. */
function rawHttp(base: string, request: string): Promise<{ status: number; body: string }> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => socket.end(request));
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      text += chunk;
    });
    socket.on('error', reject);
    socket.on('close', () => {
      const [head = '', body = ''] = text.split('\r\n\r\n');
      resolve({ status: Number(head.split(' ')[1]), body });
    });
  });
}

/** Runs `call`, which must fail with a 400 naming `param`. */
async function badRequest(call: () => Promise<unknown>, param: string): Promise<BadRequestError> {
  const error = await call().then(
    () => assert.fail(`accepted; expected a 400 naming ${param}`),
    (e: unknown) => e,
  );
  assert.ok(error instanceof BadRequestError, `expected a BadRequestError, got ${String(error)}`);
  assert.equal(error.param, param, error.message);
  assert.equal(error.type, 'invalid_request_error');
  return error;
}

describe('embeddings: inputs per request', () => {
  it('refuses 2,049 inputs with a 400 naming input, and serves 2,048', async () => {
    const { client } = await serve();
    const inputs = Array.from({ length: 2049 }, (_, i) => `input ${i}`);
    const error = await badRequest(
      () => client.embeddings.create({ model: 'local-embed', input: inputs, dimensions: 8 }),
      'input',
    );
    assert.match(error.message, /2049.*2048/);
    const ok = await client.embeddings.create({
      model: 'local-embed',
      input: inputs.slice(0, 2048),
      dimensions: 8,
    });
    assert.equal(ok.data.length, 2048);
  });

  it('takes the cap from maxEmbeddingInputs, --max-embedding-inputs or CLAWPERF_MAX_EMBEDDING_INPUTS', async () => {
    assert.equal(loadConfig([], {}).maxEmbeddingInputs, 2048);
    assert.equal(loadConfig(['--max-embedding-inputs', '16'], {}).maxEmbeddingInputs, 16);
    assert.equal(loadConfig([], { CLAWPERF_MAX_EMBEDDING_INPUTS: '32' }).maxEmbeddingInputs, 32);
    assert.throws(() => loadConfig(['--max-embedding-inputs', '0'], {}), /max-embedding-inputs/);
    const { client } = await serve({ maxEmbeddingInputs: 3 });
    await badRequest(
      () => client.embeddings.create({ model: 'local-embed', input: ['a', 'b', 'c', 'd'] }),
      'input',
    );
    const ok = await client.embeddings.create({ model: 'local-embed', input: ['a', 'b', 'c'] });
    assert.equal(ok.data.length, 3);
  });

  it(`refuses more than ${MAX_EMBEDDING_REQUEST_TOKENS} estimated input tokens with a 400 naming input`, async () => {
    const { client } = await serve();
    // The estimate is characters / 4: two inputs of exactly half the bound each, then one character more.
    const half = 'a'.repeat(MAX_EMBEDDING_REQUEST_TOKENS * 2);
    const error = await badRequest(
      () => client.embeddings.create({ model: 'local-embed', input: [half, `${half}abcd`], dimensions: 8 }),
      'input',
    );
    assert.match(error.message, new RegExp(String(MAX_EMBEDDING_REQUEST_TOKENS)));
    await badRequest(
      () =>
        client.embeddings.create({
          model: 'local-embed',
          input: [Array.from({ length: MAX_EMBEDDING_REQUEST_TOKENS + 1 }, (_, i) => i % 1000)],
        }),
      'input',
    );
    const ok = await client.embeddings.create({ model: 'local-embed', input: [half, half], dimensions: 8 });
    assert.equal(ok.usage.prompt_tokens, MAX_EMBEDDING_REQUEST_TOKENS);
  });

  it('serves the largest allowed request with maxQueueSize 8, and with one upstream slot and no queue', async () => {
    const inputs = Array.from({ length: 2048 }, (_, i) => `queued input ${i}`);
    for (const config of [{ maxQueueSize: 8 }, { maxConcurrency: 1, maxQueueSize: 0 }]) {
      const { client } = await serve(config);
      const ok = await client.embeddings.create({ model: 'local-embed', input: inputs, dimensions: 8 });
      assert.equal(ok.data.length, 2048, JSON.stringify(config));
    }
  });
});

describe("chat: parameters are checked against OpenAI's bounds", () => {
  let client: OpenAI;
  before(async () => {
    ({ client } = await serve({ upstreamUrl: fake.url }));
  });
  const chat = (extra: Record<string, unknown>) =>
    client.chat.completions.create({
      model: 'local-chat',
      messages: [{ role: 'user', content: 'bounds' }],
      ...extra,
    } as OpenAI.ChatCompletionCreateParamsNonStreaming);

  const refused: [param: string, value: unknown][] = [
    ['n', 0],
    ['n', 129],
    ['n', 1.5],
    ['n', '2'],
    ['temperature', -0.1],
    ['temperature', 2.01],
    ['temperature', 'hot'],
    ['top_p', -0.5],
    ['top_p', 1.01],
    ['top_p', '1'],
    ['max_tokens', 0],
    ['max_tokens', 2.5],
    ['max_tokens', '16'],
    ['max_completion_tokens', 0],
    ['max_completion_tokens', 1.5],
    ['max_completion_tokens', true],
    ['presence_penalty', -2.1],
    ['presence_penalty', 2.1],
    ['presence_penalty', '0'],
    ['frequency_penalty', -3],
    ['frequency_penalty', 2.5],
    ['frequency_penalty', []],
    ['logprobs', 'yes'],
    ['logprobs', 1],
    ['top_logprobs', -1],
    ['top_logprobs', 21],
    ['top_logprobs', 2.5],
    ['top_logprobs', '5'],
  ];
  for (const [param, value] of refused) {
    it(`${param}: ${JSON.stringify(value)} gets a 400 naming ${param}`, async () => {
      const error = await badRequest(() => chat({ [param]: value }), param);
      assert.ok(error.message.includes(JSON.stringify(value)), error.message);
    });
  }

  it('accepts the bounds themselves, and null for each', async () => {
    const accepted: Record<string, unknown>[] = [
      { n: 1 },
      { n: 128 },
      { temperature: 0 },
      { temperature: 2 },
      { top_p: 0 },
      { top_p: 1 },
      { max_tokens: 1 },
      { max_completion_tokens: 1 },
      { presence_penalty: -2, frequency_penalty: 2 },
      { presence_penalty: 2, frequency_penalty: -2 },
      { logprobs: true, top_logprobs: 0 },
      { logprobs: false, top_logprobs: 20 },
      {
        n: null,
        temperature: null,
        top_p: null,
        max_tokens: null,
        max_completion_tokens: null,
        presence_penalty: null,
        frequency_penalty: null,
        logprobs: null,
        top_logprobs: null,
      },
    ];
    for (const extra of accepted) {
      const answer = await chat(extra);
      assert.equal(answer.object, 'chat.completion', JSON.stringify(extra));
    }
  });

  it('passes fields it does not check to the upstream untouched', async () => {
    const extra = { top_k: 40, min_p: 0.05, repetition_penalty: 1.1, seed: -7, n: 2 };
    const answer = await client.chat.completions.create({
      model: 'fake-chat',
      messages: [{ role: 'user', content: 'extras' }],
      ...extra,
    } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    assert.equal(answer.object, 'chat.completion');
    for (const [name, value] of Object.entries(extra)) assert.deepEqual(fake.lastChat?.[name], value, name);
  });
});

describe("Fastify's and Node's own refusals come back in OpenAI's error shape", () => {
  let base: string;
  let client: OpenAI;
  before(async () => {
    ({ base, client } = await serve({ bodyLimitBytes: 1024 }));
  });
  const post = (body: string, contentType = 'application/json') =>
    fetch(`${base}/v1/chat/completions`, { method: 'POST', body, headers: { 'content-type': contentType } });

  it('431 for headers over the limit', async () => {
    const res = await fetch(`${base}/v1/models`, { headers: { 'x-big': 'a'.repeat(20_000) } });
    const error = assertOpenAIError(res.status, await res.text(), 431);
    assert.match(String(error.message), /header/);
  });

  it('400 for a request that is not valid HTTP', async () => {
    const res = await rawHttp(base, 'GET /v1/models HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n');
    assertOpenAIError(res.status, res.body, 400);
  });

  it('404 for an unknown route and for a known route with the wrong method', async () => {
    for (const path of ['/nowhere', '/embeddings']) {
      const error = await client.get(path).then(
        () => assert.fail('answered'),
        (e: unknown) => e,
      );
      assert.ok(error instanceof NotFoundError, String(error));
      assert.equal(error.code, 'not_found');
      assert.ok(error.message.includes(`/v1${path}`), error.message);
    }
  });

  it('400 for a URL that cannot be decoded', async () => {
    const res = await fetch(`${base}/v1/%c0`);
    assertOpenAIError(res.status, await res.text(), 400);
  });

  it('413 for a body over bodyLimitBytes', async () => {
    const error = await client.embeddings.create({ model: 'local-embed', input: 'x'.repeat(2048) }).then(
      () => assert.fail('answered'),
      (e: unknown) => e,
    );
    assert.ok(error instanceof APIError && error.status === 413, String(error));
    assert.equal(error.code, 'request_too_large');
  });

  it('415 for a content-type that cannot be parsed', async () => {
    const res = await post('{}', 'not a media type');
    const error = assertOpenAIError(res.status, await res.text(), 415);
    assert.match(String(error.message), /content-type/);
  });

  it('400 for malformed or empty JSON, naming the body', async () => {
    for (const body of ['{"model": "local-chat", "messages": [', '']) {
      const res = await post(body);
      const error = assertOpenAIError(res.status, await res.text(), 400);
      assert.equal(error.param, 'body');
      assert.equal(error.code, 'invalid_json');
    }
  });

  it('503 shutting_down for a request arriving on a connection still open while the gateway drains', async () => {
    const { gw, base } = await serve();
    const socket = connect(Number(new URL(base).port), '127.0.0.1');
    await once(socket, 'connect');
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      text += chunk;
    });
    const body = JSON.stringify({ model: 'local-embed', input: 'draining' });
    const head = `POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n`;
    // The first request's body is held back, so its connection is busy, not idle, when closing begins.
    socket.write(head + body.slice(0, 10));
    await waitFor(() => gw.stats().inFlight === 1, { what: 'the first request to arrive' });
    const closed = gw.close();
    await waitFor(() => !gw.app.server.listening, { what: 'the gateway to stop listening' });
    socket.write(body.slice(10) + head + body);
    await once(socket, 'close');
    await closed;
    const [first = '', second = ''] = text.split(/(?=HTTP\/1\.1 )/);
    assert.match(first, /^HTTP\/1\.1 200 /);
    const [status, json = ''] = second.split('\r\n\r\n');
    assert.match(String(status), /^HTTP\/1\.1 503 /);
    assert.match(String(status), /retry-after: 1/i);
    const error = JSON.parse(json).error;
    assert.equal(error.code, 'shutting_down');
    assert.equal(error.type, 'server_error');
  });
});
