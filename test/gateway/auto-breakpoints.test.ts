/**
 * Automatic Anthropic cache breakpoints: where they go (unit), and what they save, end to end on the
 * simulated prompt cache of `local-chat` with Anthropic's SDK.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import { MAX_BREAKPOINTS, withAutoBreakpoints } from '../../src/gateway/auto-breakpoints.ts';
import { createGateway, type Gateway } from '../../src/gateway/server.ts';

type Json = Record<string, unknown>;
const marker = { type: 'ephemeral' };

/** Where the body's breakpoints are: `[message, block]`, `-1` for the system prompt. */
function breakpoints(body: Json): [number, number][] {
  const out: [number, number][] = [];
  (body.system as Json[] | undefined)?.forEach((b, j) => {
    if (b.cache_control !== undefined) out.push([-1, j]);
  });
  (body.messages as { content: unknown }[]).forEach((m, i) => {
    if (Array.isArray(m.content)) {
      (m.content as Json[]).forEach((b, j) => {
        if (b.cache_control !== undefined) out.push([i, j]);
      });
    }
  });
  return out;
}

const text = (t: string) => ({ type: 'text', text: t });

describe('withAutoBreakpoints', () => {
  it('marks the end of a conversation whose client marks only its system prompt', () => {
    const body = {
      system: [{ ...text('sys'), cache_control: marker }],
      messages: [
        { role: 'user', content: 'q1' },
        { role: 'assistant', content: 'a1' },
        { role: 'user', content: 'q2' },
      ],
    };
    const out = withAutoBreakpoints(body);
    assert.deepEqual(breakpoints(out), [
      [-1, 0],
      [2, 0],
    ]);
    assert.deepEqual((out.messages as Json[])[2], {
      role: 'user',
      content: [{ ...text('q2'), cache_control: marker }],
    });
    // The client's body is not changed.
    assert.equal(body.messages[2]!.content, 'q2');
  });

  it('leaves a body alone whose client already marks its last message, when its last turn is in reach', () => {
    const body = {
      messages: [{ role: 'user', content: [text('a'), { ...text('b'), cache_control: marker }] }],
    };
    assert.equal(withAutoBreakpoints(body), body);
  });

  it("adds breakpoints every 20 blocks back, never past four in all, never removing the client's", () => {
    const blocks = Array.from({ length: 100 }, (_, i) => text(`b${i}`));
    const body = {
      system: [{ ...text('sys'), cache_control: marker }],
      messages: [{ role: 'user', content: blocks }],
    };
    const out = breakpoints(withAutoBreakpoints(body));
    assert.equal(out.length, MAX_BREAKPOINTS);
    assert.deepEqual(out, [
      [-1, 0],
      [0, 59],
      [0, 79],
      [0, 99],
    ]);
  });

  it('adds breakpoints behind a client marker on the last message when a turn added more than 20 blocks', () => {
    const blocks: Json[] = Array.from({ length: 50 }, (_, i) => text(`b${i}`));
    blocks[49] = { ...blocks[49], cache_control: marker };
    const out = breakpoints(withAutoBreakpoints({ messages: [{ role: 'user', content: blocks }] }));
    assert.deepEqual(out, [
      [0, 9],
      [0, 29],
      [0, 49],
    ]);
  });

  it('never marks a thinking block', () => {
    const body = {
      messages: [
        { role: 'user', content: 'q' },
        { role: 'assistant', content: [text('a'), { type: 'thinking', thinking: 't', signature: 's' }] },
      ],
    };
    assert.deepEqual(breakpoints(withAutoBreakpoints(body)), [[1, 0]]);
  });
});

describe('auto breakpoints on the simulated cache', () => {
  let on: Gateway;
  let off: Gateway;
  let clients: { on: Anthropic; off: Anthropic };
  before(async () => {
    on = await createGateway({ cacheDir: false, localChatLatencyMs: 0, promptCacheAutoBreakpoints: true });
    off = await createGateway({ cacheDir: false, localChatLatencyMs: 0 });
    const client = async (g: Gateway) =>
      new Anthropic({
        apiKey: 'k',
        baseURL: await g.app.listen({ port: 0, host: '127.0.0.1' }),
        maxRetries: 0,
      });
    clients = { on: await client(on), off: await client(off) };
  });
  after(async () => {
    await on.close();
    await off.close();
  });

  /** Cache reads of each of `turns` turns of a conversation whose client marks only its system prompt. */
  async function reads(client: Anthropic, turns: number): Promise<number[]> {
    const messages: Anthropic.MessageParam[] = [];
    const out: number[] = [];
    for (let t = 0; t < turns; t++) {
      messages.push({ role: 'user', content: `question ${t} ${'words '.repeat(40)}` });
      const m = await client.messages.create({
        model: 'local-chat',
        max_tokens: 50,
        system: [
          { type: 'text', text: `system ${'rules '.repeat(40)}`, cache_control: { type: 'ephemeral' } },
        ],
        messages,
      });
      out.push(m.usage.cache_read_input_tokens ?? 0);
      messages.push({ role: 'assistant', content: m.content });
    }
    return out;
  }

  it('off: reads stay at the system prompt; on: each turn reads the history the last one wrote', async () => {
    const without = await reads(clients.off, 4);
    const withAuto = await reads(clients.on, 4);
    assert.ok(
      without.slice(1).every((r) => r === without[1]),
      `flat: ${without}`,
    );
    for (let t = 2; t < 4; t++) assert.ok(withAuto[t]! > withAuto[t - 1]!, `growing: ${withAuto}`);
    assert.ok(withAuto[3]! > without[3]!);
  });
});
