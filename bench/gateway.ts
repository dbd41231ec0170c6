/**
 * The gateway against the limits physics allows, on the same machine in the same run:
 *
 * 1. Cached answers (`/v1/embeddings` with one input, a deterministic `/v1/chat/completions`) against a bare
 *    Fastify route returning the same JSON: requests/s with autocannon at 16 connections, rounds interleaved.
 * 2. Overhead on a cache miss: a local OpenAI-shaped upstream (a bare node:http server in its own process,
 *    answering at once, and a second one answering after 20 ms) called through the gateway (`upstreamUrl`),
 *    through the thinnest possible proxy process (the floor for any gateway), and directly, from an undici
 *    client loop recording into `perf_hooks.createHistogram` (bench/harness.ts), at 1 and 16 connections.
 *    Added latency = the gateway's percentile minus the direct one.
 *
 * 3. Against a peer: the Portkey open-source gateway (`@portkey-ai/gateway`, started with `--headless` as its
 *    own process) in front of the same upstream, on chat completions (its 1.15.2 release answers 500 to
 *    proxied embeddings on Node 20): requests/s at 16 connections (autocannon) and added latency at 1 and 16
 *    connections, beside clawperf with the cache bypassed (so both do the full proxy work) and the upstream
 *    called directly.
 *
 * 4. 1,000 concurrent `/v1/embeddings` requests over real sockets: upstream calls made.
 *
 * 5. CPU per request on the miss path (`cpu`): the user + system CPU time the gateway process itself spends
 *    over a fixed number of proxied chat completions, each distinct and deterministic (`temperature: 0`), so
 *    every one is a cache miss that goes upstream and is stored in L1, beside the thinnest proxy process (the
 *    floor) and Portkey, rounds interleaved. Each process reads its own `process.cpuUsage()` (loaded with
 *    fixtures/cpu-probe.mjs) and reports it over IPC; the instant upstream counts the calls it answers. The
 *    gateway runs alone in its own process (`serve-cpu`): limits off, no Redis, no disk cache. CPU time is
 *    what a proxy costs whoever runs it, and on a shared machine it holds much steadier than requests/s,
 *    which move with whatever else the cores are doing.
 *
 * 6. Cached answers apart (`cached-apart`): section 1 with the bare Fastify route and the gateway each in a
 *    process of its own (`serve-bare`, `serve-cached`), so neither shares a heap or an event loop with the
 *    other, and the same route without a framework (`serve-bare node`: node:http), which shows what Fastify
 *    itself costs. Rounds interleaved in a rotating order (bare, gateway embeddings, gateway chat,
 *    node:http), each contender hit with autocannon at 16 connections: requests/s, and the CPU time the
 *    server process itself spends per completed request (fixtures/cpu-probe.mjs before and after each
 *    round). Each round first checks that the gateway answers from its cache (`x-clawperf-cache: hit`); both
 *    bare routes answer the same bytes as the gateway's cached embedding, checked before the first round.
 *
 * The gateways of sections 1-4 run in a child process (this file with `serve`) and the upstreams and proxies
 * in processes of their own (fixtures/processes.ts), so no two of them share an event loop.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Fastify from 'fastify';
import { Agent, Pool, request } from 'undici';
import { startPortkey } from './fixtures/portkey.ts';
import { type BenchProcess, CPU_PROBE, cpuOf, startProcess } from './fixtures/processes.ts';
import { onRequestText } from './fixtures/request-text.ts';
import { serveToParent } from './fixtures/serve-to-parent.ts';
import { compare } from './harness.ts';

/** The part of autocannon's API used here (the package ships no types). */
const autocannon = createRequire(import.meta.url)('autocannon') as (options: {
  url: string;
  method: string;
  connections: number;
  duration: number;
  headers: Record<string, string>;
  body: string;
}) => Promise<{ non2xx: number; errors: number; requests: { average: number; total: number } }>;

interface Ports {
  gateway: number;
  /** The same gateway without the disk cache (memory only). */
  memoryOnly: number;
  bare: number;
  /** The thinnest proxy process in front of the upstream: what any extra process in the path costs. */
  proxy: number;
  upstream: number;
  /** The same two gateways in front of an upstream answering after SLOW_UPSTREAM_MS. */
  slowGateway: number;
  slowMemoryOnly: number;
  slowProxy: number;
  slowUpstream: number;
}

/** How long the second upstream takes to answer: a fast model, so the machine is not saturated at 16. */
const SLOW_UPSTREAM_MS = 20;

/**
 * `BENCH_GATEWAY_ONLY=overhead,burst` runs only those sections (cached, cached-apart, peer, overhead, burst,
 * cpu).
 */
const only = process.env.BENCH_GATEWAY_ONLY?.split(',');
const wanted = (section: string) => only === undefined || only.includes(section);

