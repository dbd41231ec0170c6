/**
 * `npm run bench prompt-cache`: two questions about the gateway's prompt-cache features.
 *
 * 1. What session tracking (break and stall detection) costs: CPU per `/v1/messages` request of agent
 *    sessions of two turns (a 2 KB system prompt, 10 tools, a history of 40 messages, 22 KB; the second turn
 *    appends an answer and a question, so no break is found), with tracking on and off, in
 *    interleaved rounds, against a FAKE Anthropic upstream (no real provider runs here) answering a fixed
 *    message. CPU is the whole process's (`process.cpuUsage`), the same client and fake for both.
 * 2. What automatic breakpoints save: a 50-turn agent session whose turns add 2 to 26 content blocks (tool
 *    calls and results), sent with and without `promptCache.autoBreakpoints`, against `local-chat`'s
 *    simulated cache and against a FAKE upstream that applies Anthropic's caching rules (the same rules:
 *    breakpoints, a 20-block lookback, 5-minute lifetime). Two clients: one marking only its system prompt,
 *    one marking the last message of each turn. Reported: cache-write, cache-read and uncached input tokens
 *    over the session, and their cost in input-token equivalents at Anthropic's prices (a write 1.25, a
 *    read 0.1, an uncached token 1).
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { request } from 'undici';
import { promptBlocks } from '../src/gateway/prompt-blocks.ts';
import { createGateway, type Gateway } from '../src/gateway/server.ts';
import { SimulatedPromptCache } from '../src/gateway/simulated-prompt-cache.ts';
import { onRequestText } from './fixtures/request-text.ts';
import { machine } from './harness.ts';

type Json = Record<string, unknown>;

/** A FAKE Anthropic upstream; with `rules`, its usage follows Anthropic's caching rules (simulated). */
async function fakeUpstream(rules: boolean): Promise<{ url: string; server: Server }> {
  const cache = new SimulatedPromptCache();
  const server = createServer((req, res) => {
    onRequestText(req, (text) => {
      const body = JSON.parse(text) as Json;
      const figures = rules
        ? cache.anthropic(promptBlocks('anthropic', body))
        : { read: 0, write: 0, uncached: 100 };
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          id: 'msg_fake',
          type: 'message',
          role: 'assistant',
          model: body.model,
          content: [{ type: 'text', text: 'Done: the tool output looks right.' }],
          stop_reason: 'end_turn',
          stop_sequence: null,
          usage: {
            input_tokens: figures.uncached,
            cache_creation_input_tokens: figures.write,
            cache_read_input_tokens: figures.read,
            output_tokens: 9,
          },
        }),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

async function listen(gw: Gateway): Promise<string> {
  return gw.app.listen({ port: 0, host: '127.0.0.1' });
}

async function post(base: string, body: Json, session?: string): Promise<Json> {
  const res = await request(`${base}/v1/messages`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'x-api-key': 'k',
      ...(session === undefined ? {} : { 'x-clawperf-session': session }),
    },
    body: JSON.stringify(body),
  });
  const answer = (await res.body.json()) as Json;
  if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}: ${JSON.stringify(answer)}`);
  return answer;
}

const SYSTEM = `You are a coding agent. ${'Follow the repository conventions and explain each change. '.repeat(35)}`;
const TOOLS = Array.from({ length: 10 }, (_, i) => ({
  name: `tool_${i}`,
  description: `Tool number ${i}: ${'does a careful, well described thing. '.repeat(6)}`,
  input_schema: { type: 'object', properties: { path: { type: 'string' }, query: { type: 'string' } } },
}));

/**
 * The `step`-th request of session `turn`: a history of 40 messages and the session's question, then (step 1)
 * the same with the answer and a follow-up appended, as an agent's next turn does.
 */
function agentRequest(turn: number, step: number): Json {
  const history: Json[] = [];
  for (let i = 0; i < 40; i++) {
    history.push({
      role: i % 2 === 0 ? 'user' : 'assistant',
      content: `Message ${i} of the session: ${'some context the agent keeps in its history. '.repeat(8)}`,
    });
  }
  history.push({ role: 'user', content: `Session ${turn}: go on.` });
  if (step === 1) {
    history.push({ role: 'assistant', content: 'Done: the tool output looks right.' });
    history.push({ role: 'user', content: 'And the next file?' });
  }
  return { model: 'claude-fake', max_tokens: 64, system: SYSTEM, tools: TOOLS, messages: history };
}

/** CPU microseconds per request of `count` requests against `base`, in sessions of two turns. */
async function cpuPerRequest(base: string, count: number, session: string): Promise<number> {
  const start = process.cpuUsage();
  for (let i = 0; i < count; i++) await post(base, agentRequest(i >> 1, i & 1), `${session}-${i >> 1}`);
  // The comparison runs after the answer is sent: let it finish inside the measured time.
  await new Promise((resolve) => setImmediate(resolve));
  const used = process.cpuUsage(start);
  return (used.user + used.system) / count;
}

async function sessionTracking(): Promise<void> {
  const fake = await fakeUpstream(false);
  const gateways = {
    on: await createGateway({ anthropicUpstreamUrl: fake.url, cacheDir: false }),
    off: await createGateway({ anthropicUpstreamUrl: fake.url, cacheDir: false, promptCacheMaxSessions: 0 }),
  };
  const bases = { on: await listen(gateways.on), off: await listen(gateways.off) };
  const rounds = 7;
  const count = 400;
  const figures: Record<'on' | 'off', number[]> = { on: [], off: [] };
  await cpuPerRequest(bases.on, 200, 'warm');
  await cpuPerRequest(bases.off, 200, 'warm');
  for (let r = 0; r < rounds; r++) {
    for (const which of ['off', 'on'] as const) {
      figures[which].push(await cpuPerRequest(bases[which], count, `session-${r}`));
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
  const on = median(figures.on);
  const off = median(figures.off);
  console.log(
    '\n### Session tracking: CPU per /v1/messages request (whole process), median of 7 interleaved rounds of 400',
  );
  console.log('| session tracking | CPU µs / request | vs off |');
  console.log('|---|---|---|');
  console.log(`| off (\`promptCacheMaxSessions: 0\`) | ${off.toFixed(0)} | 1.00x |`);
  console.log(
    `| on (10,000 sessions) | ${on.toFixed(0)} | ${(on / off).toFixed(2)}x (+${(on - off).toFixed(0)} µs) |`,
  );
  await gateways.on.close();
  await gateways.off.close();
  fake.server.close();
}

