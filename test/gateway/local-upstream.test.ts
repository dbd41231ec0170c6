import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import {
  DEFAULT_LOCAL_EMBED_DIMENSIONS,
  LocalUpstream,
  localChatText,
  localEmbedding,
} from '../../src/gateway/local-upstream.ts';
import { type ChatRequest, estimateTokens, parseChatRequest } from '../../src/gateway/openai.ts';
import { createGateway, type Gateway } from '../../src/gateway/server.ts';

const cosine = (a: number[], b: number[]) => a.reduce((s, x, i) => s + x * b[i]!, 0);
const norm = (a: number[]) => Math.sqrt(cosine(a, a));

function chat(body: Record<string, unknown>): ChatRequest {
  const parsed = parseChatRequest({ model: 'local-chat', ...body });
  assert.ok(!('status' in parsed));
  return parsed as ChatRequest;
}

describe('local-embed', () => {
  it('is deterministic, L2-normalised and honours dimensions', () => {
    const a = localEmbedding('The quick brown fox');
    assert.equal(a.length, DEFAULT_LOCAL_EMBED_DIMENSIONS);
    assert.deepEqual(localEmbedding('The quick brown fox'), a);
    assert.ok(Math.abs(norm(a) - 1) < 1e-9);
    const b = localEmbedding('The quick brown fox', 64);
    assert.equal(b.length, 64);
    assert.ok(Math.abs(norm(b) - 1) < 1e-9);
  });

  it('gives similar texts more similar vectors than unrelated ones', () => {
    const base = localEmbedding('How do I reset my password?');
    const near = localEmbedding('How can I reset my password');
    const far = localEmbedding('Quarterly revenue grew in the northern region');
    assert.ok(cosine(base, near) > 0.7, `similar: ${cosine(base, near)}`);
    assert.ok(cosine(base, near) > cosine(base, far) + 0.3, `far: ${cosine(base, far)}`);
  });

  it('embeds token arrays and gives zero-free finite numbers', () => {
    const v = localEmbedding([1, 2, 3], 16);
    assert.equal(v.length, 16);
    assert.ok(v.every(Number.isFinite));
  });
});

