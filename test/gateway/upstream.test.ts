import assert from 'node:assert/strict';
import type { Readable } from 'node:stream';
import { after, before, beforeEach, describe, it } from 'node:test';
import { CircuitOpenError, TimeoutError, UpstreamError } from '../../src/errors.ts';
import { UpstreamClient } from '../../src/gateway/upstream.ts';
import { type FakeUpstream, startFakeUpstream } from './fake-upstream.ts';

let fake: FakeUpstream;
const clients: UpstreamClient[] = [];

function client(options: Partial<ConstructorParameters<typeof UpstreamClient>[0]> = {}): UpstreamClient {
  const c = new UpstreamClient({
    baseUrl: fake.url,
    timeoutMs: 2_000,
    retries: 2,
    connections: 4,
    retryBaseMs: 1,
    ...options,
  });
  clients.push(c);
  return c;
}

const chatBody = { model: 'fake-chat', messages: [{ role: 'user', content: 'hi' }] };

before(async () => {
  fake = await startFakeUpstream();
});
beforeEach(() => fake.clear());
after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await fake.close();
});

describe('answers', () => {
  it('resolves with the parsed JSON of a success', async () => {
    const answer = await client().postJson('/chat/completions', chatBody);
    assert.equal(answer.status, 200);
    assert.equal((answer.body as { object: string }).object, 'chat.completion');
  });

  it('resolves with a client error so it can be relayed, without retrying it', async () => {
    const before = fake.total('/v1/embeddings');
    const answer = await client().postJson('/embeddings', { model: 'nope', input: 'x' });
    assert.equal(answer.status, 404);
    assert.equal((answer.body as { error: { code: string } }).error.code, 'model_not_found');
    assert.equal(fake.total('/v1/embeddings') - before, 1);
  });

  it('passes a stream through chunk by chunk', async () => {
    const answer = await client().postStream('/chat/completions', { ...chatBody, stream: true });
    assert.equal(answer.status, 200);
    let chunks = 0;
    let text = '';
    for await (const chunk of answer.body as Readable) {
      chunks++;
      text += chunk;
    }
    assert.ok(chunks > 1);
    assert.match(text, /data: \[DONE\]/);
  });
});

describe('retries', () => {
  it('retries a 500 and succeeds when the upstream recovers', async () => {
    fake.fail({ kind: 'status', status: 500 }, 2);
    const before = fake.total('/v1/chat/completions');
    const answer = await client().postJson('/chat/completions', chatBody);
    assert.equal(answer.status, 200);
    assert.equal(fake.total('/v1/chat/completions') - before, 3);
  });

  it('honours Retry-After on 429 and retries', async () => {
    fake.fail({ kind: 'status', status: 429, retryAfter: '0' }, 1);
    const c = client();
    const answer = await c.postJson('/chat/completions', chatBody);
    assert.equal(answer.status, 200);
    assert.equal(c.stats().retries, 1);
  });

  it('gives up at once when Retry-After is longer than it may wait, reporting it', async () => {
    fake.fail({ kind: 'status', status: 429, retryAfter: '120' });
    const before = fake.total('/v1/chat/completions');
    await assert.rejects(client().postJson('/chat/completions', chatBody), (error: unknown) => {
      assert.ok(error instanceof UpstreamError);
      assert.equal(error.status, 429);
      assert.equal(error.retryAfterMs, 120_000);
      return true;
    });
    assert.equal(fake.total('/v1/chat/completions') - before, 1);
  });
});

describe('failures', () => {
  it('rejects with UpstreamError and the status after the retries are spent', async () => {
    fake.fail({ kind: 'status', status: 503 });
    await assert.rejects(client().postJson('/chat/completions', chatBody), (e: unknown) => {
      return e instanceof UpstreamError && e.status === 503;
    });
  });

  it('rejects with UpstreamError on a reset connection', async () => {
    fake.fail({ kind: 'reset' });
    await assert.rejects(client().postJson('/chat/completions', chatBody), (e: unknown) => {
      return e instanceof UpstreamError && e.status === undefined;
    });
  });

  it('rejects with UpstreamError on invalid JSON', async () => {
    fake.fail({ kind: 'invalid-json' });
    await assert.rejects(client().postJson('/chat/completions', chatBody), /invalid JSON/);
  });

  it('rejects with TimeoutError when the upstream is too slow', async () => {
    fake.fail({ kind: 'slow', ms: 1_000 });
    await assert.rejects(client({ timeoutMs: 50 }).postJson('/chat/completions', chatBody), TimeoutError);
  });

  it('opens its circuit after repeated failures and then refuses without calling', async () => {
    fake.fail({ kind: 'status', status: 500 });
    const c = client({ retries: 0, breaker: { failureThreshold: 3, cooldownMs: 60_000 } });
    for (let i = 0; i < 3; i++)
      await assert.rejects(c.postJson('/chat/completions', chatBody), UpstreamError);
    const before = fake.total('/v1/chat/completions');
    await assert.rejects(c.postJson('/chat/completions', chatBody), CircuitOpenError);
    assert.equal(fake.total('/v1/chat/completions'), before);
    assert.equal(c.available, false);
  });

  it('rejects with the signal reason when aborted', async () => {
    fake.fail({ kind: 'slow', ms: 500 });
    const controller = new AbortController();
    const pending = client().postJson('/chat/completions', chatBody, { signal: controller.signal });
    setTimeout(() => controller.abort(new Error('client left')), 20);
    await assert.rejects(pending, /client left/);
  });
});

describe('outbound pacing', () => {
  it('feeds every answer and its rate-limit headers to the outbound limiter', async () => {
    const seen: (number | undefined)[] = [];
    const c = client({
      outbound: {
        acquire: async () => ({
          done: (r) => {
            seen.push(r?.status);
            assert.equal(r?.headers?.['x-ratelimit-limit-requests'], '10000');
          },
        }),
      },
    });
    await c.postJson('/chat/completions', chatBody);
    assert.deepEqual(seen, [200]);
  });
});
