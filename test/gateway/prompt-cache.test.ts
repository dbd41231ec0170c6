/**
 * The provider prompt cache as the gateway accounts for it: figures read from each answer's usage into
 * per-tenant counters and `x-clawperf-prompt-cache`, the simulated cache of `local-chat`, and break and
 * stall detection per session. Driven with Anthropic's and OpenAI's SDKs, against `local-chat` and FAKE
 * upstreams (no real provider can be run here) that report cache usage.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { pino } from 'pino';
import { request } from 'undici';
import { createGateway, type Gateway } from '../../src/gateway/server.ts';
import { waitFor } from '../helpers/servers.ts';
import { type FakeAnthropic, startFakeAnthropic } from './fake-anthropic.ts';
import { type FakeResponses, startFakeResponses } from './fake-responses.ts';

// biome-ignore lint/suspicious/noExplicitAny: log lines are read freely
type Json = Record<string, any>;

/** A gateway whose structured events are collected in `events`. */
async function gatewayWithLog(config: Parameters<typeof createGateway>[0]) {
  const events: Json[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n')) if (line !== '') events.push(JSON.parse(line));
      done();
    },
  });
  const gw = await createGateway(
    { cacheDir: false, localChatLatencyMs: 0, ...config },
    { logger: pino(sink) },
  );
  const base = await gw.app.listen({ port: 0, host: '127.0.0.1' });
  return { gw, base, events };
}

