/**
 * The live dashboard: one HTML page drawing uPlot charts (served from the installed `uplot` package) fed
 * once a second over server-sent events.
 *
 * @module
 */
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { createHistogram, monitorEventLoopDelay } from 'node:perf_hooks';

/** Interval of the dashboard's updates, ms. @default 1000 */
export const DASHBOARD_INTERVAL_MS = 1000;

interface StatsSource {
  stats(): object;
}

export interface DashboardFeedOptions {
  cache: StatsSource;
  backpressure: StatsSource;
  limiter: StatsSource | undefined;
  batcherStats: () => object;
  stats: () => { upstreamCallsSaved: number };
  intervalMs?: number;
}

/** One point of the dashboard's series. */
export interface DashboardPoint {
  /** Unix seconds. */
  t: number;
  requestRate: number;
  p50Ms: number;
  p99Ms: number;
  l1HitRate: number;
  l2HitRate: number;
  l3HitRate: number;
  upstreamCallsSaved: number;
  limiterRejections: number;
  queueDepth: number;
  eventLoopDelayMs: number;
  heapUsedMb: number;
}

const num = (o: object, key: string): number => {
  const v = (o as Record<string, unknown>)[key];
  return typeof v === 'number' && Number.isFinite(v) ? v : 0;
};

/**
 * Samples the gateway once per interval while a dashboard is open and streams each point to every open
 * page. Latency percentiles are of the `/v1/*` requests finished in that interval.
 */
export class DashboardFeed {
  readonly #o: DashboardFeedOptions;
  readonly #latency = createHistogram();
  readonly #loop = monitorEventLoopDelay({ resolution: 10 });
  readonly #clients = new Set<ServerResponse>();
  readonly #history: DashboardPoint[] = [];
  #timer: NodeJS.Timeout | undefined;
  #count = 0;
  #last: Record<string, number> = {};
  #assets: { js: string; css: string } | undefined;

  constructor(options: DashboardFeedOptions) {
    this.#o = options;
  }

  /** Records one finished API request. */
  record(durationMs: number, _status: number): void {
    this.#count++;
    this.#latency.record(Math.max(1, Math.round(durationMs * 1000)));
  }

