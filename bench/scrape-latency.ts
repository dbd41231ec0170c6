/**
 * What a `/metrics` scrape costs the requests running during it, on a real gateway holding 10,000 series.
 *
 * The gateway runs alone in its own process with 200 API keys (200 tenants) and prices for 5 models. Before
 * the timed rounds every tenant asks every model one question twice (a miss through to an instant upstream,
 * then a cached answer), so the gateway's per-tenant series are the ones a real deployment of that shape
 * has: requests by outcome, tokens, tokens saved, spend and savings for each tenant and model.
 *
 * Then, in interleaved rounds, cached answers are asked at a fixed rate (an open loop: a request is sent on
 * schedule whether or not the earlier ones have been answered, so a stalled event loop delays every request
 * due during the stall, as it would real traffic), each answer's latency going into a perf_hooks histogram.
 * In every other round a scraper also asks for `/metrics` every 250 ms, as Prometheus 2.x asks (OpenMetrics,
 * gzip), and the requests in flight at any moment a scrape was are kept apart. What a scrape adds is their
 * median-of-rounds p50 and p99 less those of the rounds without scrapes. The gateway process reports its own
 * event-loop delay (monitorEventLoopDelay) and CPU time for each round; the CPU a scrape costs is the
 * difference between paired rounds, per scrape.
 *
 * `SCRAPE_BENCH_COMPARE=<dir>[,<dir>...]` also runs the gateways of other source trees (an earlier commit's
 * `git archive`, with node_modules linked), each in its own process, in the same interleaved rounds.
 * `SCRAPE_BENCH_PROF=<dir>` runs the gateway processes under `--cpu-prof` into that directory.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { join, resolve } from 'node:path';
import { createHistogram, monitorEventLoopDelay, type RecordableHistogram } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Client, Pool } from 'undici';
import { ask, startProcess } from './fixtures/processes.ts';

const TENANTS = 200;
const MODELS = 5;
/** Cached answers asked per second during every round. */
const RATE = 1_000;
const ROUNDS = 8;
const WARMUP_ROUNDS = 2;
const ROUND_MS = 3_000;
/** A scrape starts this often during a scraped round (each takes tens of ms). */
const SCRAPE_EVERY_MS = 250;
/** What Prometheus 2.x sends. */
const SCRAPE_HEADERS = {
  accept:
    'application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1',
  'accept-encoding': 'gzip',
};

const keyOf = (t: number) => `bench-key-${t}`;
const modelOf = (m: number) => `bench-model-${m}`;

/**
 * `serve <source tree> <upstream port>`: the gateway of that tree alone in its process, reporting its
 * event-loop delay and CPU time over IPC.
 */