/** The value of one series of `/metrics`, 0 when absent. */
async function metric(base: string, name: string, labels: Record<string, string>): Promise<number> {
  const text = await (await request(`${base}/metrics`)).body.text();
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`)))
      return Number(line.split(' ').at(-1));
  }
  return 0;
}

describe('prompt-cache figures from the upstream', () => {
  let anthropic: FakeAnthropic;
  let responses: FakeResponses;
  let gw: Gateway;
  let base: string;
  before(async () => {
    anthropic = await startFakeAnthropic();
    responses = await startFakeResponses();
    ({ gw, base } = await gatewayWithLog({
      anthropicUpstreamUrl: anthropic.url,
      upstreamUrl: responses.url,
      apiKeys: { 'key-a': 'team-a' },
    }));
  });
  after(async () => {
    await gw.close();
    await anthropic.close();
    await responses.close();
  });

  it('reads Anthropic cache reads and writes into the header and the per-tenant counters', async () => {
    anthropic.usage = {
      input_tokens: 10,
      cache_creation_input_tokens: 200,
      cache_read_input_tokens: 3000,
      output_tokens: 6,
    };
    const client = new Anthropic({ apiKey: 'key-a', baseURL: base, maxRetries: 0 });
    const { response } = await client.messages
      .create({ model: 'claude-fake-1', max_tokens: 10, messages: [{ role: 'user', content: 'a' }] })
      .withResponse();
    assert.equal(response.headers.get('x-clawperf-prompt-cache'), 'read=3000 write=200');
    const labels = { tenant: 'team-a', model: 'claude-fake-1' };
    const name = 'clawperf_gateway_prompt_cache_tokens_total';
    assert.equal(await metric(base, name, { ...labels, kind: 'read' }), 3000);
    assert.equal(await metric(base, name, { ...labels, kind: 'write' }), 200);
    assert.equal(await metric(base, name, { ...labels, kind: 'uncached' }), 10);
    // A stream's headers leave before its usage: the figures reach the counters only.
    const stream = await client.messages
      .stream({ model: 'claude-fake-1', max_tokens: 10, messages: [{ role: 'user', content: 'b' }] })
      .withResponse();
    assert.equal(stream.response.headers.get('x-clawperf-prompt-cache'), null);
    await stream.data.finalMessage();
    await waitFor(async () => (await metric(base, name, { ...labels, kind: 'read' })) === 6000);
  });

  it('reads OpenAI Responses cached_tokens as reads, the rest of the input as uncached', async () => {
    responses.usage = { input_tokens: 4000, cached_tokens: 3072, output_tokens: 9 };
    const client = new OpenAI({ apiKey: 'key-a', baseURL: `${base}/v1`, maxRetries: 0 });
    const { response } = await client.responses.create({ model: 'gpt-fake', input: 'x' }).withResponse();
    assert.equal(response.headers.get('x-clawperf-prompt-cache'), 'read=3072 write=0');
    const labels = { tenant: 'team-a', model: 'gpt-fake' };
    const name = 'clawperf_gateway_prompt_cache_tokens_total';
    assert.equal(await metric(base, name, { ...labels, kind: 'read' }), 3072);
    assert.equal(await metric(base, name, { ...labels, kind: 'uncached' }), 928);
  });
});

/** An Anthropic conversation of `turns` user/assistant exchanges after a system prompt. */
function conversation(
  system: string,
  turns: number,
  options: { breakpoint?: boolean; perTurn?: number } = {},
) {
  const messages: Anthropic.MessageParam[] = [];
  for (let t = 0; t < turns; t++) {
    // Each exchange adds `perTurn` content blocks on each side.
    const blocks = (who: string) =>
      Array.from({ length: options.perTurn ?? 1 }, (_, i) => ({
        type: 'text' as const,
        text: `${who} ${t}.${i} ${'words '.repeat(20)}`,
      }));
    messages.push({ role: 'user', content: blocks('question') });
    if (t < turns - 1) messages.push({ role: 'assistant', content: blocks('answer') });
  }
  if (options.breakpoint === true) {
    const last = messages.at(-1)!.content as Anthropic.TextBlockParam[];
    last[last.length - 1] = { ...last.at(-1)!, cache_control: { type: 'ephemeral' } };
  }
  return {
    model: 'local-chat',
    max_tokens: 20,
    temperature: 1,
    system: [{ type: 'text' as const, text: system, cache_control: { type: 'ephemeral' as const } }],
    messages,
  };
}

describe('the simulated prompt cache of local-chat, and sessions', () => {
  let gw: Gateway;
  let base: string;
  let events: Json[];
  let client: Anthropic;
  before(async () => {
    ({ gw, base, events } = await gatewayWithLog({}));
    client = new Anthropic({ apiKey: 'k', baseURL: base, maxRetries: 0 });
  });
  after(() => gw.close());

  const turn = (session: string, body: ReturnType<typeof conversation>) =>
    client.messages.create(body, { headers: { 'x-clawperf-session': session } }).withResponse();

  it('reads the history a breakpoint wrote last turn, and writes the new part', async () => {
    const first = await turn('reads', conversation('You are a simulator.', 1, { breakpoint: true }));
    assert.equal(first.data.usage.cache_read_input_tokens, 0);
    assert.ok((first.data.usage.cache_creation_input_tokens ?? 0) > 0);
    const second = await turn('reads', conversation('You are a simulator.', 2, { breakpoint: true }));
    const written =
      (first.data.usage.cache_creation_input_tokens ?? 0) + (first.data.usage.cache_read_input_tokens ?? 0);
    assert.equal(second.data.usage.cache_read_input_tokens, written);
    assert.match(second.response.headers.get('x-clawperf-prompt-cache') ?? '', /^read=\d+ write=\d+$/);
  });

  it('simulates OpenAI automatic prefix caching on chat completions too', async () => {
    const openai = new OpenAI({ apiKey: 'k', baseURL: `${base}/v1`, maxRetries: 0 });
    const system = { role: 'system' as const, content: `You are terse. ${'rule '.repeat(50)}` };
    const first = await openai.chat.completions
      .create({ model: 'local-chat', messages: [system, { role: 'user', content: 'one' }] })
      .withResponse();
    assert.equal(first.data.usage?.prompt_tokens_details?.cached_tokens, 0);
    assert.equal(first.response.headers.get('x-clawperf-prompt-cache'), 'read=0 write=0');
    const second = await openai.chat.completions
      .create({ model: 'local-chat', messages: [system, { role: 'user', content: 'two' }] })
      .withResponse();
    const read = second.data.usage?.prompt_tokens_details?.cached_tokens ?? 0;
    assert.ok(read > 0);
    assert.equal(second.response.headers.get('x-clawperf-prompt-cache'), `read=${read} write=0`);
  });

  it('never reports a new message as read from the simulated cache, tools or not', async () => {
    const openai = new OpenAI({ apiKey: 'k', baseURL: `${base}/v1`, maxRetries: 0 });
    const tools = [
      { type: 'function' as const, function: { name: 'f', description: 'd'.repeat(1300), parameters: {} } },
    ];
    const ask = (content: string) =>
      openai.chat.completions.create({
        model: 'local-chat',
        tools,
        messages: [
          { role: 'system', content: 'You are terse.' },
          { role: 'user', content },
        ],
      });
    await ask('first question');
    const second = await ask('a second question that was never sent before, about queues and retries');
    const usage = second.usage!;
    assert.ok((usage.prompt_tokens_details?.cached_tokens ?? 0) < usage.prompt_tokens, JSON.stringify(usage));
    const responses = async (input: string) =>
      (
        await openai.responses.create({
          model: 'local-chat',
          tools: [
            { type: 'function', name: 'f', description: 'd'.repeat(1300), parameters: {}, strict: false },
          ],
          input,
        })
      ).usage!;
    await responses('first question');
    const r = await responses('a second question that was never sent before, about queues and retries');
    // The new input, 70 characters, is at least 17 tokens no cache can have read.
    assert.ok(r.input_tokens - r.input_tokens_details.cached_tokens >= 17, JSON.stringify(r));
  });

  it('reports one break, labelled system, when the system prompt changes; none when a session only appends', async () => {
    await turn('appends', conversation('Stable system prompt.', 1));
    await turn('appends', conversation('Stable system prompt.', 2));
    await turn('appends', conversation('Stable system prompt.', 3));
    await turn('changes', conversation('System prompt at 10:00.', 1));
    await turn('changes', conversation('System prompt at 10:01.', 2));
    await waitFor(() => events.some((e) => e.event === 'prompt_cache_break'), { what: 'a break event' });
    const breaks = events.filter((e) => e.event === 'prompt_cache_break');
    assert.equal(breaks.length, 1);
    assert.equal(breaks[0]!.changed, 'system');
    assert.equal(breaks[0]!.block, 0);
    assert.ok(breaks[0]!.invalidated_tokens > 0);
    assert.equal(breaks[0]!.tenant, 'default');
    // The log names the session by a hash, never by its id, and holds no prompt text.
    assert.doesNotMatch(JSON.stringify(breaks[0]), /changes|System prompt/);
    const labels = { tenant: 'default', model: 'local-chat', changed: 'system' };
    assert.equal(await metric(base, 'clawperf_gateway_prompt_cache_breaks_total', labels), 1);
    assert.equal(await metric(base, 'clawperf_gateway_prompt_cache_breaks_total', { changed: 'message' }), 0);
  });

  it('reports a stalled breakpoint once when each turn rewrites the whole history', async () => {
    // 25 blocks a turn on each side: more than the 20 blocks a breakpoint looks back for its last write.
    for (let t = 1; t <= 6; t++) {
      await turn('stalls', conversation('Agent system prompt.', t, { breakpoint: true, perTurn: 25 }));
    }
    await waitFor(() => events.some((e) => e.event === 'prompt_cache_stalled'), { what: 'a stall event' });
    const stalls = events.filter((e) => e.event === 'prompt_cache_stalled');
    assert.equal(stalls.length, 1);
    const turns = stalls[0]!.turns as { read: number; write: number }[];
    assert.ok(turns.every((t, i) => i === 0 || (t.write > turns[i - 1]!.write && t.read === turns[0]!.read)));
    assert.equal(
      await metric(base, 'clawperf_gateway_prompt_cache_stalled_sessions_total', { model: 'local-chat' }),
      1,
    );
  });

  it('compares nothing with session tracking off (0 sessions), and still counts the figures', async () => {
    const other = await gatewayWithLog({ promptCacheMaxSessions: 0 });
    try {
      const c = new Anthropic({ apiKey: 'k', baseURL: other.base, maxRetries: 0 });
      await c.messages.create(conversation('One.', 1), { headers: { 'x-clawperf-session': 's' } });
      await c.messages.create(conversation('Two.', 2), { headers: { 'x-clawperf-session': 's' } });
      // Answers were counted; no comparison ran.
      assert.ok(
        (await metric(other.base, 'clawperf_gateway_prompt_cache_tokens_total', { kind: 'uncached' })) > 0,
      );
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal(other.events.filter((e) => e.event === 'prompt_cache_break').length, 0);
    } finally {
      await other.gw.close();
    }
  });
});
