/**
 * Hundreds of concurrent streamed chat completions through the gateway, against the same streams read from
 * the upstream directly, in the same run: what the gateway adds to the time to the first chunk and to the
 * gap between chunks when 512 (then 2,048) streams are open at once, and what an open stream costs its heap.
 *
 * - Upstream: a FAKE OpenAI-compatible upstream (no real provider runs here), a bare node:http server in its
 *   own process: every `stream: true` chat completion gets CHUNKS `chat.completion.chunk` events PACE_MS
 *   apart, then `data: [DONE]`. It counts the streams it served.
 * - Gateway: `createGateway` alone in a second process (`cacheDir: false`, limits off, `maxConcurrency`
 *   1024, upstream connections left at their default), listening as `clawperf gateway` does. Requests say
 *   `temperature: 1`, so nothing is cached: each stream is passed through as the upstream sends it.
 * - Client: this process, an undici `Pool` per target with a connection per stream. Stream k of a scenario
 *   starts k / N of a stream's length after the round begins and each starts the next as soon as it ends,
 *   so N streams are open at once the whole round, started as independent clients' would be. Each records
 *   the time from sending its request to its first whole chunk, and the gap between consecutive chunks, in
 *   `perf_hooks` histograms.
 *
 * Direct and gateway rounds alternate; the figures are the medians over ROUNDS rounds after a warm-up
 * round each; added = through the gateway minus direct. Every stream read must reach the upstream (its count)
 * and arrive whole (CHUNKS chunks and the end), or the run fails. Heap per open stream: the gateway's heap
 * after a full GC halfway through a round with N streams open, less its heap idle, over N.
 *
 * Run with `npm run bench streams`; `BENCH_STREAMS=512,2048` picks the scenarios. The bench raises its own
 * open-file limit when it is too low for the streams asked (each stream holds a descriptor in each process).
 * `BENCH_STREAM_CPU_PROF=<dir>` writes a CPU profile of the gateway process there (the floor's in `<dir>/floor`).
 */
import { execFileSync, fork, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { loadavg } from 'node:os';
import { createHistogram, type RecordableHistogram } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Pool } from 'undici';
import { ask, CPU_PROBE, cpuOf } from './fixtures/processes.ts';
import { serveToParent } from './fixtures/serve-to-parent.ts';
import { serveStreamFloor } from './fixtures/stream-floor.ts';

/** Chunks per stream and the time between two of them, ms. */
const CHUNKS = 50;
const PACE_MS = 20;
/** One round lasts this many stream lengths. */
const ROUND_STREAMS = 3;
const ROUNDS = 3;
const STREAM_MS = (CHUNKS - 1) * PACE_MS;
const MODEL = 'bench-chat';

const chunk = (i: number) =>
  `data: ${JSON.stringify({
    id: 'chatcmpl-bench',
    object: 'chat.completion.chunk',
    created: 0,
    model: MODEL,
    choices: [{ index: 0, delta: { content: `word${i} ` }, finish_reason: i === CHUNKS - 1 ? 'stop' : null }],
  })}\n\n`;
const DONE = 'data: [DONE]\n\n';

/** `fake`: the streaming upstream. */
async function fake(): Promise<void> {
  let served = 0;
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      served++;
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      let i = 0;
      const next = () => {
        res.write(chunk(i++));
        if (i === CHUNKS) res.end(DONE);
        else setTimeout(next, PACE_MS);
      };
      next();
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', 4096, r));
  process.on('message', (message) => {
    if (message === 'served') process.send?.({ served });
  });
  process.send?.((server.address() as AddressInfo).port);
  process.once('disconnect', () => process.exit(0));
}

/** `gateway <fake port>`: the gateway alone in its process, answering `heap` with its heap after a full GC. */
async function gateway(): Promise<void> {
  const { createGateway, LISTEN_BACKLOG } = await import('../src/gateway/server.ts');
  const g = await createGateway({
    upstreamUrl: `http://127.0.0.1:${Number(process.argv[3])}/v1`,
    cacheDir: false,
    limits: undefined,
    redisUrl: undefined,
    maxConcurrency: 1024,
  });
  process.on('message', (message) => {
    if (message !== 'heap') return;
    (globalThis as { gc?: () => void }).gc?.();
    process.send?.({ heap: process.memoryUsage().heapUsed });
  });
  await serveToParent(g, LISTEN_BACKLOG);
}

/** `floor <fake port>`: the thinnest streaming proxy (fixtures/stream-floor.ts), the floor for any proxy. */
async function floorProxy(): Promise<void> {
  const port = await serveStreamFloor(Number(process.argv[3]), 4096, () => ({
    'content-type': 'application/json',
  }));
  process.send?.(port);
  process.once('disconnect', () => process.exit(0));
}

