/**
 * What an open dashboard costs the request path: the same gateway twice, each alone in its own process,
 * one with a dashboard open on it (its page loaded, and its stream of points read, a point a second with
 * the tables) and one without, rounds interleaved. Both sample their point a second, as every gateway does
 * from startup (the history a page arrives with); what an open page adds is the stream.
 *
 * Two paths, as bench/request-log.ts: a cached answer (`/v1/embeddings`, one input asked again: an L1 hit,
 * where the gateway does least) and the miss path (distinct deterministic chat completions through to an
 * instant upstream in its own process). Each gateway process reads its own `process.cpuUsage()`
 * (fixtures/cpu-probe.mjs) and reports it over IPC; each goes first in every other round. After the rounds the open page must have received a
 * point for each second it was open.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { Pool, request } from 'undici';
import { CPU_PROBE, cpuOf, startProcess } from './fixtures/processes.ts';

/** Requests per round; warm-up rounds come first, interleaved like the timed ones. */
const REQUESTS = 2_500;
const WARMUP_ROUNDS = 2;
const ROUNDS = 8;
const CONNECTIONS = 16;

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
  await g.app.listen({ port: 0, host: '127.0.0.1', backlog: LISTEN_BACKLOG });
  process.send?.((g.app.server.address() as AddressInfo).port);
  process.once('disconnect', async () => {
    await g.close();
    process.exit(0);
  });
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
  const gateways = [await start('a dashboard open'), await start('no dashboard open')];
  const dashboard = await openDashboard(gateways[0]!.base);
  let asked = 0;
  const paths = [
    {
      title: 'cached answer: `/v1/embeddings`, one input asked again (an L1 hit)',
      path: '/v1/embeddings',
      body: () => ({ model: 'local-embed', input: 'the same question' }),
      cache: 'hit',
    },
    {
      title: 'miss path: distinct deterministic chat completions through to an instant upstream',
      path: '/v1/chat/completions',
      body: () => ({
        model: 'bench-chat',
        temperature: 0,
        messages: [{ role: 'user', content: `dashboard question ${asked++}` }],
      }),
      cache: 'miss',
    },
  ];
  console.log(
    `\n### Requests/s and CPU per request of the gateway process, with and without a dashboard open: ${REQUESTS.toLocaleString('en')} ` +
      `requests per round from ${CONNECTIONS} keep-alive connections, ${ROUNDS} rounds after ${WARMUP_ROUNDS} ` +
      'untimed ones, interleaved (median)\n',
  );
  console.log('| path | gateway, in its own process | req/s | ÷ none open | CPU µs / request |');
  console.log('|---|---|---:|---:|---:|');
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
    const us = gateways.map(() => [] as number[]);
    const rps = gateways.map(() => [] as number[]);
    for (let round = 0; round < WARMUP_ROUNDS + ROUNDS; round++) {
      // Each goes first in every other round, so neither always follows the other's burst.
      for (const i of round % 2 === 0 ? [0, 1] : [1, 0]) {
        const g = gateways[i]!;
        const cpu0 = await cpuOf(g.child);
        const t0 = performance.now();
        await fire(g);
        const ms = performance.now() - t0;
        const cpu1 = await cpuOf(g.child);
        if (round < WARMUP_ROUNDS) continue;
        us[i]!.push((cpu1.user - cpu0.user + cpu1.system - cpu0.system) / REQUESTS);
        rps[i]!.push((REQUESTS * 1000) / ms);
      }
    }
    const none = median(rps[1]!);
    for (const [i, g] of gateways.entries()) {
      const r = median(rps[i]!);
      console.log(
        `| ${p.title} | ${g.name} | ${Math.round(r).toLocaleString('en')} | ${(r / none).toFixed(2)} | ${median(us[i]!).toFixed(1)} |`,
      );
    }
  }
  // Proof the dashboard was open all along: about a point for each second since it opened.
  const seconds = (performance.now() - dashboard.openedAt) / 1000;
  const points = dashboard.points();
  if (points < seconds - 3)
    throw new Error(`the open dashboard received ${points} points in ${seconds.toFixed(0)} s`);
  console.log(`\nThe open dashboard received ${points} points in ${seconds.toFixed(0)} s.`);
  dashboard.close();
  for (const g of gateways) {
    await g.pool.close();
    g.child.disconnect();
    await once(g.child, 'exit');
  }
  await upstream.stop();
}

if (process.argv[2] === 'serve') await serve();
else await main();
