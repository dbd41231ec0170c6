/**
 * Observability costs: what tracking costs a hot path, and what a scrape of 10,000 series costs the
 * process. (Tracing's costs are in bench/tracing.ts.)
 *
 * 1. A MultiLevelCache L1 hit, with the cache `track()`ed by a collector vs not tracked at all, vs the same path updating a prom-client Counter on every hit (what a
 *    user would write without `track()`). The tracked contender is scraped after each round and the
 *    exported counter checked against the hits, so the tracking is real.
 * 2. An HTTP scrape of 10,000 series (10 tracked components of 1,000 fields) from PrometheusExporter, plain
 *    and gzipped, and from prom-client serving the same series directly (a Gauge per field read in
 *    collect()); with the event-loop delay each causes (monitorEventLoopDelay during the rounds) next to the
 *    delay a trivial page shows on the same machine at the same time.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { Agent, createServer, get, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type IntervalHistogram, monitorEventLoopDelay } from 'node:perf_hooks';
import { Counter, Gauge, Registry } from 'prom-client';
import { MultiLevelCache } from '../src/cache/index.ts';
import { MetricsCollector, PrometheusExporter } from '../src/metrics/index.ts';
import { compare } from './harness.ts';

const keys = Array.from({ length: 100 }, (_, i) => `k${i}`);

// --- 1. hot path ---------------------------------------------------------------------------------------
async function filledCache(): Promise<MultiLevelCache<string>> {
  const cache = new MultiLevelCache<string>({ disk: false });
  for (const key of keys) await cache.set(key, `value of ${key}`);
  return cache;
}
const collector = new MetricsCollector({ intervalMs: 0 });
const tracked = await filledCache();
collector.track('cache', tracked);
const untracked = await filledCache();
const promRegistry = new Registry();
const promHits = new Counter({ name: 'bench_cache_hits_total', help: 'hits', registers: [promRegistry] });
const promCache = await filledCache();

let i = 0;
await compare(
  { title: 'Cache hit hot path: tracked vs not tracked vs a prom-client Counter per hit', rounds: 9 },
  [
    {
      name: 'clawperf track()ed (read at scrape time)',
      op: () => tracked.get(keys[i++ % 100]!),
      afterRound: async () => {
        const text = await collector.scrape();
        assert.match(text, /^clawperf_cache_l1_hits_total [1-9]\d*$/m);
      },
    },
    { name: 'not tracked (floor)', op: () => untracked.get(keys[i++ % 100]!) },
    {
      name: 'prom-client Counter.inc() per hit',
      op: async () => {
        const value = await promCache.get(keys[i++ % 100]!);
        if (value !== undefined) promHits.inc();
        return value;
      },
    },
  ],
);
await collector.close();
await Promise.all([tracked.close(), untracked.close(), promCache.close()]);

// --- 2. scrape of 10,000 series --------------------------------------------------------------------------
const big = new MetricsCollector({ intervalMs: 0, maxSeries: 1_000 });
// The same 10,000 series served by prom-client directly: one Gauge per field, read in collect().
const peer = new Registry();
for (let c = 0; c < 10; c++) {
  const fields: Record<string, number> = {};
  for (let f = 0; f < 1_000; f++) fields[`field_${f}`] = f * c;
  const component = { stats: () => fields };
  big.track(`component_${c}`, component);
  for (let f = 0; f < 1_000; f++) {
    const gauge: Gauge = new Gauge({
      name: `peer_component_${c}_field_${f}`,
      help: `component_${c}.stats().field_${f}`,
      registers: [peer],
      collect: () => gauge.set(component.stats()[`field_${f}`]!),
    });
  }
}
const exporter = new PrometheusExporter({ collector: big, port: 0, host: '127.0.0.1' });
const { port } = await exporter.listen();
const series = (await big.scrape()).split('\n').filter((l) => l !== '' && !l.startsWith('#')).length;
assert.ok(series >= 10_000, `${series} series`);

// The peer's /metrics page, and a trivial page for the noise floor, served the same way.
const serve = async (handler: (res: ServerResponse) => Promise<void> | void) => {
  const server = createServer((_req, res) => void handler(res));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/metrics` };
};
const peerPage = await serve(async (res) => {
  const text = await peer.metrics();
  res.writeHead(200, { 'content-type': peer.contentType }).end(text);
});
const floorPage = await serve((res) => void res.end('ok\n'));

// Each op is a scrape over HTTP, as Prometheus makes it, so the event loop turns between scrapes the way it
// does in production; the delay histogram then shows the longest stretch one scrape holds the loop.
const agent = new Agent({ keepAlive: true, maxSockets: 1 });
// The client discards the body unparsed, so the figures are the server's (Prometheus is another process).
const scrape =
  (url: string, encoding = 'identity') =>
  () =>
    new Promise<void>((resolve, reject) => {
      get(url, { agent, headers: { 'accept-encoding': encoding } }, (res) => {
        res.on('end', resolve).on('error', reject).resume();
      }).on('error', reject);
    });
const delays = new Map<string, { hist: IntervalHistogram; p99Ms: number[]; maxMs: number[] }>();
const watch = (name: string) => ({
  name,
  beforeRound: () => {
    const entry = delays.get(name) ?? {
      hist: monitorEventLoopDelay({ resolution: 1 }),
      p99Ms: [],
      maxMs: [],
    };
    delays.set(name, entry);
    entry.hist.reset();
    entry.hist.enable();
  },
  afterRound: () => {
    const entry = delays.get(name)!;
    entry.hist.disable();
    entry.p99Ms.push(entry.hist.percentile(99) / 1e6);
    entry.maxMs.push(entry.hist.max / 1e6);
  },
});
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1] ?? 0;
const url = `http://127.0.0.1:${port}/metrics`;
await compare(
  {
    title: `HTTP scrape of ${series.toLocaleString('en-US')} series`,
    rounds: 5,
    roundMs: 2_000,
    warmupMs: 1_000,
    latency: true,
  },
  [
    { op: scrape(url), ...watch('clawperf PrometheusExporter') },
    { op: scrape(url, 'gzip'), ...watch('clawperf PrometheusExporter, gzip') },
    { op: scrape(peerPage.url), ...watch('prom-client registry.metrics(), a collect() Gauge per field') },
    { op: scrape(floorPage.url), ...watch('a 3-byte page (noise floor of this machine)') },
  ],
);

console.log('\n| contender | event-loop delay p99 (ms) | event-loop delay max (ms) |\n|---|---:|---:|');
for (const [name, d] of delays) {
  console.log(`| ${name} | ${median(d.p99Ms).toFixed(1)} | ${median(d.maxMs).toFixed(1)} |`);
}
agent.destroy();
peerPage.server.close();
floorPage.server.close();
await exporter.close();
await big.close();
