/**
 * Streaming pass-through on `POST /v1/messages`: what the gateway adds to a streamed Anthropic message, event
 * by event, against the same upstream called directly.
 *
 * - Upstream: a FAKE Anthropic Messages upstream (no real provider runs here), a bare node:http server in its
 *   own process. Each `stream: true` request gets Anthropic's event sequence with `event:` and `data:` lines:
 *   `message_start`, `content_block_start`, `ping`, DELTAS `content_block_delta` events, `content_block_stop`,
 *   `message_delta`, `message_stop`; the first at once, each next one a fixed pace after the one before (a
 *   timer per stream), with Anthropic's `request-id` and `anthropic-ratelimit-*` headers (quotas far from
 *   exhausted, so the gateway never holds a call back). Every stream's bytes are the same, so the client
 *   checks them.
 * - Gateway: `createGateway` alone in a second process (`cacheDir: false`, limits off, 64 upstream
 *   connections, the default), listening as `clawperf gateway` does. Requests carry `x-clawperf-cache:
 *   bypass` and `temperature: 1`, so nothing is cached or rebuilt for the cache: the tap reads the usage and
 *   passes the bytes on.
 * - Floor: the thinnest streaming proxy, a third process: node:http forwarding the request through an undici
 *   `Pool` and piping the answer's body to the client, nothing else. What any extra process in the path costs.
 * - Client: this process, an undici `Pool` per target (64 connections), reading each body as it arrives. For
 *   each stream it records the time from sending the request to the first whole event (an event counts once
 *   its blank line has arrived) and the delay between consecutive events, in microseconds, into
 *   `perf_hooks` histograms, one per round.
 *
 * Contenders, interleaved in rounds (the order rotating each round): (A) the fake called directly, (B) the
 * same fake through the gateway, (C) through the floor proxy; for each scenario of SCENARIOS (events a pace
 * apart, a number of streams at once, each worker starting its next stream as soon as one ends, the workers'
 * first streams spread over one stream's length). Figures are
 * the medians over ROUNDS rounds after an untimed warm-up round each; added = through a proxy minus direct.
 * The fake counts the streams it served and every round checks that each stream read reached it and
 * arrived whole (event and byte counts; the first stream of each contender byte for byte). Each process's
 * own CPU time (fixtures/cpu-probe.mjs) gives the CPU a stream costs it.
 *
 * `BENCH_STREAM_CPU_PROF=<dir>` writes a CPU profile of the gateway process there.
 */
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHistogram, type RecordableHistogram } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Pool } from 'undici';
import { ask, CPU_PROBE, cpuOf } from './fixtures/processes.ts';
import { onRequestText } from './fixtures/request-text.ts';
import { serveToParent } from './fixtures/serve-to-parent.ts';
import { serveStreamFloor } from './fixtures/stream-floor.ts';

/** `content_block_delta` events per stream. */
const DELTAS = 20;

interface Scenario {
  /** Time between two events of one stream, ms. */
  paceMs: number;
  concurrency: number;
  /** Length of one contender's round, ms. */
  roundMs: number;
}

/**
 * A 2 ms pace is a stress (a fast model streams a delta every 10-30 ms): one stream at it, and 64, which
 * makes 32,000 events a second for each process in the path. 64 streams at 20 ms (3,200 events a second) is
 * a busy gateway in front of a fast model.
 */
const SCENARIOS: Scenario[] = [
  { paceMs: 2, concurrency: 1, roundMs: 1_500 },
  { paceMs: 2, concurrency: 64, roundMs: 1_500 },
  { paceMs: 20, concurrency: 64, roundMs: 3_000 },
];
/** Timed rounds per contender and scenario. */
const ROUNDS = 7;
const MODEL = 'claude-bench-1';
const API_KEY = 'sk-ant-bench';

/** An event as Anthropic writes it. */
const event = (type: string, data: object) =>
  `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`;

/** Words of the streamed answer, two per delta. */
const WORDS =
  'The gateway passes every event of the stream on as it arrives, byte for byte, and reads the usage on the side'.split(
    ' ',
  );

