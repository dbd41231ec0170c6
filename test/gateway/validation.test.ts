import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import OpenAI, { BadRequestError } from 'openai';
import { type GatewayConfig, loadConfig } from '../../src/gateway/config.ts';
import { MAX_EMBEDDING_REQUEST_TOKENS } from '../../src/gateway/openai.ts';
import { createGateway, type Gateway } from '../../src/gateway/server.ts';
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
async function serve(config: Partial<GatewayConfig> = {}) {
  const gw = await createGateway({ cacheDir: false, localChatLatencyMs: 0, ...config });
  gateways.push(gw);
  const base = await gw.app.listen({ port: 0, host: '127.0.0.1' });
  const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'unused-on-loopback', maxRetries: 0 });
  return { gw, base, client };
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
