import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import OpenAI, { BadRequestError } from 'openai';
import { type GatewayConfig, loadConfig } from '../../src/gateway/config.ts';
import { MAX_EMBEDDING_REQUEST_TOKENS } from '../../src/gateway/openai.ts';
import { createGateway, type Gateway } from '../../src/gateway/server.ts';

const gateways: Gateway[] = [];

after(async () => {
  await Promise.all(gateways.map((g) => g.close()));
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
