/**
 * What an open dashboard costs the request path: two identical gateway processes, each alone in its own
 * process, and in each round a dashboard open on one of them (its page loaded, and its stream of points read,
 * a point a second with the tables), on the other the next round. Both sample their point a second, as every
 * gateway does from startup (the history a page arrives with); what an open page adds is the stream.
 *
 * Two identical processes on a shared machine differ by more than the dashboard can cost (a run with no
 * dashboard at all gave one 13 % fewer requests/s than the other), so each process is compared with itself:
 * its rounds with the dashboard open against its rounds without, rounds interleaved, each process first in
 * every other pair of rounds.
 *
 * Two paths, as bench/request-log.ts: a cached answer (`/v1/embeddings`, one input asked again: an L1 hit,
 * where the gateway does least) and the miss path (distinct deterministic chat completions through to an
 * instant upstream in its own process). Each gateway process reads its own `process.cpuUsage()`
 * (fixtures/cpu-probe.mjs) and reports it over IPC. The open page must receive a point for each second it
 * was open.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { Pool, request } from 'undici';
import { hitAndMissPaths } from './fixtures/gateway-paths.ts';
import { CPU_PROBE, cpuOf, startProcess } from './fixtures/processes.ts';
import { serveToParent } from './fixtures/serve-to-parent.ts';

/** Requests per round; warm-up rounds come first, interleaved like the timed ones. */
const REQUESTS = 2_500;
const WARMUP_ROUNDS = 2;
const ROUNDS = 12;
const CONNECTIONS = 16;
/** Idle spells of each kind, and their length, ms. */
const IDLE_SPELLS = 4;
const IDLE_MS = 4_000;

/** `serve <upstream port>`: one gateway alone in its process. */
async function serve(): Promise<void> {
  const { createGateway, LISTEN_BACKLOG } = await import('../src/gateway/server.ts');
  const [, , , upstreamPort] = process.argv;
  const g = await createGateway({
    cacheDir: false,
    limits: undefined,
    redisUrl: undefined,
    localChatLatencyMs: 0,
    upstreamUrl: `http://127.0.0.1:${Number(upstreamPort)}/v1`,
    logLevel: 'warn',
  });
  await serveToParent(g, LISTEN_BACKLOG);
}