async function serve(): Promise<void> {
  const root = process.argv[3]!;
  const server: typeof import('../src/gateway/server.ts') = await import(
    pathToFileURL(join(root, 'src/gateway/server.ts')).href
  );
  const { createGateway, LISTEN_BACKLOG } = server;
  const upstreamPort = Number(process.argv[4]);
  const apiKeys: Record<string, string> = {};
  for (let t = 0; t < TENANTS; t++) apiKeys[keyOf(t)] = `tenant-${t}`;
  const prices: Record<string, { input: number; output: number }> = {};
  for (let m = 0; m < MODELS; m++) prices[modelOf(m)] = { input: 1 + m, output: 4 + m };
  const g = await createGateway({
    cacheDir: false,
    limits: undefined,
    redisUrl: undefined,
    apiKeys,
    prices,
    upstreamUrl: `http://127.0.0.1:${upstreamPort}/v1`,
    logLevel: 'warn',
  });
  await g.app.listen({ port: 0, host: '127.0.0.1', backlog: LISTEN_BACKLOG });
  const loop = monitorEventLoopDelay({ resolution: 1 });
  let cpu = process.cpuUsage();
  process.on('message', (message) => {
    if (message === 'start') {
      loop.reset();
      loop.enable();
      cpu = process.cpuUsage();
      process.send?.({ started: true });
    } else if (message === 'stop') {
      loop.disable();
      const used = process.cpuUsage(cpu);
      process.send?.({
        loop: {
          p99Ms: loop.percentile(99) / 1e6,
          maxMs: loop.max / 1e6,
          cpuMs: (used.user + used.system) / 1e3,
        },
      });
    }
  });
  process.send?.((g.app.server.address() as AddressInfo).port);
  process.once('disconnect', async () => {
    await g.close();
    process.exit(0);
  });
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

interface RoundFigures {
  /** Requests in flight while a scrape was. */
  during: { p50Ms: number; p99Ms: number } | undefined;
  /** The other requests. */
  others: { p50Ms: number; p99Ms: number } | undefined;
  /** CPU time of the gateway process over the round. */
  cpuMs: number;
  loopP99Ms: number;
  loopMaxMs: number;
  scrapes: number;
  scrapeP50Ms: number;
}

interface Gateway {
  name: string;
  child: ChildProcess;
  pool: Pool;
  scraper: Client;
  series: number;
  tenantSeries: number;
  none: RoundFigures[];
  scraped: RoundFigures[];
}

/** Starts the gateway of the source tree at `root` in its own process and gives it its 13,000 series. */
async function startGateway(root: string, name: string, upstreamPort: number): Promise<Gateway> {
  const profDir = process.env.SCRAPE_BENCH_PROF;
  const child: ChildProcess = fork(fileURLToPath(import.meta.url), ['serve', root, String(upstreamPort)], {
    execArgv: ['--import', 'tsx', ...(profDir ? ['--cpu-prof', '--cpu-prof-dir', profDir] : [])],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const [port] = (await once(child, 'message')) as [number];
  const base = `http://127.0.0.1:${port}`;
  const g: Gateway = {
    name,
    child,
    pool: new Pool(base, { connections: 32 }),
    scraper: new Client(base),
    series: 0,
    tenantSeries: 0,
    none: [],
    scraped: [],
  };
  // Every tenant asks every model one question twice: a miss, then the cached answer.
  for (const expect of ['miss', 'hit'] as const) {
    for (let t = 0; t < TENANTS; t += 20) {
      const asks: Promise<void>[] = [];
      for (let u = t; u < t + 20; u++) for (let m = 0; m < MODELS; m++) asks.push(chat(g, u, m, expect));
      await Promise.all(asks);
    }
  }
  const page = await g.scraper.request({ path: '/metrics', method: 'GET' });
  const lines = (await page.body.text()).split('\n');
  g.series = lines.filter((l) => l !== '' && !l.startsWith('#')).length;
  g.tenantSeries = lines.filter((l) => l.includes('tenant="tenant-')).length;
  if (g.tenantSeries < 10_000) throw new Error(`${name}: only ${g.tenantSeries} per-tenant series`);
  return g;
}

async function chat(g: Gateway, t: number, m: number, expect: 'hit' | 'miss'): Promise<void> {
  const r = await g.pool.request({
    path: '/v1/chat/completions',
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${keyOf(t)}` },
    body: JSON.stringify({
      model: modelOf(m),
      temperature: 0,
      messages: [{ role: 'user', content: `tenant ${t} asks model ${m}` }],
    }),
  });
  await r.body.dump();
  if (r.statusCode !== 200) throw new Error(`${g.name}: chat: HTTP ${r.statusCode}`);
  if (r.headers['x-clawperf-cache'] !== expect) {
    throw new Error(`${g.name}: expected a ${expect}, got ${String(r.headers['x-clawperf-cache'])}`);
  }
}

/** One scrape as Prometheus 2.x makes it; resolves with its duration, ms. */
async function scrape(g: Gateway): Promise<number> {
  const t0 = performance.now();
  const r = await g.scraper.request({ path: '/metrics', method: 'GET', headers: SCRAPE_HEADERS });
  await r.body.dump({ limit: Number.POSITIVE_INFINITY });
  if (r.statusCode !== 200) throw new Error(`${g.name}: /metrics: HTTP ${r.statusCode}`);
  if (r.headers['content-encoding'] !== 'gzip') throw new Error(`${g.name}: /metrics: not gzipped`);
  return performance.now() - t0;
}

async function main(): Promise<void> {
  const upstream = await startProcess('upstream', 0);
  const here = fileURLToPath(new URL('..', import.meta.url));
  const others = (process.env.SCRAPE_BENCH_COMPARE ?? '').split(',').filter((d) => d !== '');
  const gateways: Gateway[] = [];
  gateways.push(await startGateway(here, 'this tree', upstream.port));
  for (const root of others) gateways.push(await startGateway(resolve(root), root, upstream.port));

  /**
   * One round: cached answers at `RATE`/s for `ROUND_MS`, and when `scraping`, a scrape every
   * `SCRAPE_EVERY_MS`. A request that was in flight at any moment a scrape was goes into `during`.
   */
  const round = async (g: Gateway, scraping: boolean): Promise<RoundFigures> => {
    await ask(g.child, 'start', 'started');
    const during = createHistogram();
    const others = createHistogram();
    const scrapeMs: number[] = [];
    let scrapesInFlight = 0;
    /** Counts scrape starts and ends: a request that sees it change overlapped a scrape. */
    let scrapeEdges = 0;
    const scrapeTimer = scraping
      ? setInterval(() => {
          scrapesInFlight++;
          scrapeEdges++;
          scrape(g).then((ms) => {
            scrapeMs.push(ms);
            scrapesInFlight--;
            scrapeEdges++;
          }, fail);
        }, SCRAPE_EVERY_MS)
      : undefined;
    const inFlight = new Set<Promise<void>>();
    let failure: unknown;
    function fail(error: unknown) {
      failure ??= error;
    }
    const started = performance.now();
    let sent = 0;
    await new Promise<void>((resolve) => {
      const timer = setInterval(() => {
        const now = performance.now();
        const due = Math.min(Math.floor(((now - started) * RATE) / 1e3), (ROUND_MS * RATE) / 1e3);
        for (; sent < due; sent++) {
          const t0 = performance.now();
          const overlapped = scrapesInFlight > 0;
          const edges = scrapeEdges;
          const p = chat(g, 0, 0, 'hit').then(() => {
            const us = Math.max(1, Math.round((performance.now() - t0) * 1e3));
            (overlapped || edges !== scrapeEdges ? during : others).record(us);
            inFlight.delete(p);
          }, fail);
          inFlight.add(p);
        }
        if (now - started >= ROUND_MS) {
          clearInterval(timer);
          clearInterval(scrapeTimer);
          resolve();
        }
      }, 1);
    });
    await Promise.all(inFlight);
    while (scrapesInFlight > 0) await new Promise((r) => setTimeout(r, 5));
    if (failure !== undefined) throw failure;
    const figures = await ask<{ p99Ms: number; maxMs: number; cpuMs: number }>(g.child, 'stop', 'loop');
    const of = (h: RecordableHistogram) =>
      h.count > 0 ? { p50Ms: h.percentile(50) / 1e3, p99Ms: h.percentile(99) / 1e3 } : undefined;
    return {
      during: of(during),
      others: of(others),
      loopP99Ms: figures.p99Ms,
      loopMaxMs: figures.maxMs,
      cpuMs: figures.cpuMs,
      scrapes: scrapeMs.length,
      scrapeP50Ms: scrapeMs.length > 0 ? median(scrapeMs) : 0,
    };
  };

  for (let r = 0; r < WARMUP_ROUNDS + ROUNDS; r++) {
    // Each gateway in turn, a different one first each time; each kind first in every other pair of rounds.
    for (let i = 0; i < gateways.length; i++) {
      const g = gateways[(r + i) % gateways.length]!;
      for (const scraping of r % 2 === 0 ? [false, true] : [true, false]) {
        const figures = await round(g, scraping);
        if (r >= WARMUP_ROUNDS) (scraping ? g.scraped : g.none).push(figures);
      }
    }
  }

  const med = (rounds: RoundFigures[], f: (x: RoundFigures) => number | undefined) =>
    median(rounds.map(f).filter((x): x is number => x !== undefined));
  const first = gateways[0]!;
  console.log(
    `\n### Cached chat answers at ${RATE.toLocaleString('en')}/s (open loop) on a gateway holding ` +
      `${first.series.toLocaleString('en')} series (${first.tenantSeries.toLocaleString('en')} of them for ${TENANTS} tenants x ` +
      `${MODELS} models), in rounds without scrapes and rounds with a /metrics scrape every ${SCRAPE_EVERY_MS} ms ` +
      `(OpenMetrics, gzip, as Prometheus 2.x asks): ${ROUNDS} rounds of ${ROUND_MS / 1e3} s each, interleaved, ` +
      `after ${WARMUP_ROUNDS} untimed (median of rounds)\n`,
  );
  console.log(
    '| gateway | requests | request p50 ms | request p99 ms | event-loop delay p99 ms | event-loop delay max ms |',
  );
  console.log('|---|---|---:|---:|---:|---:|');
  const row = (
    g: Gateway,
    name: string,
    rounds: RoundFigures[],
    pick: (x: RoundFigures) => RoundFigures['during'],
  ) =>
    console.log(
      `| ${g.name} | ${name} | ${med(rounds, (x) => pick(x)?.p50Ms).toFixed(2)} | ${med(rounds, (x) => pick(x)?.p99Ms).toFixed(2)} | ` +
        `${med(rounds, (x) => x.loopP99Ms).toFixed(1)} | ${med(rounds, (x) => x.loopMaxMs).toFixed(1)} |`,
    );
  for (const g of gateways) {
    row(g, 'rounds without scrapes', g.none, (x) => x.others);
    row(g, 'rounds with scrapes: in flight during a scrape', g.scraped, (x) => x.during);
    row(g, 'rounds with scrapes: the others', g.scraped, (x) => x.others);
  }
  console.log(
    '\n| gateway | series | added p50 ms | added p99 ms | scrapes / round | scrape p50 ms | CPU ms / scrape |',
  );
  console.log('|---|---:|---:|---:|---:|---:|---:|');
  for (const g of gateways) {
    const added = (f: 'p50Ms' | 'p99Ms') =>
      (med(g.scraped, (x) => x.during?.[f]) - med(g.none, (x) => x.others?.[f])).toFixed(2);
    const cpuPerScrapeMs = median(
      g.scraped.map((s, i) => (s.cpuMs - g.none[i]!.cpuMs) / Math.max(1, s.scrapes)),
    );
    console.log(
      `| ${g.name} | ${g.series.toLocaleString('en')} | ${added('p50Ms')} | ${added('p99Ms')} | ${med(g.scraped, (x) => x.scrapes)} | ` +
        `${med(g.scraped, (x) => x.scrapeP50Ms).toFixed(1)} | ${cpuPerScrapeMs.toFixed(1)} |`,
    );
  }

  for (const g of gateways) {
    await g.pool.close();
    await g.scraper.close();
    g.child.disconnect();
    await once(g.child, 'exit');
  }
  await upstream.stop();
}

if (process.argv[2] === 'serve') await serve();
else await main();