async function serve(): Promise<void> {
  const { createGateway, LISTEN_BACKLOG } = await import('../src/gateway/server.ts');
  // The upstreams run in processes of their own (started by main), as a real upstream would.
  const upstreamPort = Number(process.argv[3]);
  const slowUpstreamPort = Number(process.argv[4]);
  const dir = await mkdtemp(join(tmpdir(), 'clawperf-bench-gw-'));
  const started: Awaited<ReturnType<typeof createGateway>>[] = [];
  /** A gateway listening the way `clawperf gateway` does; `disk` false for memory only. */
  const start = async (upstreamPort: number, disk: boolean) => {
    const g = await createGateway({
      cacheDir: disk ? await mkdtemp(join(dir, 'g-')) : false,
      localChatLatencyMs: 0,
      upstreamUrl: `http://127.0.0.1:${upstreamPort}/v1`,
    });
    await g.app.listen({ port: 0, host: '127.0.0.1', backlog: LISTEN_BACKLOG });
    started.push(g);
    return g;
  };
  const gw = await start(upstreamPort, true);
  const memoryOnly = await start(upstreamPort, false);
  const slowGw = await start(slowUpstreamPort, true);
  const slowMemoryOnly = await start(slowUpstreamPort, false);
  const embedAnswer = (
    await gw.app.inject({
      method: 'POST',
      url: '/v1/embeddings',
      payload: { model: 'local-embed', input: 'hello' },
    })
  ).json();
  const bare = Fastify({ logger: false });
  bare.post('/v1/embeddings', async () => embedAnswer);
  await bare.listen({ port: 0, host: '127.0.0.1' });
  const ports: Ports = {
    gateway: (gw.app.server.address() as AddressInfo).port,
    memoryOnly: (memoryOnly.app.server.address() as AddressInfo).port,
    bare: (bare.server.address() as AddressInfo).port,
    proxy: 0,
    upstream: upstreamPort,
    slowGateway: (slowGw.app.server.address() as AddressInfo).port,
    slowMemoryOnly: (slowMemoryOnly.app.server.address() as AddressInfo).port,
    slowProxy: 0,
    slowUpstream: slowUpstreamPort,
  };
  // The burst section asks how many upstream calls the first gateway has made.
  process.on('message', (message) => {
    if (message === 'upstreamCalls') process.send?.({ upstreamCalls: gw.stats().upstreamCalls });
  });
  process.send?.(ports);
  process.once('disconnect', async () => {
    for (const g of started) await g.close();
    await bare.close();
    await rm(dir, { recursive: true, force: true });
    process.exit(0);
  });
}

/**
 * `serve-cpu <upstream port>`: one gateway alone in its process, for the CPU section, so nothing else in the
 * process spends CPU: limits off, no Redis, no disk cache (memory L1 only), as `clawperf gateway` listens.
 */
async function serveCpu(): Promise<void> {
  const { createGateway, LISTEN_BACKLOG } = await import('../src/gateway/server.ts');
  const g = await createGateway({
    cacheDir: false,
    limits: undefined,
    redisUrl: undefined,
    localChatLatencyMs: 0,
    upstreamUrl: `http://127.0.0.1:${Number(process.argv[3])}/v1`,
  });
  await serveToParent(g, LISTEN_BACKLOG);
}

/**
 * `serve-cached <upstream port>`: the gateway of the cached section (memory L1 and a disk cache in a fresh
 * directory, the defaults otherwise) alone in its process, for `cached-apart`.
 */
async function serveCached(): Promise<void> {
  const { createGateway, LISTEN_BACKLOG } = await import('../src/gateway/server.ts');
  const dir = await mkdtemp(join(tmpdir(), 'clawperf-bench-gw-'));
  const g = await createGateway({
    cacheDir: dir,
    localChatLatencyMs: 0,
    upstreamUrl: `http://127.0.0.1:${Number(process.argv[3])}/v1`,
  });
  await serveToParent(g, LISTEN_BACKLOG, () => rm(dir, { recursive: true, force: true }));
}

/**
 * `serve-bare`: the bare Fastify route of the cached section alone in its process, for `cached-apart`. It
 * says `'ready'`, waits for the JSON text to answer (`{ answer }` over IPC), parses it once and returns the parsed value
 * from a POST route, as the cached section's route does.
 */
async function serveBare(): Promise<void> {
  // Asked for only now: a message sent before this process listens for it would be lost.
  const asked = once(process, 'message') as Promise<[{ answer: string }]>;
  process.send?.('ready');
  const [message] = await asked;
  const answer: unknown = JSON.parse(message.answer);
  if (process.argv[3] === 'node') return serveBareNode(answer);
  const bare = Fastify({ logger: false });
  bare.post('/v1/embeddings', async () => answer);
  await bare.listen({ port: 0, host: '127.0.0.1' });
  process.send?.((bare.server.address() as AddressInfo).port);
  process.once('disconnect', async () => {
    await bare.close();
    process.exit(0);
  });
}