  /** The uPlot script or stylesheet from the installed package. */
  asset(kind: 'js' | 'css'): string {
    if (this.#assets === undefined) {
      const require = createRequire(import.meta.url);
      this.#assets = {
        js: readFileSync(require.resolve('uplot/dist/uPlot.iife.min.js'), 'utf8'),
        css: readFileSync(require.resolve('uplot/dist/uPlot.min.css'), 'utf8'),
      };
    }
    return this.#assets[kind];
  }

  /** Streams points to one page until it goes away; sends the recent history first. */
  subscribe(req: IncomingMessage, res: ServerResponse): void {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-clawperf-cache': 'bypass',
    });
    res.write(`retry: 1000\n\n`);
    for (const point of this.#history) res.write(`data: ${JSON.stringify(point)}\n\n`);
    this.#clients.add(res);
    req.once('close', () => {
      this.#clients.delete(res);
      if (this.#clients.size === 0) this.#stop();
    });
    if (this.#timer === undefined) {
      this.#loop.enable();
      this.#last = this.#snapshot();
      this.#timer = setInterval(() => this.#tick(), this.#o.intervalMs ?? DASHBOARD_INTERVAL_MS);
      this.#timer.unref();
    }
  }

  #snapshot(): Record<string, number> {
    const c = this.#o.cache.stats();
    const l = this.#o.limiter?.stats() ?? {};
    return {
      l1h: num(c, 'l1_hits'),
      l1m: num(c, 'l1_misses'),
      l2h: num(c, 'l2_hits'),
      l2m: num(c, 'l2_misses'),
      l3h: num(c, 'l3_hits'),
      l3m: num(c, 'l3_misses'),
      limited: num(l, 'limited'),
    };
  }

  #tick(): void {
    const now = this.#snapshot();
    const d = (k: string) => (now[k] ?? 0) - (this.#last[k] ?? 0);
    const rate = (h: string, m: string) => (d(h) + d(m) === 0 ? 0 : d(h) / (d(h) + d(m)));
    const s = this.#o.stats();
    const point: DashboardPoint = {
      t: Math.floor(Date.now() / 1000),
      requestRate: (this.#count * 1000) / (this.#o.intervalMs ?? DASHBOARD_INTERVAL_MS),
      p50Ms: this.#count === 0 ? 0 : this.#latency.percentile(50) / 1000,
      p99Ms: this.#count === 0 ? 0 : this.#latency.percentile(99) / 1000,
      l1HitRate: rate('l1h', 'l1m'),
      l2HitRate: rate('l2h', 'l2m'),
      l3HitRate: rate('l3h', 'l3m'),
      upstreamCallsSaved: s.upstreamCallsSaved ?? 0,
      limiterRejections: now.limited ?? 0,
      queueDepth: num(this.#o.backpressure.stats(), 'queued') + num(this.#o.batcherStats(), 'queued'),
      eventLoopDelayMs: this.#loop.percentile(99) / 1e6,
      heapUsedMb: process.memoryUsage().heapUsed / 1048576,
    };
    this.#last = now;
    this.#count = 0;
    this.#latency.reset();
    this.#loop.reset();
    this.#history.push(point);
    if (this.#history.length > 300) this.#history.shift();
    const line = `data: ${JSON.stringify(point)}\n\n`;
    for (const res of this.#clients) res.write(line);
  }

  #stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#loop.disable();
  }

  /** Ends every open stream and stops sampling. */
  close(): void {
    this.#stop();
    for (const res of this.#clients) res.end();
    this.#clients.clear();
  }
}

/** The dashboard page. */
export function dashboardPage(): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>clawperf gateway</title>
<link rel="stylesheet" href="/dashboard/uplot.css">
<style>
body{font:14px system-ui,sans-serif;margin:16px;background:#fafafa;color:#222}
h1{font-size:18px;margin:0 0 4px}
#grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:12px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px}
.card h2{font-size:13px;margin:0 0 4px;font-weight:600}
.now{float:right;font-weight:400;color:#555}
</style></head><body>
<h1>clawperf gateway</h1><p id="status">connecting...</p>
<div id="grid"></div>
<script src="/dashboard/uplot.js"></script>
<script>
const charts = [
  { id: 'rate', title: 'requests / s', series: [['requestRate', 'req/s', '#1f77b4']] },
  { id: 'latency', title: 'latency (ms)', series: [['p50Ms', 'p50', '#2ca02c'], ['p99Ms', 'p99', '#d62728']] },
  { id: 'hits', title: 'cache hit rate per level', series: [['l1HitRate', 'L1', '#1f77b4'], ['l2HitRate', 'L2', '#ff7f0e'], ['l3HitRate', 'L3', '#9467bd']] },
  { id: 'saved', title: 'upstream calls saved', series: [['upstreamCallsSaved', 'saved', '#17becf']] },
  { id: 'limited', title: 'limiter rejections', series: [['limiterRejections', 'rejected', '#d62728']] },
  { id: 'queue', title: 'queue depth', series: [['queueDepth', 'queued', '#8c564b']] },
  { id: 'loop', title: 'event-loop delay p99 (ms)', series: [['eventLoopDelayMs', 'delay', '#e377c2']] },
  { id: 'heap', title: 'heap used (MB)', series: [['heapUsedMb', 'heap', '#7f7f7f']] },
];
const MAX = 300;
const grid = document.getElementById('grid');
for (const c of charts) {
  const card = document.createElement('div');
  card.className = 'card';
  card.innerHTML = '<h2>' + c.title + '<span class="now" id="now-' + c.id + '"></span></h2>';
  grid.appendChild(card);
  c.data = [[]].concat(c.series.map(() => []));
  c.plot = new uPlot({
    width: 400, height: 180,
    scales: { x: { time: true } },
    series: [{}].concat(c.series.map(([, label, stroke]) => ({ label, stroke, width: 2 }))),
    axes: [{}, { size: 50 }],
  }, c.data, card);
  card.dataset.chart = c.id;
}
window.clawperfPoints = 0;
const source = new EventSource('/dashboard/events');
source.onopen = () => { document.getElementById('status').textContent = 'live, updated every second'; };
source.onerror = () => { document.getElementById('status').textContent = 'disconnected, retrying...'; };
source.onmessage = (event) => {
  const p = JSON.parse(event.data);
  window.clawperfPoints++;
  for (const c of charts) {
    c.data[0].push(p.t);
    c.series.forEach(([key], i) => c.data[i + 1].push(p[key]));
    if (c.data[0].length > MAX) for (const s of c.data) s.shift();
    c.plot.setData(c.data);
    document.getElementById('now-' + c.id).textContent = c.series.map(([key]) => +p[key].toFixed(2)).join(' / ');
  }
};
</script></body></html>`;
}