describe('local-chat', () => {
  it('answers after the configured latency with deterministic text and usage counts', async () => {
    const local = new LocalUpstream({ chatLatencyMs: 0 });
    const req = chat({ messages: [{ role: 'user', content: 'hello there' }] });
    const a = await local.chat(req);
    const b = await local.chat(req);
    const content = (a.choices as { message: { content: string } }[])[0]!.message.content;
    assert.equal(content, (b.choices as { message: { content: string } }[])[0]!.message.content);
    assert.match(content, /local-chat/);
    assert.match(content, /hello there/);
    const usage = a.usage as { prompt_tokens: number; completion_tokens: number; total_tokens: number };
    assert.ok(usage.prompt_tokens > 0 && usage.completion_tokens > 0);
    assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
    assert.notEqual(localChatText('a'), localChatText('b'));
  });

  it('honours max_tokens', () => {
    assert.ok(localChatText('some prompt', 2).length <= 8);
  });

  it('is aborted by its signal', async () => {
    const local = new LocalUpstream({ chatLatencyMs: 60_000 });
    const controller = new AbortController();
    const pending = local.chat(chat({ messages: [{ role: 'user', content: 'x' }] }), controller.signal);
    controller.abort(new Error('gone'));
    await assert.rejects(pending, /gone/);
  });

  it('streams the same text as server-sent chat.completion.chunk events ending in [DONE]', async () => {
    const local = new LocalUpstream({ chatLatencyMs: 0 });
    const req = chat({
      messages: [{ role: 'user', content: 'stream me' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    for await (const chunk of local.chatStream(req)) text += chunk;
    const events = text.split('\n\n').filter(Boolean);
    assert.equal(events.at(-1), 'data: [DONE]');
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e.slice(6)));
    const content = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
    const whole = await local.chat({ ...req, stream: false });
    assert.equal(content, (whole.choices as { message: { content: string } }[])[0]!.message.content);
    assert.ok(chunks.every((c) => c.object === 'chat.completion.chunk'));
    assert.ok(chunks.at(-1).usage.total_tokens > 0);
    assert.equal(chunks.at(-2).choices[0].finish_reason, 'stop');
  });
});

describe('local-chat through the gateway honours n and max_tokens', () => {
  let gw: Gateway;
  let client: OpenAI;
  before(async () => {
    gw = await createGateway({ cacheDir: false, localChatLatencyMs: 0 });
    const base = await gw.app.listen({ port: 0, host: '127.0.0.1' });
    client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'unused-on-loopback', maxRetries: 0 });
  });
  after(() => gw.close());

  const messages = [{ role: 'user' as const, content: 'how many choices?' }];
  const completionTokens = (texts: (string | null)[]) =>
    texts.reduce((n, t) => n + estimateTokens(t ?? ''), 0);

  it('answers n choices, indexed 0..n-1, each in full, with usage counting every one', async () => {
    const one = await client.chat.completions.create({ model: 'local-chat', messages });
    const three = await client.chat.completions.create({ model: 'local-chat', messages, n: 3 });
    assert.deepEqual(
      three.choices.map((c) => [c.index, c.finish_reason]),
      [
        [0, 'stop'],
        [1, 'stop'],
        [2, 'stop'],
      ],
    );
    const texts = three.choices.map((c) => c.message.content);
    assert.equal(texts[0], one.choices[0]!.message.content);
    assert.equal(new Set(texts).size, 3, 'each choice words its answer differently');
    assert.equal(three.usage!.prompt_tokens, one.usage!.prompt_tokens);
    assert.equal(three.usage!.completion_tokens, completionTokens(texts));
    assert.equal(three.usage!.total_tokens, three.usage!.prompt_tokens + three.usage!.completion_tokens);
  });

  it('cuts each choice to max_tokens (or max_completion_tokens) tokens with finish_reason "length"', async () => {
    const full = await client.chat.completions.create({ model: 'local-chat', messages, n: 2 });
    for (const limit of [{ max_tokens: 5 }, { max_completion_tokens: 5 }]) {
      const cut = await client.chat.completions.create({ model: 'local-chat', messages, n: 2, ...limit });
      for (const c of cut.choices) {
        assert.equal(c.finish_reason, 'length', JSON.stringify(limit));
        assert.equal(estimateTokens(c.message.content!), 5);
        assert.ok(full.choices[c.index]!.message.content!.startsWith(c.message.content!));
      }
      assert.equal(cut.usage!.completion_tokens, 10);
      assert.equal(cut.usage!.total_tokens, cut.usage!.prompt_tokens + 10);
    }
    const roomy = await client.chat.completions.create({ model: 'local-chat', messages, max_tokens: 1_000 });
    assert.equal(roomy.choices[0]!.finish_reason, 'stop');
    assert.equal(roomy.choices[0]!.message.content, full.choices[0]!.message.content);
  });

  it('streams the same choices: every chunk names its index, and each choice ends with its finish_reason', async () => {
    for (const max_tokens of [5, undefined]) {
      const request = { model: 'local-chat', messages, n: 3, max_tokens };
      const whole = await client.chat.completions.create(request);
      const stream = await client.chat.completions.create({
        ...request,
        stream: true,
        stream_options: { include_usage: true },
      });
      const texts = ['', '', ''];
      const finishes: (string | null)[][] = [[], [], []];
      let usage: OpenAI.CompletionUsage | undefined;
      for await (const chunk of stream) {
        if (chunk.usage) usage = chunk.usage;
        for (const c of chunk.choices) {
          assert.ok(c.index >= 0 && c.index < 3, `index ${c.index}`);
          assert.deepEqual(finishes[c.index]!.filter(Boolean), [], 'nothing after a choice finished');
          texts[c.index] += c.delta.content ?? '';
          finishes[c.index]!.push(c.finish_reason);
        }
      }
      const expected = max_tokens === undefined ? 'stop' : 'length';
      assert.deepEqual(
        finishes.map((f) => f.at(-1)),
        [expected, expected, expected],
      );
      assert.deepEqual(
        texts,
        whole.choices.map((c) => c.message.content),
      );
      assert.deepEqual(usage, whole.usage);
    }
  });
});