interface Gateway {
  name: string;
  child: ChildProcess;
  pool: Pool;
  base: string;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

/** Opens the dashboard as a browser does: the page, then its stream; counts the points received. */
async function openDashboard(
  base: string,
): Promise<{ points: () => number; openedAt: number; close: () => void }> {
  const page = await request(`${base}/`);
  const html = await page.body.text();
  if (!html.includes('id="snapshot"')) throw new Error('the dashboard page came without its snapshot');
  const controller = new AbortController();
  const stream = await request(`${base}/dashboard/events`, { signal: controller.signal });
  let points = 0;
  // The gateway writes each point as one `data:` line in one write.
  stream.body.on('data', (chunk: Buffer) => {
    points += chunk.toString('utf8').match(/^data: /gm)?.length ?? 0;
  });
  stream.body.on('error', () => {});
  return { points: () => points, openedAt: performance.now(), close: () => controller.abort() };
}

async function main(): Promise<void> {
  const upstream = await startProcess('upstream', 0);
  const start = async (name: string): Promise<Gateway> => {
    const child = fork(fileURLToPath(import.meta.url), ['serve', String(upstream.port)], {
      execArgv: ['--import', 'tsx', ...CPU_PROBE],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const [port] = (await once(child, 'message')) as [number];
    const base = `http://127.0.0.1:${port}`;
    return { name, child, pool: new Pool(base, { connections: CONNECTIONS }), base };
  };
  const gateways = [await start('gateway A'), await start('gateway B')];
  let received = 0;
  /** Points the open pages must have had: one a second, less one per opening for the timer's phase. */
  let due = 0;
  const paths = hitAndMissPaths('dashboard');
  console.log(
    `\n### Requests/s and CPU per request of each gateway process, its rounds with a dashboard open against its rounds without: ${REQUESTS.toLocaleString('en')} ` +
      `requests per round from ${CONNECTIONS} keep-alive connections, ${ROUNDS} rounds after ${WARMUP_ROUNDS} ` +
      'untimed ones, interleaved (median)\n',
  );
  console.log('| path | gateway, in its own process | dashboard | req/s | ÷ none open | CPU µs / request |');
  console.log('|---|---|---|---:|---:|---:|');
  const send = async (g: Gateway, p: (typeof paths)[number]) => {
    const r = await g.pool.request({
      path: p.path,
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(p.body()),
    });
    await r.body.dump();
    if (r.statusCode !== 200) throw new Error(`${g.name}: HTTP ${r.statusCode}`);
    return r.headers['x-clawperf-cache'];
  };
  for (const p of paths) {
    const fire = async (g: Gateway) => {
      let left = REQUESTS;
      const loop = async () => {
        while (left > 0) {
          left--;
          const cache = await send(g, p);
          if (cache !== p.cache) throw new Error(`${g.name}: ${p.path} was a ${cache}, not a ${p.cache}`);
        }
      };
      await Promise.all(Array.from({ length: CONNECTIONS }, loop));
    };
    // The embedding is cached before any round, so every request of every round is a hit.
    if (p.cache === 'hit') for (const g of gateways) await send(g, p);
    // [gateway][open ? 1 : 0]: the rounds of each process with and without a dashboard open on it.
    const us = gateways.map(() => [[], []] as number[][]);
    const rps = gateways.map(() => [[], []] as number[][]);
    for (let round = 0; round < WARMUP_ROUNDS + ROUNDS; round++) {
      const target = round % 2;
      const dashboard = await openDashboard(gateways[target]!.base);
      // Each goes first in every other pair of rounds, so neither always follows the other's burst.
      for (const i of (round >> 1) % 2 === 0 ? [0, 1] : [1, 0]) {
        const g = gateways[i]!;
        const cpu0 = await cpuOf(g.child);
        const t0 = performance.now();
        await fire(g);
        const ms = performance.now() - t0;
        const cpu1 = await cpuOf(g.child);
        if (round < WARMUP_ROUNDS) continue;
        const open = i === target ? 1 : 0;
        us[i]![open]!.push((cpu1.user - cpu0.user + cpu1.system - cpu0.system) / REQUESTS);
        rps[i]![open]!.push((REQUESTS * 1000) / ms);
      }
      const seconds = (performance.now() - dashboard.openedAt) / 1000;
      due += Math.max(0, Math.floor(seconds) - 1);
      received += dashboard.points();
      dashboard.close();
    }
    for (const [i, g] of gateways.entries()) {
      const none = median(rps[i]![0]!);
      for (const open of [1, 0]) {
        const r = median(rps[i]![open]!);
        console.log(
          `| ${p.title} | ${g.name} | ${open ? 'open' : 'none'} | ${Math.round(r).toLocaleString('en')} | ${(r / none).toFixed(2)} | ${median(us[i]![open]!).toFixed(1)} |`,
        );
      }
    }
  }
  // What an open dashboard itself costs, with no traffic to hide it: each process's CPU over idle spells of
  // IDLE_MS with the page loaded and its stream read, against spells with none open, alternated.
  const idle = gateways.map(() => [[], []] as number[][]);
  for (let spell = 0; spell < 2 * IDLE_SPELLS; spell++) {
    const open = spell % 2;
    const cpu0 = await Promise.all(gateways.map((g) => cpuOf(g.child)));
    const dashboards = open ? await Promise.all(gateways.map((g) => openDashboard(g.base))) : [];
    await new Promise((resolve) => setTimeout(resolve, IDLE_MS));
    const cpu1 = await Promise.all(gateways.map((g) => cpuOf(g.child)));
    for (const d of dashboards) {
      received += d.points();
      due += Math.max(0, Math.floor(IDLE_MS / 1000) - 1);
      d.close();
    }
    for (const i of gateways.keys()) {
      const used = cpu1[i]!.user - cpu0[i]!.user + cpu1[i]!.system - cpu0[i]!.system;
      idle[i]![open]!.push(used / (IDLE_MS / 1000) / 1000);
    }
  }
  console.log(
    `\n### CPU of an idle gateway process, ms per second: ${IDLE_SPELLS} spells of ${IDLE_MS / 1000} s with a dashboard open (its page loaded, its stream read) and ${IDLE_SPELLS} with none, alternated (median)\n`,
  );
  console.log('| gateway, in its own process | dashboard open | none open | the open page costs |');
  console.log('|---|---:|---:|---:|');
  for (const [i, g] of gateways.entries()) {
    const on = median(idle[i]![1]!);
    const off = median(idle[i]![0]!);
    console.log(`| ${g.name} | ${on.toFixed(2)} | ${off.toFixed(2)} | ${(on - off).toFixed(2)} ms/s |`);
  }
  // Proof the dashboard was open: about a point for each second it was open (a round opens it anew).
  if (received === 0 || received < due) {
    throw new Error(`the open dashboards received ${received} points of ${due} due`);
  }
  console.log(
    `\nThe open dashboards received ${received} points; one a second they were open makes at least ${due}.`,
  );
  for (const g of gateways) {
    await g.pool.close();
    g.child.disconnect();
    await once(g.child, 'exit');
  }
  await upstream.stop();
}

if (process.argv[2] === 'serve') await serve();
else await main();