/** The blocks one agent turn adds: the user's message, tool calls and their results, the answer. */
function turnBlocks(turn: number): { user: Json[]; assistant: Json[] } {
  const tools = (turn * 7) % 13; // 0-12 tool round trips: 2 to 26 blocks a turn
  const user: Json[] = [
    { type: 'text', text: `Turn ${turn}: ${'please look into the next part of the task. '.repeat(4)}` },
  ];
  const assistant: Json[] = [];
  for (let i = 0; i < tools; i++) {
    assistant.push({
      type: 'tool_use',
      id: `toolu_${turn}_${i}`,
      name: 'tool_1',
      input: { path: `src/file_${i}.ts` },
    });
    user.push({
      type: 'tool_result',
      tool_use_id: `toolu_${turn}_${i}`,
      content: `contents of file ${i}: ${'export const value = compute(input); '.repeat(10)}`,
    });
  }
  assistant.push({ type: 'text', text: `Turn ${turn} done. ${'Here is what changed and why. '.repeat(5)}` });
  return { user, assistant };
}

/** Totals of a 50-turn session whose client marks `marks` ('system' or 'last'). */
async function session(base: string, model: string, marks: 'system' | 'last') {
  const totals = { write: 0, read: 0, uncached: 0 };
  const messages: Json[] = [];
  for (let turn = 0; turn < 50; turn++) {
    const { user, assistant } = turnBlocks(turn);
    // Tool results come back in the user turn after the assistant's tool calls.
    messages.push({ role: 'user', content: user.slice(0, 1) });
    if (assistant.length > 1) {
      messages.push({ role: 'assistant', content: assistant.slice(0, -1) });
      messages.push({ role: 'user', content: user.slice(1) });
    }
    const sent = structuredClone(messages);
    if (marks === 'last') {
      const last = sent.at(-1)!.content as Json[];
      last[last.length - 1] = { ...last.at(-1), cache_control: { type: 'ephemeral' } };
    }
    const answer = await post(base, {
      model,
      max_tokens: 64,
      system: [{ type: 'text', text: SYSTEM, cache_control: { type: 'ephemeral' } }],
      tools: TOOLS,
      messages: sent,
    });
    const u = answer.usage as Record<string, number>;
    totals.write += u.cache_creation_input_tokens ?? 0;
    totals.read += u.cache_read_input_tokens ?? 0;
    totals.uncached += u.input_tokens ?? 0;
    messages.push({ role: 'assistant', content: assistant.slice(-1) });
  }
  return { ...totals, cost: totals.write * 1.25 + totals.read * 0.1 + totals.uncached };
}

async function breakpoints(): Promise<void> {
  console.log(
    '\n### Automatic breakpoints: a 50-turn agent session (2-26 blocks a turn), input tokens over the session',
  );
  console.log(
    '| cache | client marks | auto breakpoints | cache writes | cache reads | uncached | cost (input-token equivalents) | vs off |',
  );
  console.log('|---|---|---|---|---|---|---|---|');
  for (const [cache, model] of [
    ['local-chat (simulated)', 'local-chat'],
    ['fake upstream, Anthropic rules', 'claude-fake'],
  ] as const) {
    for (const marks of ['system', 'last'] as const) {
      const rows: Record<string, Awaited<ReturnType<typeof session>>> = {};
      for (const auto of [false, true]) {
        // A gateway and an upstream of their own per run: both caches start empty.
        const fake = await fakeUpstream(true);
        const gw = await createGateway({
          anthropicUpstreamUrl: fake.url,
          cacheDir: false,
          localChatLatencyMs: 0,
          promptCacheAutoBreakpoints: auto,
        });
        rows[String(auto)] = await session(await listen(gw), model, marks);
        await gw.close();
        fake.server.close();
      }
      for (const auto of [false, true]) {
        const r = rows[String(auto)]!;
        const ratio = r.cost / rows.false!.cost;
        console.log(
          `| ${cache} | ${marks === 'system' ? 'system prompt only' : 'last message'} | ${auto ? 'on' : 'off'} | ${r.write} | ${r.read} | ${r.uncached} | ${Math.round(r.cost)} | ${ratio.toFixed(2)}x |`,
        );
      }
    }
  }
}

console.log(`Machine: ${machine()}`);
await sessionTracking();
await breakpoints();
