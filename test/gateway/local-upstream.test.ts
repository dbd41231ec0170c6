import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  DEFAULT_LOCAL_EMBED_DIMENSIONS,
  LocalUpstream,
  localChatText,
  localEmbedding,
} from '../../src/gateway/local-upstream.ts';
import { type ChatRequest, parseChatRequest } from '../../src/gateway/openai.ts';

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