/** The events of one streamed message, as Anthropic sends them. */
const EVENTS: string[] = [
  event('message_start', {
    message: {
      id: 'msg_01BenchStreamPassThrough0001',
      type: 'message',
      role: 'assistant',
      model: MODEL,
      content: [],
      stop_reason: null,
      stop_sequence: null,
      usage: {
        input_tokens: 42,
        cache_creation_input_tokens: 0,
        cache_read_input_tokens: 0,
        output_tokens: 1,
      },
    },
  }),
  event('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }),
  event('ping', {}),
  ...Array.from({ length: DELTAS }, (_, i) =>
    event('content_block_delta', {
      index: 0,
      delta: { type: 'text_delta', text: ` ${WORDS[i % WORDS.length]} ${WORDS[(i + 7) % WORDS.length]}` },
    }),
  ),
  event('content_block_stop', { index: 0 }),
  event('message_delta', {
    delta: { stop_reason: 'end_turn', stop_sequence: null },
    usage: { output_tokens: DELTAS * 2 },
  }),
  event('message_stop', {}),
];
const STREAM = EVENTS.join('');
const STREAM_BYTES = Buffer.byteLength(STREAM);

/**
 * `fake`: the FAKE Anthropic upstream. Over IPC it answers `'served'` with the streams it has served, and
 * `'pace <ms>'` by setting the pace of the streams that follow.
 */
async function fake(): Promise<void> {
  let served = 0;
  let paceMs = 2;
  const server = createServer((req, res) => {
    onRequestText(req, (text) => {
      const body = JSON.parse(text) as { stream?: unknown };
      if (req.url !== '/v1/messages' || body.stream !== true || req.headers['x-api-key'] !== API_KEY) {
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end(
          JSON.stringify({ type: 'error', error: { type: 'invalid_request_error', message: 'bench' } }),
        );
        return;
      }
      served++;
      const reset = new Date(Date.now() + 60_000).toISOString();
      res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache',
        'request-id': `req_bench_${served}`,
        'anthropic-ratelimit-requests-limit': '100000',
        'anthropic-ratelimit-requests-remaining': '99999',
        'anthropic-ratelimit-requests-reset': reset,
        'anthropic-ratelimit-tokens-limit': '100000000',
        'anthropic-ratelimit-tokens-remaining': '99990000',
        'anthropic-ratelimit-tokens-reset': reset,
      });
      const pace = paceMs;
      let i = 0;
      const next = () => {
        res.write(EVENTS[i++]);
        if (i === EVENTS.length) res.end();
        else setTimeout(next, pace);
      };
      next();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  process.on('message', (message: unknown) => {
    if (message === 'served') process.send?.({ served });
    else if (typeof message === 'string' && message.startsWith('pace ')) {
      paceMs = Number(message.slice(5));
      process.send?.({ pace: paceMs });
    }
  });
  process.send?.((server.address() as AddressInfo).port);
  process.once('disconnect', () => process.exit(0));
}

/** `gateway <fake port>`: the gateway alone in its process, in front of the fake. */
async function gateway(): Promise<void> {
  const { createGateway, LISTEN_BACKLOG } = await import('../src/gateway/server.ts');
  const g = await createGateway({
    anthropicUpstreamUrl: `http://127.0.0.1:${Number(process.argv[3])}`,
    anthropicApiKey: API_KEY,
    cacheDir: false,
    limits: undefined,
    redisUrl: undefined,
    upstreamConnections: 64,
  });
  await serveToParent(g, LISTEN_BACKLOG);
}

/**
 * `floor <fake port>`: the thinnest streaming proxy (fixtures/stream-floor.ts), the floor for any process in
 * the path. (Not `proxy`: fixtures/processes.ts, imported here, starts its own proxy under that name.)
 */
async function floorProxy(): Promise<void> {
  const port = await serveStreamFloor(Number(process.argv[3]), 64, (req) => ({
    'content-type': 'application/json',
    'anthropic-version': String(req.headers['anthropic-version']),
    'x-api-key': API_KEY,
  }));
  process.send?.(port);
  process.once('disconnect', () => process.exit(0));
}

/** Starts this file as `mode` in a child process; resolves with the child and the port it listens on. */
async function child(mode: string, args: string[], extraArgv: string[] = []) {
  const started = fork(fileURLToPath(import.meta.url), [mode, ...args], {
    execArgv: ['--import', 'tsx', ...CPU_PROBE, ...extraArgv],
    stdio: 'inherit',
  });
  const [port] = (await once(started, 'message')) as [number];
  return { child: started, port };
}

/** One contender's round: the histograms, and the streams read. */
interface Round {
  firstEvent: RecordableHistogram;
  between: RecordableHistogram;
  streams: number;
}

const BODY = JSON.stringify({
  model: MODEL,
  max_tokens: 256,
  temperature: 1,
  stream: true,
  messages: [{ role: 'user', content: 'Say in twenty short steps how a gateway passes a stream on.' }],
});

const us = (ms: number) => Math.max(1, Math.round(ms * 1e3));

interface Target {
  name: string;
  pool: Pool;
  headers: Record<string, string>;
  /** The process in the path between the client and the fake, if any. */
  middle: ReturnType<typeof fork> | undefined;
}

/** One stream: sends the request, reads the body as it arrives, records its timings into `round`. */
async function stream(target: Target, round: Round, check: boolean): Promise<void> {
  const t0 = performance.now();
  const res = await target.pool.request({
    path: '/v1/messages',
    method: 'POST',
    headers: target.headers,
    body: BODY,
  });
  if (res.statusCode !== 200) {
    throw new Error(`${target.name}: ${res.statusCode} ${await res.body.text()}`);
  }
  if (target.name === 'gateway' && res.headers['x-clawperf-cache'] !== 'bypass') {
    throw new Error(`gateway: x-clawperf-cache ${String(res.headers['x-clawperf-cache'])}, not bypass`);
  }
  let events = 0;
  let bytes = 0;
  let last = 0;
  /** Whether the previous chunk ended with a newline (a blank line may straddle two chunks). */
  let newline = false;
  const kept: Buffer[] = [];
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    const now = performance.now();
    bytes += chunk.length;
    if (check) kept.push(chunk);
    let ended = newline && chunk[0] === 10 ? 1 : 0;
    for (let at = chunk.indexOf('\n\n'); at !== -1; at = chunk.indexOf('\n\n', at + 2)) ended++;
    newline = chunk[chunk.length - 1] === 10;
    for (let e = 0; e < ended; e++) {
      if (events === 0) round.firstEvent.record(us(now - t0));
      else round.between.record(us(now - last));
      last = now;
      events++;
    }
  }
  if (events !== EVENTS.length || bytes !== STREAM_BYTES) {
    throw new Error(
      `${target.name}: ${events} events, ${bytes} bytes; sent ${EVENTS.length}, ${STREAM_BYTES}`,
    );
  }
  if (check && Buffer.concat(kept).toString('utf8') !== STREAM) {
    throw new Error(`${target.name}: the stream's bytes differ from the upstream's`);
  }
  round.streams++;
}

/**
 * `concurrency` streams at once for `ms`, each worker starting its next stream as one ends. Worker k starts
 * k / concurrency of a stream's length late, so streams start spread out as independent clients' would,
 * not 64 at the same instant.
 */
async function runRound(
  target: Target,
  concurrency: number,
  paceMs: number,
  ms: number,
  check = false,
): Promise<Round> {
  const round: Round = { firstEvent: createHistogram(), between: createHistogram(), streams: 0 };
  const end = performance.now() + ms;
  const streamMs = (EVENTS.length - 1) * paceMs;
  let first = check;
  const worker = async (k: number) => {
    await new Promise((r) => setTimeout(r, (k * streamMs) / concurrency));
    while (performance.now() < end) {
      const checkThis = first;
      first = false;
      await stream(target, round, checkThis);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, (_, k) => worker(k)));
  return round;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

const fmt = (micros: number) => (micros / 1e3).toFixed(2);
const cpuUs = (a: NodeJS.CpuUsage, b: NodeJS.CpuUsage) => b.user - a.user + b.system - a.system;

/** What one contender's rounds gave. */
interface Rows {
  ttfe50: number[];
  ttfe99: number[];
  gap50: number[];
  gap99: number[];
  streams: number[];
  /** CPU µs per stream of the process in the middle, and of the fake. */
  middleCpu: number[];
  fakeCpu: number[];
}

/** The medians of a contender's rounds. */
type Summary = { [K in keyof Rows]: number };

async function main(): Promise<void> {
  const upstream = await child('fake', []);
  const profile = process.env.BENCH_STREAM_CPU_PROF;
  const gw = await child(
    'gateway',
    [String(upstream.port)],
    profile === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${profile}`],
  );
  const floor = await child('floor', [String(upstream.port)]);
  const served = () => ask<number>(upstream.child, 'served', 'served');
  const common = { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' };
  const targets: Target[] = [
    {
      name: 'direct',
      pool: new Pool(`http://127.0.0.1:${upstream.port}`, { connections: 64 }),
      headers: { ...common, 'x-api-key': API_KEY },
      middle: undefined,
    },
    {
      name: 'gateway',
      pool: new Pool(`http://127.0.0.1:${gw.port}`, { connections: 64 }),
      headers: { ...common, 'x-api-key': 'client-key', 'x-clawperf-cache': 'bypass' },
      middle: gw.child,
    },
    {
      name: 'floor',
      pool: new Pool(`http://127.0.0.1:${floor.port}`, { connections: 64 }),
      headers: { ...common, 'x-api-key': 'client-key' },
      middle: floor.child,
    },
  ];
  console.log(
    `\nFake Anthropic upstream, gateway and floor proxy each in a process of their own, client in this one; ` +
      `${EVENTS.length} events a stream (${DELTAS} content_block_delta), ${STREAM_BYTES} bytes; ` +
      `${ROUNDS} rounds per contender after a warm-up round, medians over rounds; ms.`,
  );
  for (const { paceMs, concurrency, roundMs } of SCENARIOS) {
    await ask(upstream.child, `pace ${paceMs}`, 'pace');
    for (const t of targets) await runRound(t, concurrency, paceMs, roundMs / 2, true);
    const rows: Rows[] = targets.map(() => ({
      ttfe50: [],
      ttfe99: [],
      gap50: [],
      gap99: [],
      streams: [],
      middleCpu: [],
      fakeCpu: [],
    }));
    for (let r = 0; r < ROUNDS; r++) {
      for (let k = 0; k < targets.length; k++) {
        const i = (r + k) % targets.length;
        const target = targets[i]!;
        (globalThis as { gc?: () => void }).gc?.();
        const before = await served();
        const fake0 = await cpuOf(upstream.child);
        const middle0 = target.middle === undefined ? undefined : await cpuOf(target.middle);
        const round = await runRound(target, concurrency, paceMs, roundMs);
        const middle1 = target.middle === undefined ? undefined : await cpuOf(target.middle);
        const fake1 = await cpuOf(upstream.child);
        const reached = (await served()) - before;
        if (reached !== round.streams) {
          throw new Error(`${target.name}: ${round.streams} streams read, ${reached} served upstream`);
        }
        const row = rows[i]!;
        row.ttfe50.push(round.firstEvent.percentile(50));
        row.ttfe99.push(round.firstEvent.percentile(99));
        row.gap50.push(round.between.percentile(50));
        row.gap99.push(round.between.percentile(99));
        row.streams.push(round.streams);
        row.fakeCpu.push(cpuUs(fake0, fake1) / round.streams);
        if (middle0 !== undefined && middle1 !== undefined) {
          row.middleCpu.push(cpuUs(middle0, middle1) / round.streams);
        }
      }
    }
    const [d, g, f] = rows.map((row) => ({
      ttfe50: median(row.ttfe50),
      ttfe99: median(row.ttfe99),
      gap50: median(row.gap50),
      gap99: median(row.gap99),
      streams: median(row.streams),
      middleCpu: row.middleCpu.length === 0 ? 0 : median(row.middleCpu),
      fakeCpu: median(row.fakeCpu),
    })) as [Summary, Summary, Summary];
    console.log(
      `\n### ${concurrency} concurrent stream(s), events ${paceMs} ms apart, rounds of ${roundMs} ms\n`,
    );
    console.log(
      '| figure, ms | direct | gateway | added by the gateway | floor proxy | added by the floor |',
    );
    console.log('|---|---:|---:|---:|---:|---:|');
    for (const [label, key] of [
      ['time to first event, p50', 'ttfe50'],
      ['time to first event, p99', 'ttfe99'],
      ['inter-event delay, p50', 'gap50'],
      ['inter-event delay, p99', 'gap99'],
    ] as const) {
      console.log(
        `| ${label} | ${fmt(d[key])} | ${fmt(g[key])} | ${fmt(g[key] - d[key])} | ${fmt(f[key])} | ` +
          `${fmt(f[key] - d[key])} |`,
      );
    }
    const added = g.ttfe50 - d.ttfe50;
    const addedGap = g.gap50 - d.gap50;
    console.log(
      `\nStreams per round: direct ${d.streams}, gateway ${g.streams}, floor ${f.streams}. CPU µs per stream: ` +
        `gateway ${Math.round(g.middleCpu)}, floor proxy ${Math.round(f.middleCpu)}, fake upstream ` +
        `${Math.round(d.fakeCpu)} (direct rounds). Target p50 added under 1 ms: first event ${fmt(added)} ms, ` +
        `inter-event ${fmt(addedGap)} ms: ${added < 1000 && addedGap < 1000 ? 'met' : 'NOT met'}.`,
    );
    console.log(
      'Per round, first event p50 direct / gateway / floor: ' +
        rows[0]!.ttfe50
          .map((x, r) => `${fmt(x)} / ${fmt(rows[1]!.ttfe50[r]!)} / ${fmt(rows[2]!.ttfe50[r]!)}`)
          .join(', '),
    );
  }
  for (const t of targets) await t.pool.close();
  for (const c of [gw.child, floor.child, upstream.child]) {
    c.disconnect();
    await once(c, 'exit');
  }
}

if (process.argv[2] === 'fake') await fake();
else if (process.argv[2] === 'gateway') await gateway();
else if (process.argv[2] === 'floor') await floorProxy();
else await main();
