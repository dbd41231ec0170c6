/**
 * The dashboard page: one HTML document with the snapshot in it (so the charts and tables have data at
 * first paint), uPlot charts that fill their cards and follow the window's width, axes that shorten large
 * numbers (12.3k, 4.5M), and tables per tenant, model and deployment, all kept live by the stream of points.
 *
 * @module
 */
import type { DashboardSnapshot } from './dashboard-snapshot.ts';

/** The gateway's icon: a gauge, as SVG (served as `/favicon.ico` too, which browsers accept). */
export const FAVICON_SVG =
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="6" fill="#1f4e79"/><path d="M6 22a10 10 0 0 1 20 0" fill="none" stroke="#fff" stroke-width="3"/><path d="M16 22l6-8" stroke="#ffb000" stroke-width="3" stroke-linecap="round"/></svg>';

/** JSON that is safe inside a `<script>` element. */
function scriptJson(value: unknown): string {
  return JSON.stringify(value)
    .replace(/</g, '\\u003c')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

/** The dashboard page, with `snapshot` as its first data. */
export function dashboardPage(snapshot: DashboardSnapshot): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>clawperf gateway</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/dashboard/uplot.css">
<style>
*{box-sizing:border-box}
body{font:14px system-ui,sans-serif;margin:0;padding:12px;background:#f4f5f7;color:#222}
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:4px 16px;margin:0 0 10px}
h1{font-size:18px;margin:0}
#status{color:#555;margin:0}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,400px),1fr));gap:10px;margin-bottom:10px}
.card{background:#fff;border:1px solid #dcdfe4;border-radius:6px;padding:8px;min-width:0}
.card h2{font-size:13px;margin:0 0 4px;font-weight:600;display:flex;justify-content:space-between;gap:8px}
.now{font-weight:400;color:#555;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.chart{width:100%}
.uplot .legend{font-size:12px}
.tables{display:grid;grid-template-columns:1fr;gap:10px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:13px;font-variant-numeric:tabular-nums}
th,td{padding:3px 8px;text-align:right;white-space:nowrap;border-bottom:1px solid #eee}
th:first-child,td:first-child{text-align:left}
thead th{font-weight:600;color:#444}
tfoot td{font-weight:600;border-top:1px solid #ccc}
.open{color:#c0392b;font-weight:600}.half-open{color:#d68910}.closed{color:#1e8449}
.empty{color:#888}
</style></head><body>
<header><h1>clawperf gateway</h1><p id="status">connecting...</p></header>
<div class="grid" id="charts"></div>
<div class="tables">
<section class="card"><h2>Tenants</h2><div class="scroll"><table id="tenants"></table></div></section>
<section class="card"><h2>Models</h2><div class="scroll"><table id="models"></table></div></section>
<section class="card"><h2>Deployments</h2><div class="scroll"><table id="deployments"></table></div></section>
</div>
<script id="snapshot" type="application/json">${scriptJson(snapshot)}</script>
<script src="/dashboard/uplot.js"></script>
<script>
'use strict';
const snapshot = JSON.parse(document.getElementById('snapshot').textContent);
const priced = snapshot.priced;
const limits = snapshot.limits || {};
const MAX = 300;
const HEIGHT = 180;
function fmt(v) {
  if (v == null || !isFinite(v)) return '-';
  const a = Math.abs(v);
  const cut = (x, unit) => (Math.round(x * 10) / 10).toLocaleString('en-US', { maximumFractionDigits: 1 }) + unit;
  if (a >= 1e9) return cut(v / 1e9, 'G');
  if (a >= 1e6) return cut(v / 1e6, 'M');
  if (a >= 1e4) return cut(v / 1e3, 'k');
  if (a >= 100) return Math.round(v).toLocaleString('en-US');
  return (Math.round(v * 100) / 100).toLocaleString('en-US', { maximumFractionDigits: 2 });
}
function money(v) {
  if (v === 0) return '0';
  return v < 1 ? Number(v.toPrecision(3)).toString() : v.toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}
const pct = (n, d) => (d > 0 ? (Math.round((1000 * n) / d) / 10) + ' %' : '-');
const COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b'];
const charts = [
  { id: 'routes', title: 'requests / s by route', series: [['reqChat', 'chat'], ['reqEmbeddings', 'embeddings'], ['reqMessages', 'messages'], ['reqResponses', 'responses'], ['reqOther', 'other']] },
  { id: 'cache', title: 'requests / s by cache outcome', series: [['cacheHit', 'hit'], ['cacheMiss', 'miss'], ['cacheCoalesced', 'coalesced'], ['cacheBypass', 'bypass']] },
  { id: 'latency', title: 'latency, ms: gateway overhead and upstream', series: [['overheadP50Ms', 'overhead p50'], ['overheadP99Ms', 'overhead p99'], ['upstreamP50Ms', 'upstream p50'], ['upstreamP99Ms', 'upstream p99']] },
  { id: 'tokens', title: 'tokens / s', series: [['tokensIn', 'in'], ['tokensOut', 'out']] },
  { id: 'calls', title: 'upstream calls / s: made, and saved', series: [['upstreamCalls', 'made'], ['savedByCache', 'saved by cache'], ['savedByCoalescing', 'saved by coalescing']] },
  { id: 'saved', title: 'tokens saved / s', series: [['tokensSavedByCache', 'by cache'], ['tokensSavedByCoalescing', 'by coalescing']] },
  { id: 'limiter', title: 'limiter rejections / s and queue depth', series: [['limiterRejections', 'rejected / s'], ['queueDepth', 'queued']] },
  { id: 'loop', title: 'event-loop delay p99, ms', series: [['eventLoopP99Ms', 'delay']] },
  { id: 'heap', title: 'heap used, MB', series: [['heapUsedMb', 'heap']] },
];
if (priced) charts.push({ id: 'spend', title: 'spend / min', series: [['spendPerMin', 'spend']] });
const grid = document.getElementById('charts');
const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600];
const clock = (t) => new Date(t * 1000).toLocaleTimeString('en-GB', { hour12: false });
const axisSize = (u, values) => (values ? Math.max(...values.map((v) => String(v).length)) * 7 + 18 : 40);
for (const c of charts) {
  const card = document.createElement('section');
  card.className = 'card';
  card.dataset.chart = c.id;
  const h = document.createElement('h2');
  h.textContent = c.title;
  const now = document.createElement('span');
  now.className = 'now';
  now.id = 'now-' + c.id;
  h.appendChild(now);
  const box = document.createElement('div');
  box.className = 'chart';
  card.append(h, box);
  grid.appendChild(card);
  c.box = box;
  c.now = now;
  c.data = [[]].concat(c.series.map(() => []));
  c.plot = new uPlot({
    width: Math.max(200, box.clientWidth),
    height: HEIGHT,
    scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
    series: [{}].concat(c.series.map(([, label], i) => ({ label, stroke: COLORS[i % COLORS.length], width: 2, value: (u, v) => fmt(v) }))),
    legend: { live: false },
    axes: [{ space: 70, incrs: TIME_STEPS, values: (u, splits) => splits.map(clock) }, { size: axisSize, values: (u, splits) => splits.map(fmt) }],
  }, c.data, box);
}
new ResizeObserver(() => {
  for (const c of charts) c.plot.setSize({ width: Math.max(200, c.box.clientWidth), height: HEIGHT });
}).observe(grid);
let lastT = 0;
window.clawperfPoints = 0;
function addPoint(p, draw) {
  if (p.t <= lastT) return;
  lastT = p.t;
  p.spendPerMin = p.spend * 60;
  window.clawperfPoints++;
  for (const c of charts) {
    c.data[0].push(p.t);
    c.series.forEach(([key], i) => c.data[i + 1].push(p[key]));
    if (c.data[0].length > MAX) for (const s of c.data) s.shift();
    if (draw) c.plot.setData(c.data);
    c.now.textContent = c.series.map(([key]) => fmt(p[key])).join(' / ');
  }
}
function cell(tr, text, cls) {
  const td = document.createElement('td');
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}
function table(id, head, rows, total) {
  const t = document.getElementById(id);
  t.textContent = '';
  const thead = t.createTHead().insertRow();
  for (const h of head) { const th = document.createElement('th'); th.textContent = h; thead.appendChild(th); }
  const body = t.createTBody();
  if (rows.length === 0) { const tr = body.insertRow(); cell(tr, 'none yet', 'empty').colSpan = head.length; }
  for (const r of rows) { const tr = body.insertRow(); r.forEach((v, i) => cell(tr, v, i === 0 ? '' : undefined)); }
  if (total) {
    const tr = t.createTFoot().insertRow();
    total.forEach((v, i) => { const td = cell(tr, v); td.dataset.col = head[i]; });
  }
}
const FIELDS = ['requests', 'hits', 'misses', 'coalesced', 'bypass', 'other', 'rateLimited', 'errors', 'tokensIn', 'tokensOut', 'tokensSavedByCache', 'tokensSavedByCoalescing', 'promptRead', 'promptWrite', 'promptUncached', 'promptBreaks', 'spend', 'savedByCache', 'savedByCoalescing', 'savedByPromptCache'];
function group(usage, key) {
  const out = new Map();
  for (const r of usage) {
    const g = out.get(r[key]) || Object.fromEntries(FIELDS.map((f) => [f, 0]));
    for (const f of FIELDS) g[f] += r[f];
    out.set(r[key], g);
  }
  return [...out].sort((a, b) => b[1].requests - a[1].requests);
}
const hitRate = (g) => pct(g.hits, g.hits + g.misses + g.coalesced);
const promptRatio = (g) => pct(g.promptRead, g.promptRead + g.promptWrite + g.promptUncached);
const saved = (g) => g.savedByCache + g.savedByCoalescing + g.savedByPromptCache;
function tables(t) {
  const all = group(t.usage, 'tenant');
  const total = group(t.usage.map((r) => ({ ...r, all: 'total' })), 'all')[0]?.[1];
  const minute = new Map(t.minute.map((m) => [m.tenant, m]));
  const money2 = priced ? ['spend', 'saved'] : [];
  table('tenants',
    ['tenant', 'requests', 'tokens in', 'tokens out', 'of rpm', 'of tpm', '429s', 'cache hits', 'prompt cache', 'breaks'].concat(money2),
    all.map(([name, g]) => {
      const m = minute.get(name) || { requests: 0, tokens: 0 };
      return [name, fmt(g.requests), fmt(g.tokensIn), fmt(g.tokensOut),
        limits.rpm ? pct(m.requests, limits.rpm) : '-', limits.tpm ? pct(m.tokens, limits.tpm) : '-',
        fmt(g.rateLimited), hitRate(g), promptRatio(g), fmt(g.promptBreaks)]
        .concat(priced ? [money(g.spend), money(saved(g))] : []);
    }),
    total && ['total', String(total.requests), String(total.tokensIn), String(total.tokensOut), '', '', String(total.rateLimited), hitRate(total), promptRatio(total), String(total.promptBreaks)]
      .concat(priced ? [money(total.spend), money(saved(total))] : []));
  table('models',
    ['model', 'requests', 'tokens in', 'tokens out', 'tokens saved', 'cache hits', 'prompt cache', 'errors'].concat(money2),
    group(t.usage, 'model').map(([name, g]) => [name || '(none)', fmt(g.requests), fmt(g.tokensIn), fmt(g.tokensOut),
      fmt(g.tokensSavedByCache + g.tokensSavedByCoalescing), hitRate(g), promptRatio(g), fmt(g.errors + g.rateLimited)]
      .concat(priced ? [money(g.spend), money(saved(g))] : [])));
  table('deployments',
    ['deployment', 'circuit', 'in flight / limit', 'pacing: requests left', 'tokens left', 'queued', 'latency, ms', 'calls', 'errors'],
    t.deployments.map((d) => [d.name, d.circuit, d.inFlight + ' / ' + d.concurrencyLimit,
      d.pacingRequests < 0 ? '-' : fmt(d.pacingRequests), d.pacingTokens < 0 ? '-' : fmt(d.pacingTokens),
      fmt(d.pacingQueued), fmt(d.latencyMs), fmt(d.calls),
      Object.entries(d.failures).map(([k, n]) => k + ' ' + n).join(', ') || '0']));
  for (const tr of document.querySelectorAll('#deployments tbody tr')) {
    const c = tr.children[1];
    if (c && c.textContent) c.className = c.textContent;
  }
  window.clawperfTables = t;
}
for (const p of snapshot.points) addPoint(p, false);
for (const c of charts) c.plot.setData(c.data);
tables(snapshot);
const status = document.getElementById('status');
const since = () => (snapshot.processes > 1 ? ', ' + snapshot.processes + ' processes' : '');
const source = new EventSource('/dashboard/events');
source.onopen = () => { status.textContent = 'live, a point a second' + since(); };
source.onerror = () => { status.textContent = 'disconnected, retrying...'; };
source.onmessage = (event) => {
  const m = JSON.parse(event.data);
  addPoint(m.point, true);
  tables(m);
  snapshot.processes = m.processes;
  status.textContent = 'live, a point a second' + since();
};
</script></body></html>`;
}