/**
 * `serve-bare node`: the same route without a framework, a node:http handler that reads and parses the JSON
 * body and answers the value's JSON with Fastify's content type: what Fastify itself costs a request.
 */
async function serveBareNode(answer: unknown): Promise<void> {
  const server = createServer((req, res) => {
    onRequestText(req, (text) => {
      JSON.parse(text);
      const body = JSON.stringify(answer);
      res.writeHead(200, {
        'content-type': 'application/json; charset=utf-8',
        'content-length': Buffer.byteLength(body),
      });
      res.end(body);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  process.send?.((server.address() as AddressInfo).port);
  process.once('disconnect', () => process.exit(0));
}

async function cannon(url: string, body: unknown, headers: Record<string, string> = {}): Promise<number> {
  const result = await autocannon({
    url,
    method: 'POST',
    connections: 16,
    duration: 3,
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  if (result.non2xx > 0 || result.errors > 0)
    throw new Error(`${url}: ${result.non2xx} non-2xx, ${result.errors} errors`);
  return result.requests.average;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

/** Prints the autocannon rounds of `rows` (medians) as a table, each row's ratio to row `base`. */
function rpsTable(
  title: string,
  baseName: string,
  rows: Record<string, number[]>,
  names: [label: string, key: string][],
  base: string,
): void {
  const baseRps = median(rows[base]!);
  console.log(`\n### ${title}, autocannon, 16 connections, 3 rounds of 3 s (median)\n`);
  console.log(`| contender | req/s | ratio to ${baseName} |`);
  console.log('|---|---:|---:|');
  for (const [label, key] of names) {
    const rps = median(rows[key]!);
    console.log(`| ${label} | ${Math.round(rps)} | ${(rps / baseRps).toFixed(2)}x |`);
  }
}

/** Asks the server process how many upstream calls its first gateway has made. */
async function upstreamCalls(child: ChildProcess): Promise<number> {
  child.send('upstreamCalls');
  for (;;) {
    const [message] = (await once(child, 'message')) as [{ upstreamCalls?: number }];
    if (message.upstreamCalls !== undefined) return message.upstreamCalls;
  }
}

/**
 * 1,000 concurrent `/v1/embeddings` requests over real sockets, one input each: distinct inputs (how many
 * upstream batches), then one identical input (one call). Each burst on 1,000 connections, both already
 * open (a warm client pool) and opened by the burst itself (1,000 new clients at once).
 */
async function burst(child: ChildProcess, gateway: string): Promise<void> {
  const CLIENTS = 1_000;
  const fire = async (agent: Agent, input: (i: number) => string) => {
    const before = await upstreamCalls(child);
    const t0 = performance.now();
    const codes = await Promise.all(
      Array.from({ length: CLIENTS }, (_, i) =>
        request(`${gateway}/v1/embeddings`, {
          method: 'POST',
          body: JSON.stringify({ model: 'local-embed', input: input(i) }),
          headers: { 'content-type': 'application/json' },
          dispatcher: agent,
        }).then(async (r) => {
          await r.body.dump();
          return r.statusCode;
        }),
      ),
    );
    const ms = performance.now() - t0;
    if (codes.some((c) => c !== 200))
      throw new Error(`burst: ${codes.filter((c) => c !== 200).length} failed`);
    return { calls: (await upstreamCalls(child)) - before, ms };
  };
  console.log(`\n### ${CLIENTS.toLocaleString('en')} concurrent /v1/embeddings requests, real sockets\n`);
  console.log('| burst | connections | upstream calls | wall (ms) |');
  console.log('|---|---|---:|---:|');
  let run = 0;
  for (let round = 0; round < 3; round++) {
    for (const warm of [true, false]) {
      const agent = new Agent({ connections: CLIENTS });
      // A warm pool: every connection opened (and the gateway warmed) by a burst of cached requests first.
      if (warm) await fire(agent, () => 'hello');
      run++;
      const distinct = await fire(agent, (i) => `burst ${run} distinct input ${i}`);
      const same = await fire(agent, () => `burst ${run} identical input`);
      const how = warm ? 'already open' : 'opened by the burst';
      console.log(`| distinct inputs | ${how} | ${distinct.calls} | ${Math.round(distinct.ms)} |`);
      console.log(`| identical input | ${how} (then reused) | ${same.calls} | ${Math.round(same.ms)} |`);
      await agent.close();
    }
  }
}

/**
 * Requests per round of the CPU section, the same for each contender: CPU_WARMUP_ROUNDS untimed rounds, then
 * CPU_ROUNDS timed ones, all interleaved alike. A fresh process spends several times its steady CPU per
 * request over its first 3,000 or so while V8 compiles the hot paths, and a first timed round right after a
 * single warm-up block still came out high for every contender, hence warm-up in interleaved rounds too.
 * Portkey answers only a few hundred a second on the 2-core machine, which bounds the rest: short rounds,
 * interleaved, track a shared machine's changing speed.
 */
const CPU_REQUESTS = 2_500;
const CPU_WARMUP_ROUNDS = 2;
const CPU_ROUNDS = 7;
const CPU_CONNECTIONS = 16;

/**
 * CPU microseconds per proxied request on the miss path: the gateway, the floor proxy and Portkey in front
 * of the same instant upstream, CPU_REQUESTS distinct deterministic chat completions per round each from
 * CPU_CONNECTIONS keep-alive connections, rounds interleaved. Each round reads the contender's own CPU time
 * before and after, and the upstream's count of answered requests (every request must reach it).
 */
async function cpuPerRequest(
  upstream: BenchProcess,
  portkey: { url: string; headers: Record<string, string>; cpu(): Promise<NodeJS.CpuUsage> },
): Promise<void> {
  const gatewayChild = fork(fileURLToPath(import.meta.url), ['serve-cpu', String(upstream.port)], {
    execArgv: ['--import', 'tsx', ...CPU_PROBE],
    stdio: 'inherit',
  });
  const [gatewayPort] = (await once(gatewayChild, 'message')) as [number];
  const floor = await startProcess('proxy', upstream.port);
  const contenders = [
    {
      name: 'clawperf gateway: limits off, no Redis, no disk cache (`cacheDir: false`), memory L1 on',
      url: `http://127.0.0.1:${gatewayPort}`,
      headers: {},
      cpu: () => cpuOf(gatewayChild),
      // Proof each answer was a miss, not served from L1.
      check: (h: Record<string, string | string[] | undefined>) => h['x-clawperf-cache'] === 'miss',
    },
    {
      name: 'floor: the thinnest proxy process (node:http + undici Pool, nothing else)',
      url: `http://127.0.0.1:${floor.port}`,
      headers: {},
      cpu: floor.cpu,
      check: () => true,
    },
    {
      name: 'Portkey gateway 1.15.2 (`--headless`)',
      url: portkey.url,
      headers: portkey.headers,
      cpu: portkey.cpu,
      check: () => true,
    },
  ];
  let sent = 0;
  const pools = contenders.map((c) => new Pool(c.url, { connections: CPU_CONNECTIONS }));
  /** `count` requests to contender `i` from CPU_CONNECTIONS loops, each a question never asked before. */
  const fire = async (i: number, count: number) => {
    const c = contenders[i]!;
    const pool = pools[i]!;
    let left = count;
    const loop = async () => {
      while (left > 0) {
        left--;
        const r = await pool.request({
          path: '/v1/chat/completions',
          method: 'POST',
          headers: { 'content-type': 'application/json', ...c.headers },
          body: JSON.stringify({
            model: 'bench-chat',
            temperature: 0,
            messages: [{ role: 'user', content: `cpu question ${sent++}` }],
          }),
        });
        await r.body.dump();
        if (r.statusCode !== 200 || !c.check(r.headers))
          throw new Error(`${c.name}: ${r.statusCode} ${JSON.stringify(r.headers)}`);
      }
    };
    await Promise.all(Array.from({ length: CPU_CONNECTIONS }, loop));
  };
  const usPerRequest: number[][] = contenders.map(() => []);
  const userUs: number[][] = contenders.map(() => []);
  const systemUs: number[][] = contenders.map(() => []);
  const rps: number[][] = contenders.map(() => []);
  const calls: number[][] = contenders.map(() => []);
  for (let round = 0; round < CPU_WARMUP_ROUNDS; round++) {
    for (let i = 0; i < contenders.length; i++) await fire(i, CPU_REQUESTS);
  }
  for (let round = 0; round < CPU_ROUNDS; round++) {
    for (let i = 0; i < contenders.length; i++) {
      const served0 = await upstream.served();
      const cpu0 = await contenders[i]!.cpu();
      const t0 = performance.now();
      await fire(i, CPU_REQUESTS);
      const ms = performance.now() - t0;
      const cpu1 = await contenders[i]!.cpu();
      const served = (await upstream.served()) - served0;
      if (served < CPU_REQUESTS)
        throw new Error(`${contenders[i]!.name}: upstream answered ${served} of ${CPU_REQUESTS} requests`);
      userUs[i]!.push((cpu1.user - cpu0.user) / CPU_REQUESTS);
      systemUs[i]!.push((cpu1.system - cpu0.system) / CPU_REQUESTS);
      usPerRequest[i]!.push((cpu1.user - cpu0.user + cpu1.system - cpu0.system) / CPU_REQUESTS);
      rps[i]!.push((CPU_REQUESTS * 1000) / ms);
      calls[i]!.push(served / CPU_REQUESTS);
    }
  }
  const FLOOR = 1;
  const ratios = contenders.map((_, i) => usPerRequest[i]!.map((us, r) => us / usPerRequest[FLOOR]![r]!));
  console.log(
    `\n### CPU per proxied request, miss path: ${CPU_REQUESTS.toLocaleString('en')} distinct deterministic chat ` +
      `completions per round (each a cache miss that goes upstream), ${CPU_CONNECTIONS} connections, instant ` +
      `upstream in its own process, ${CPU_ROUNDS} rounds after ${CPU_WARMUP_ROUNDS} untimed ones (median)\n`,
  );
  console.log(
    '| contender, in its own process | CPU µs / request | user | system | ÷ floor | req/s | upstream calls / request |',
  );
  console.log('|---|---:|---:|---:|---:|---:|---:|');
  contenders.forEach((c, i) => {
    console.log(
      `| ${c.name} | ${median(usPerRequest[i]!).toFixed(1)} | ${median(userUs[i]!).toFixed(1)} | ` +
        `${median(systemUs[i]!).toFixed(1)} | ${median(ratios[i]!).toFixed(2)}x | ${Math.round(median(rps[i]!))} | ` +
        `${median(calls[i]!).toFixed(2)} |`,
    );
  });
  console.log('\nPer round (gateway, floor, Portkey): CPU µs / request, ratios to the floor, req/s:\n');
  for (let r = 0; r < CPU_ROUNDS; r++) {
    console.log(
      `- round ${r + 1}: ${contenders.map((_, i) => usPerRequest[i]![r]!.toFixed(1)).join(', ')} µs; ` +
        `gateway ${ratios[0]![r]!.toFixed(2)}x, Portkey ${ratios[2]![r]!.toFixed(2)}x; ` +
        `${contenders.map((_, i) => Math.round(rps[i]![r]!)).join(', ')} req/s`,
    );
  }
  await Promise.all(pools.map((p) => p.close()));
  await floor.stop();
  gatewayChild.disconnect();
  await once(gatewayChild, 'exit');
}

/** The cached requests of sections 1 and 6. */
const EMBED = { model: 'local-embed', input: 'hello' };
const CHAT = {
  model: 'bench-chat',
  temperature: 0,
  messages: [{ role: 'user', content: 'cached question' }],
};

/** Rounds of the cached-apart section: untimed ones first, all interleaved alike, each this long. */
const APART_WARMUP_ROUNDS = 2;
const APART_ROUNDS = 6;
const APART_SECONDS = 4;

/** POSTs `body` as JSON; resolves with the answer's text and its cache and content-type headers. */
async function postJson(url: string, body: unknown) {
  const r = await request(url, {
    method: 'POST',
    body: JSON.stringify(body),
    headers: { 'content-type': 'application/json' },
  });
  const text = await r.body.text();
  if (r.statusCode !== 200) throw new Error(`${url}: ${r.statusCode} ${text}`);
  return { text, cache: r.headers['x-clawperf-cache'], contentType: r.headers['content-type'] };
}

/**
 * Cached answers with the bare Fastify route and the gateway each in a process of its own: autocannon at 16
 * connections against one contender at a time, rounds interleaved in a rotating order, and the CPU time the
 * server process spends per request it completed.
 */
async function cachedApart(upstream: BenchProcess): Promise<void> {
  const self = fileURLToPath(import.meta.url);
  const options = { execArgv: ['--import', 'tsx', ...CPU_PROBE], stdio: 'inherit' as const };
  const gatewayChild = fork(self, ['serve-cached', String(upstream.port)], options);
  const [gatewayPort] = (await once(gatewayChild, 'message')) as [number];
  const gateway = `http://127.0.0.1:${gatewayPort}`;
  // The first request of each is a miss that goes upstream and fills the cache; the second must be a hit.
  await postJson(`${gateway}/v1/embeddings`, EMBED);
  await postJson(`${gateway}/v1/chat/completions`, CHAT);
  const embedHit = await postJson(`${gateway}/v1/embeddings`, EMBED);
  const chatHit = await postJson(`${gateway}/v1/chat/completions`, CHAT);
  if (embedHit.cache !== 'hit' || chatHit.cache !== 'hit')
    throw new Error(`cached-apart: warmed gateway answered ${embedHit.cache} and ${chatHit.cache}`);
  const bareChild = fork(self, ['serve-bare'], options);
  await once(bareChild, 'message');
  bareChild.send({ answer: embedHit.text });
  const [barePort] = (await once(bareChild, 'message')) as [number];
  const bare = `http://127.0.0.1:${barePort}`;
  const nodeChild = fork(self, ['serve-bare', 'node'], options);
  await once(nodeChild, 'message');
  nodeChild.send({ answer: embedHit.text });
  const [nodePort] = (await once(nodeChild, 'message')) as [number];
  const node = `http://127.0.0.1:${nodePort}`;
  for (const url of [bare, node]) {
    const bareAnswer = await postJson(`${url}/v1/embeddings`, EMBED);
    if (bareAnswer.text !== embedHit.text || bareAnswer.contentType !== embedHit.contentType)
      throw new Error(`cached-apart: ${url} does not answer the bytes of the cached embedding`);
  }
  const contenders = [
    {
      label: 'bare Fastify route, same JSON, own process (limit)',
      short: 'bare',
      url: `${bare}/v1/embeddings`,
      body: EMBED as unknown,
      child: bareChild,
      gateway: false,
    },
    {
      label: 'clawperf gateway, cached `/v1/embeddings` (1 input), own process',
      short: 'embeddings',
      url: `${gateway}/v1/embeddings`,
      body: EMBED,
      child: gatewayChild,
      gateway: true,
    },
    {
      label: 'clawperf gateway, cached deterministic `/v1/chat/completions`, own process',
      short: 'chat',
      url: `${gateway}/v1/chat/completions`,
      body: CHAT,
      child: gatewayChild,
      gateway: true,
    },
    {
      label: 'bare node:http handler, same JSON, own process (no framework)',
      short: 'node',
      url: `${node}/v1/embeddings`,
      body: EMBED,
      child: nodeChild,
      gateway: false,
    },
  ];
  /** One round against contender `i`: req/s, and CPU µs (user, system) per completed request. */
  const round = async (i: number) => {
    const c = contenders[i]!;
    // One answer per round proves the round is served from the cache; it is sent before the CPU is read.
    if (c.gateway) {
      const check = await postJson(c.url, c.body);
      if (check.cache !== 'hit') throw new Error(`${c.label}: x-clawperf-cache ${check.cache}`);
    }
    const cpu0 = await cpuOf(c.child);
    const t0 = performance.now();
    const result = await autocannon({
      url: c.url,
      method: 'POST',
      connections: 16,
      duration: APART_SECONDS,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(c.body),
    });
    const ms = performance.now() - t0;
    const cpu1 = await cpuOf(c.child);
    if (result.non2xx > 0 || result.errors > 0)
      throw new Error(`${c.label}: ${result.non2xx} non-2xx, ${result.errors} errors`);
    const done = result.requests.total;
    const user = (cpu1.user - cpu0.user) / done;
    const system = (cpu1.system - cpu0.system) / done;
    return {
      rps: result.requests.average,
      done,
      user,
      system,
      us: user + system,
      cores: ((user + system) * done) / (ms * 1000),
    };
  };
  const figures: Awaited<ReturnType<typeof round>>[][] = contenders.map(() => []);
  const orders: string[] = [];
  const loads: number[] = [];
  for (let r = 0; r < APART_WARMUP_ROUNDS + APART_ROUNDS; r++) {
    const order = contenders.map((_, k) => (k + r) % contenders.length);
    for (const i of order) {
      const f = await round(i);
      if (r >= APART_WARMUP_ROUNDS) figures[i]!.push(f);
    }
    if (r >= APART_WARMUP_ROUNDS) {
      orders.push(order.map((i) => contenders[i]!.short).join(', '));
      loads.push(loadavg()[0]!);
    }
  }
  const BARE = 0;
  const rpsRatios = contenders.map((_, i) => figures[i]!.map((f, r) => f.rps / figures[BARE]![r]!.rps));
  const cpuRatios = contenders.map((_, i) => figures[i]!.map((f, r) => figures[BARE]![r]!.us / f.us));
  const med = (i: number, key: 'rps' | 'us' | 'user' | 'system' | 'cores') =>
    median(figures[i]!.map((f) => f[key]));
  console.log(
    `\n### Cached answers, each server in its own process, autocannon, 16 connections, ${APART_ROUNDS} rounds ` +
      `of ${APART_SECONDS} s after ${APART_WARMUP_ROUNDS} untimed ones, rotating order (median; each ratio the median of the rounds' ratios)\n`,
  );
  console.log(
    '| contender | req/s | ÷ bare (req/s) | server CPU µs / request | user | system | bare CPU ÷ this | server cores busy |',
  );
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|');
  contenders.forEach((c, i) => {
    console.log(
      `| ${c.label} | ${Math.round(med(i, 'rps'))} | ${median(rpsRatios[i]!).toFixed(2)}x | ${med(i, 'us').toFixed(1)} | ` +
        `${med(i, 'user').toFixed(1)} | ${med(i, 'system').toFixed(1)} | ${median(cpuRatios[i]!).toFixed(2)}x | ` +
        `${med(i, 'cores').toFixed(2)} |`,
    );
  });
  console.log(
    '\nPer round (bare, gateway embeddings, gateway chat, node:http): req/s, ratios to bare; server CPU µs / ' +
      'request, bare ÷ this; requests completed; 1-minute load average after the round:\n',
  );
  for (let r = 0; r < APART_ROUNDS; r++) {
    const all = (pick: (f: Awaited<ReturnType<typeof round>>) => string) =>
      contenders.map((_, i) => pick(figures[i]![r]!)).join(' / ');
    console.log(
      `- round ${r + 1} (${orders[r]}): ${all((f) => String(Math.round(f.rps)))} req/s ` +
        `(${[1, 2, 3].map((i) => `${rpsRatios[i]![r]!.toFixed(2)}x`).join(', ')}); ` +
        `${all((f) => f.us.toFixed(1))} µs (${[1, 2, 3].map((i) => `${cpuRatios[i]![r]!.toFixed(2)}x`).join(', ')}); ` +
        `${all((f) => String(f.done))} requests; load ${loads[r]!.toFixed(2)}`,
    );
  }
  for (const child of [bareChild, nodeChild, gatewayChild]) {
    child.disconnect();
    if (child.exitCode === null) await once(child, 'exit');
  }
}

async function main(): Promise<void> {
  const fast = await startProcess('upstream', 0);
  if (only?.every((section) => section === 'cpu' || section === 'cached-apart')) {
    // These two sections alone need no other gateway, upstream or proxy running beside them.
    if (wanted('cached-apart')) await cachedApart(fast);
    if (wanted('cpu')) {
      const portkey = await startPortkey(`http://127.0.0.1:${fast.port}`);
      await cpuPerRequest(fast, portkey);
      await portkey.stop();
    }
    await fast.stop();
    return;
  }
  const slow = await startProcess('upstream', SLOW_UPSTREAM_MS);
  const proxies = [await startProcess('proxy', fast.port), await startProcess('proxy', slow.port)];
  const child: ChildProcess = fork(
    new URL(import.meta.url).pathname,
    ['serve', String(fast.port), String(slow.port)],
    { execArgv: ['--import', 'tsx'], stdio: 'inherit' },
  );
  const [served] = (await once(child, 'message')) as [Ports];
  const ports: Ports = { ...served, proxy: proxies[0]!.port, slowProxy: proxies[1]!.port };
  const gateway = `http://127.0.0.1:${ports.gateway}`;
  const memoryOnly = `http://127.0.0.1:${ports.memoryOnly}`;
  const bare = `http://127.0.0.1:${ports.bare}`;
  const upstream = `http://127.0.0.1:${ports.upstream}`;
  const embed = EMBED;
  const chat = CHAT;
  await request(`${gateway}/v1/chat/completions`, {
    method: 'POST',
    body: JSON.stringify(chat),
    headers: { 'content-type': 'application/json' },
  }).then((r) => r.body.dump());

  if (wanted('cached')) {
    const rows: Record<string, number[]> = { bare: [], embed: [], chat: [] };
    await cannon(`${bare}/v1/embeddings`, embed);
    await cannon(`${gateway}/v1/embeddings`, embed);
    for (let round = 0; round < 3; round++) {
      rows.embed!.push(await cannon(`${gateway}/v1/embeddings`, embed));
      rows.chat!.push(await cannon(`${gateway}/v1/chat/completions`, chat));
      rows.bare!.push(await cannon(`${bare}/v1/embeddings`, embed));
    }
    rpsTable(
      'Cached answers',
      'bare Fastify',
      rows,
      [
        ['clawperf gateway, cached /v1/embeddings (1 input)', 'embed'],
        ['clawperf gateway, cached deterministic /v1/chat/completions', 'chat'],
        ['bare Fastify route, same JSON (limit)', 'bare'],
      ],
      'bare',
    );
  }

  if (wanted('cached-apart')) await cachedApart(fast);

  const portkey = await startPortkey(upstream);
  if (wanted('peer')) {
    const bypass = { 'x-clawperf-cache': 'bypass' };
    const peerRows: Record<string, number[]> = { clawperf: [], portkey: [], direct: [] };
    await cannon(`${portkey.url}/v1/chat/completions`, chat, portkey.headers);
    for (let round = 0; round < 3; round++) {
      peerRows.clawperf!.push(await cannon(`${gateway}/v1/chat/completions`, chat, bypass));
      peerRows.portkey!.push(await cannon(`${portkey.url}/v1/chat/completions`, chat, portkey.headers));
      peerRows.direct!.push(await cannon(`${upstream}/v1/chat/completions`, chat));
    }
    rpsTable(
      'Proxied chat completions (no cache) against Portkey',
      'clawperf',
      peerRows,
      [
        ['clawperf gateway, x-clawperf-cache: bypass', 'clawperf'],
        ['Portkey gateway 1.15.2 (--headless)', 'portkey'],
        ['the upstream called directly (limit)', 'direct'],
      ],
      'clawperf',
    );
  }

  const agent = new Agent({ connections: 32 });
  let n = 0;
  const post = (url: string, body: unknown) =>
    request(url, {
      method: 'POST',
      body: JSON.stringify(body),
      headers: { 'content-type': 'application/json' },
      dispatcher: agent,
    }).then((r) => {
      if (r.statusCode !== 200) throw new Error(`${url}: ${r.statusCode}`);
      return r.body.dump();
    });
  const overhead = async (
    label: string,
    to: { gateway: string; memoryOnly: string; proxy: string; upstream: string },
  ) => {
    const portkeyHeaders = { ...portkey.headers, 'x-portkey-custom-host': `${to.upstream}/v1` };
    for (const concurrency of [1, 16]) {
      const results = await compare(
        {
          title: `Cache miss overhead, ${label}, ${concurrency} connection(s)`,
          concurrency,
          latency: true,
          rounds: 5,
          roundMs: to.upstream === upstream ? 1000 : 2000,
        },
        [
          {
            name: 'through the gateway: deterministic chat, cache miss',
            op: () =>
              post(`${to.gateway}/v1/chat/completions`, {
                ...chat,
                messages: [{ role: 'user', content: `miss ${n++}` }],
              }),
          },
          {
            name: 'through the gateway without disk cache: cache miss',
            op: () =>
              post(`${to.memoryOnly}/v1/chat/completions`, {
                ...chat,
                messages: [{ role: 'user', content: `miss ${n++}` }],
              }),
          },
          {
            name: 'through the gateway: x-clawperf-cache bypass',
            op: () =>
              request(`${to.gateway}/v1/chat/completions`, {
                method: 'POST',
                body: JSON.stringify(chat),
                headers: { 'content-type': 'application/json', 'x-clawperf-cache': 'bypass' },
                dispatcher: agent,
              }).then((r) => r.body.dump()),
          },
          {
            name: 'Portkey gateway 1.15.2 (--headless), same request',
            op: () =>
              request(`${portkey.url}/v1/chat/completions`, {
                method: 'POST',
                body: JSON.stringify(chat),
                headers: { 'content-type': 'application/json', ...portkeyHeaders },
                dispatcher: agent,
              }).then((r) => {
                if (r.statusCode !== 200) throw new Error(`Portkey: ${r.statusCode}`);
                return r.body.dump();
              }),
          },
          {
            name: 'thinnest proxy process: node:http + undici, nothing else (limit for any gateway)',
            op: () => post(`${to.proxy}/v1/chat/completions`, chat),
          },
          {
            name: 'the upstream called directly (limit)',
            op: () => post(`${to.upstream}/v1/chat/completions`, chat),
          },
        ],
      );
      const direct = results[5]!;
      console.log(`\nAdded latency, ${label}, ${concurrency} connection(s), gateway minus direct:\n`);
      console.log('| path | p50 added (ms) | p99 added (ms) |');
      console.log('|---|---:|---:|');
      for (const r of results.slice(0, 5)) {
        console.log(
          `| ${r.name} | ${(((r.p50Us ?? 0) - (direct.p50Us ?? 0)) / 1000).toFixed(3)} | ${(((r.p99Us ?? 0) - (direct.p99Us ?? 0)) / 1000).toFixed(3)} |`,
        );
      }
    }
  };
  if (wanted('overhead')) {
    await overhead('upstream answering at once', {
      gateway,
      memoryOnly,
      proxy: `http://127.0.0.1:${ports.proxy}`,
      upstream,
    });
    await overhead(`upstream answering after ${SLOW_UPSTREAM_MS} ms`, {
      gateway: `http://127.0.0.1:${ports.slowGateway}`,
      memoryOnly: `http://127.0.0.1:${ports.slowMemoryOnly}`,
      proxy: `http://127.0.0.1:${ports.slowProxy}`,
      upstream: `http://127.0.0.1:${ports.slowUpstream}`,
    });
  }
  if (wanted('burst')) await burst(child, gateway);
  if (wanted('cpu')) await cpuPerRequest(fast, portkey);
  await agent.close();
  await portkey.stop();
  child.disconnect();
  await once(child, 'exit');
  for (const p of [...proxies, fast, slow]) await p.stop();
}

if (process.argv[2] === 'serve') await serve();
else if (process.argv[2] === 'serve-cpu') await serveCpu();
else if (process.argv[2] === 'serve-cached') await serveCached();
else if (process.argv[2] === 'serve-bare') await serveBare();
else await main();