async function child(mode: string, args: string[], extraArgv: string[] = []) {
  const started = fork(fileURLToPath(import.meta.url), [mode, ...args], {
    execArgv: ['--import', 'tsx', ...CPU_PROBE, ...extraArgv],
    stdio: 'inherit',
  });
  const [port] = (await once(started, 'message')) as [number];
  return { child: started, port };
}

const BODY = JSON.stringify({
  model: MODEL,
  temperature: 1,
  stream: true,
  messages: [{ role: 'user', content: 'Count to fifty, one word at a time.' }],
});
const us = (ms: number) => Math.max(1, Math.round(ms * 1e3));

interface Round {
  first: RecordableHistogram;
  gap: RecordableHistogram;
  /** Longest gap between two chunks of one stream, ms. */
  worstGap: number;
  streams: number;
  open: number;
}

async function stream(pool: Pool, name: string, round: Round): Promise<void> {
  const t0 = performance.now();
  const res = await pool.request({
    path: '/v1/chat/completions',
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: 'Bearer bench' },
    body: BODY,
  });
  if (res.statusCode !== 200) throw new Error(`${name}: ${res.statusCode} ${await res.body.text()}`);
  round.open++;
  let events = 0;
  let last = 0;
  let newline = false;
  for await (const part of res.body as AsyncIterable<Buffer>) {
    const now = performance.now();
    let ended = newline && part[0] === 10 ? 1 : 0;
    for (let at = part.indexOf('\n\n'); at !== -1; at = part.indexOf('\n\n', at + 2)) ended++;
    newline = part[part.length - 1] === 10;
    for (let e = 0; e < ended; e++) {
      if (events === 0) round.first.record(us(now - t0));
      else {
        round.gap.record(us(now - last));
        if (now - last > round.worstGap) round.worstGap = now - last;
      }
      last = now;
      events++;
    }
  }
  round.open--;
  if (events !== CHUNKS + 1)
    throw new Error(`${name}: a stream ended after ${events} of ${CHUNKS + 1} events`);
  round.streams++;
}

/** N streams open at once for the round, the next starting as one ends; `halfway` runs at mid-round. */
async function runRound(
  pool: Pool,
  name: string,
  n: number,
  halfway?: (open: number) => Promise<void>,
): Promise<Round> {
  const round: Round = { first: createHistogram(), gap: createHistogram(), worstGap: 0, streams: 0, open: 0 };
  const roundMs = ROUND_STREAMS * STREAM_MS;
  const end = performance.now() + roundMs;
  const worker = async (k: number) => {
    await new Promise((r) => setTimeout(r, (k * STREAM_MS) / n));
    while (performance.now() < end) await stream(pool, name, round);
  };
  const mid =
    halfway === undefined
      ? Promise.resolve()
      : new Promise<void>((resolve, reject) =>
          setTimeout(() => halfway(round.open).then(resolve, reject), roundMs / 2),
        );
  await Promise.all([...Array.from({ length: n }, (_, k) => worker(k)), mid]);
  return round;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const ms = (micros: number) => (micros / 1e3).toFixed(1);

interface Rows {
  first50: number[];
  first99: number[];
  gap50: number[];
  gap99: number[];
  worst: number[];
  streams: number[];
}
const rows = (): Rows => ({ first50: [], first99: [], gap50: [], gap99: [], worst: [], streams: [] });

/** Re-runs this bench with a higher open-file limit when the current one cannot hold `streams` streams. */
function ensureFileLimit(streams: number): boolean {
  const want = 4 * streams + 1024;
  const soft = Number(execFileSync('/bin/sh', ['-c', 'ulimit -n'], { encoding: 'utf8' }).trim());
  if (!Number.isFinite(soft) || soft >= want || process.env.BENCH_STREAMS_RAISED === '1') return false;
  console.log(`open-file limit ${soft} < ${want}: running again with ulimit -n ${want}`);
  const argv = [...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2)];
  const quoted = [process.execPath, ...argv].map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(' ');
  const result = spawnSync('/bin/sh', ['-c', `ulimit -n ${want} && exec ${quoted}`], {
    stdio: 'inherit',
    env: { ...process.env, BENCH_STREAMS_RAISED: '1' },
  });
  process.exitCode = result.status ?? 1;
  return true;
}

