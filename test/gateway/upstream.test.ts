import assert from 'node:assert/strict';
import type { Readable } from 'node:stream';
import { after, before, beforeEach, describe, it } from 'node:test';
import { CircuitOpenError, TimeoutError, UpstreamError } from '../../src/errors.ts';
import { type OutboundPacer, UpstreamClient } from '../../src/gateway/upstream.ts';
import { ManualClock } from '../../src/internal/clock.ts';
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
    assert.equal(c.circuitState, 'open');
  });

  it('rejects with the signal reason when aborted', async () => {
    fake.fail({ kind: 'slow', ms: 500 });
    const controller = new AbortController();
    const pending = client().postJson('/chat/completions', chatBody, { signal: controller.signal });
    setTimeout(() => controller.abort(new Error('client left')), 20);
    await assert.rejects(pending, /client left/);
  });
});

describe('every outcome of a half-open probe frees the probe slot', () => {
  /** A client whose circuit a single 500 opens, with its cooldown on a manual clock. */
  async function halfOpen(options: Partial<ConstructorParameters<typeof UpstreamClient>[0]> = {}) {
    const clock = new ManualClock();
    const c = client({ retries: 0, breaker: { failureThreshold: 1, cooldownMs: 1_000, clock }, ...options });
    fake.fail({ kind: 'status', status: 500 }, 1);
    await assert.rejects(c.postJson('/chat/completions', chatBody), UpstreamError);
    assert.equal(c.circuitState, 'open');
    await assert.rejects(c.postJson('/chat/completions', chatBody), CircuitOpenError);
    await clock.advance(1_000);
    assert.equal(c.circuitState, 'half-open');
    return { c, clock };
  }

  /** The upstream has recovered: the next call must reach it and close the circuit. */
  async function recovers(c: UpstreamClient): Promise<void> {
    fake.clear();
    const before = fake.total('/v1/chat/completions');
    const answer = await c.postJson('/chat/completions', chatBody);
    assert.equal(answer.status, 200);
    assert.equal(fake.total('/v1/chat/completions'), before + 1, 'the call reached the upstream');
    assert.equal(c.circuitState, 'closed');
  }

  it('a successful probe closes the circuit', async () => {
    const { c } = await halfOpen();
    await recovers(c);
  });

  it('a failed probe reopens it for another cooldown, after which the next probe goes through', async () => {
    const { c, clock } = await halfOpen();
    fake.fail({ kind: 'status', status: 503 }, 1);
    await assert.rejects(c.postJson('/chat/completions', chatBody), UpstreamError);
    assert.equal(c.circuitState, 'open');
    await clock.advance(1_000);
    await recovers(c);
  });

  it('a probe answered 429 leaves the circuit half-open and the next call probes', async () => {
    const { c } = await halfOpen();
    fake.fail({ kind: 'status', status: 429, retryAfter: '0' }, 1);
    await assert.rejects(c.postJson('/chat/completions', chatBody), UpstreamError);
    assert.equal(c.circuitState, 'half-open');
    await recovers(c);
  });

  it('a probe that times out reopens the circuit; it probes again after the cooldown', async () => {
    const { c, clock } = await halfOpen({ timeoutMs: 50 });
    fake.fail({ kind: 'slow', ms: 1_000 }, 1);
    await assert.rejects(c.postJson('/chat/completions', chatBody), TimeoutError);
    assert.equal(c.circuitState, 'open');
    await clock.advance(1_000);
    await recovers(c);
  });

  it('a probe its caller aborts in flight frees the slot for the next call', async () => {
    const { c } = await halfOpen();
    fake.fail({ kind: 'slow', ms: 5_000 }, 1);
    const controller = new AbortController();
    const arrived = fake.nextCall();
    const probe = c.postJson('/chat/completions', chatBody, { signal: controller.signal });
    await arrived;
    controller.abort(new Error('client left'));
    await assert.rejects(probe, /client left/);
    assert.equal(c.circuitState, 'half-open');
    await recovers(c);
  });

  it('a probe that throws anywhere (here in the outbound pacer) frees the slot', async () => {
    let broken = false;
    const outbound: OutboundPacer = {
      async acquire() {
        if (broken) throw new Error('pacer bug');
        return { done() {} };
      },
    };
    const { c } = await halfOpen({ outbound });
    broken = true;
    await assert.rejects(c.postJson('/chat/completions', chatBody), /pacer bug/);
    broken = false;
    assert.equal(c.circuitState, 'half-open');
    await recovers(c);
  });

  it('a streamed probe closes the circuit once the answer starts', async () => {
    const { c } = await halfOpen();
    const answer = await c.postStream('/chat/completions', { ...chatBody, stream: true });
    assert.equal(answer.status, 200);
    await (answer.body as Readable).resume();
    assert.equal(c.circuitState, 'closed');
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