async function main(): Promise<void> {
  const scenarios = (process.env.BENCH_STREAMS ?? '512,2048').split(',').map(Number);
  if (ensureFileLimit(Math.max(...scenarios))) return;
  const upstream = await child('fake', []);
  const profile = process.env.BENCH_STREAM_CPU_PROF;
  const gw = await child(
    'gateway',
    [String(upstream.port)],
    ['--expose-gc', ...(profile === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${profile}`])],
  );
  const floor = await child(
    'floor',
    [String(upstream.port)],
    profile === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${profile}/floor`],
  );
  const served = () => ask<number>(upstream.child, 'served', 'served');
  const heap = () => ask<number>(gw.child, 'heap', 'heap');
  console.log(
    `\nFake upstream, gateway and floor proxy each in a process of their own, client in this one; ${CHUNKS} ` +
      `chunks ${PACE_MS} ms apart per stream; rounds of ${ROUND_STREAMS} stream lengths, ${ROUNDS} per target ` +
      `after a warm-up round, the order rotating; medians over rounds; ms. ${new Date().toISOString()}, load ` +
      `average ${loadavg()
        .map((x) => x.toFixed(1))
        .join(' ')}.`,
  );
  const middles = { direct: undefined, gateway: gw.child, floor: floor.child };
  const names = ['direct', 'gateway', 'floor'] as const;
  for (const n of scenarios) {
    const ports = { direct: upstream.port, gateway: gw.port, floor: floor.port };
    const pools = Object.fromEntries(
      names.map((name) => [name, new Pool(`http://127.0.0.1:${ports[name]}`, { connections: n })]),
    ) as Record<(typeof names)[number], Pool>;
    for (const name of names) await runRound(pools[name], name, n);
    const idle = await heap();
    const perStream: number[] = [];
    const by = { direct: rows(), gateway: rows(), floor: rows() };
    const cpu = { gateway: [] as number[], floor: [] as number[] };
    for (let r = 0; r < ROUNDS; r++) {
      for (let k = 0; k < names.length; k++) {
        const name = names[(r + k) % names.length]!;
        const middle = middles[name];
        const before = await served();
        const cpu0 = middle === undefined ? undefined : await cpuOf(middle);
        const heapHalfway = async (open: number) => {
          perStream.push(((await heap()) - idle) / open);
        };
        const round = await runRound(pools[name], name, n, name === 'gateway' ? heapHalfway : undefined);
        const reached = (await served()) - before;
        if (reached !== round.streams) {
          throw new Error(`${name}: ${round.streams} streams read, ${reached} served upstream`);
        }
        if (middle !== undefined && cpu0 !== undefined && name !== 'direct') {
          const cpu1 = await cpuOf(middle);
          cpu[name].push((cpu1.user - cpu0.user + cpu1.system - cpu0.system) / round.streams);
        }
        const row = by[name];
        row.first50.push(round.first.percentile(50));
        row.first99.push(round.first.percentile(99));
        row.gap50.push(round.gap.percentile(50));
        row.gap99.push(round.gap.percentile(99));
        row.worst.push(round.worstGap * 1e3);
        row.streams.push(round.streams);
      }
    }
    const summary = (name: (typeof names)[number]) =>
      Object.fromEntries(Object.entries(by[name]).map(([key, v]) => [key, median(v)])) as Record<
        keyof Rows,
        number
      >;
    const [d, g, f] = [summary('direct'), summary('gateway'), summary('floor')];
    console.log(`\n### ${n} concurrent streams\n`);
    console.log(
      '| figure, ms | direct | gateway | added by the gateway | floor proxy | added by the floor | target for the gateway |',
    );
    console.log('|---|---:|---:|---:|---:|---:|---|');
    const line = (label: string, key: keyof Rows, target: string) =>
      console.log(
        `| ${label} | ${ms(d[key])} | ${ms(g[key])} | ${ms(g[key] - d[key])} | ${ms(f[key])} | ` +
          `${ms(f[key] - d[key])} | ${target} |`,
      );
    line('time to first chunk, p50', 'first50', 'added at most 10');
    line('time to first chunk, p99', 'first99', 'added at most 50');
    line('gap between chunks, p50', 'gap50', '');
    line('gap between chunks, p99', 'gap99', 'added at most 20');
    line('longest gap', 'worst', 'at most 100 longer than direct');
    const met =
      g.first50 - d.first50 <= 10_000 &&
      g.first99 - d.first99 <= 50_000 &&
      g.gap99 - d.gap99 <= 20_000 &&
      g.worst - d.worst <= 100_000;
    console.log(
      `\nStreams read per round (every chunk of each checked): direct ${d.streams}, gateway ${g.streams}, ` +
        `floor ${f.streams}. CPU µs per stream: gateway ${Math.round(median(cpu.gateway))}, floor ` +
        `${Math.round(median(cpu.floor))}. Gateway heap per open stream: ${(median(perStream) / 1024).toFixed(1)} ` +
        `KiB (rounds: ${perStream.map((b) => (b / 1024).toFixed(1)).join(', ')}). Targets: ${met ? 'met' : 'NOT met'}.`,
    );
    console.log(
      `Per round, first chunk p99 direct / gateway / floor: ${by.direct.first99
        .map((x, r) => `${ms(x)} / ${ms(by.gateway.first99[r]!)} / ${ms(by.floor.first99[r]!)}`)
        .join(', ')}`,
    );
    for (const name of names) await pools[name].close();
  }
  for (const c of [gw.child, floor.child, upstream.child]) {
    c.disconnect();
    await once(c, 'exit');
  }
}

if (process.argv[2] === 'fake') await fake();
else if (process.argv[2] === 'gateway') await gateway();
else if (process.argv[2] === 'floor') await floorProxy();
else await main();
