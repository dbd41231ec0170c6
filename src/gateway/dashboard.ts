/**
 * The live dashboard's data: every finished API request counted in plain numbers (by route, cache outcome,
 * tenant and model), one point a second kept in a ring of the last five minutes, and the tables, all as a
 * JSON {@link DashboardSnapshot}. The page arrives with the snapshot in it and then follows the points over
 * server-sent events. The same counts are exported on `/metrics` (`clawperf_gateway_tenant_*`, and with
 * prices `clawperf_gateway_spend_total` and `clawperf_gateway_savings_total`), so the page and Prometheus
 * agree.
 *
 * @module
 */
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { createHistogram, monitorEventLoopDelay } from 'node:perf_hooks';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Counter, Registry } from 'prom-client';
import { type TokenUsage, tokenUsage } from '../tracing/index.ts';
import type { GatewayCounts } from './context.ts';
import { dashboardPage, FAVICON_SVG } from './dashboard-page.ts';
import type {
  DashboardPoint,
  DashboardSnapshot,
  DeploymentRow,
  TenantMinute,
  UsageCounts,
  UsageRow,
} from './dashboard-snapshot.ts';
import type { Deployment } from './deployment.ts';
import { costOf, type Prices, promptCacheSavingOf } from './prices.ts';

export { type DashboardSnapshot, mergeSnapshots } from './dashboard-snapshot.ts';

/** Interval of the dashboard's points, ms. @default 1000 */
export const DASHBOARD_INTERVAL_MS = 1000;
/** Points kept: five minutes at one a second. @default 300 */
export const DASHBOARD_HISTORY = 300;
/** The window of a tenant's limits, in points. */
const MINUTE_POINTS = 60;

interface StatsSource {
  stats(): object;
}

/** What the feed reads. */
export interface DashboardFeedOptions {
  counts: GatewayCounts;
  backpressure: StatsSource;
  batcherStats: () => object;
  deployments: readonly Deployment[];
  /** Where the deployments' and prompt sessions' counters are, and where the feed's own go. */
  registry: Registry;
  limits: { rpm?: number; tpm?: number } | undefined;
  prices: Prices | undefined;
  /** @default DASHBOARD_INTERVAL_MS */
  intervalMs?: number;
  /** Wall-clock time in ms, for the points' times and the intervals they measure. @default Date */
  clock?: { now(): number };
  /**
   * The whole gateway's snapshot when this process is one of several serving the port (their snapshots
   * merged with {@link mergeSnapshots}): the page and its stream show it instead of this process's.
   * @default this process's {@link DashboardFeed.snapshot}
   */
  gateway?: () => Promise<DashboardSnapshot>;
}

const num = (o: object, key: string): number => {
  const v = (o as Record<string, unknown>)[key];
  return typeof v === 'number' && Number.isFinite(v) ? v : 0;
};

// Indexes of the running totals a point is the rate of.
const T = {
  reqChat: 0,
  reqEmbeddings: 1,
  reqMessages: 2,
  reqResponses: 3,
  reqOther: 4,
  cacheHit: 5,
  cacheMiss: 6,
  cacheCoalesced: 7,
  cacheBypass: 8,
  tokensIn: 9,
  tokensOut: 10,
  savedByCache: 11,
  savedByCoalescing: 12,
  tokensSavedByCache: 13,
  tokensSavedByCoalescing: 14,
  spend: 15,
} as const;
const TOTALS = 16;

const ROUTE_INDEX: Readonly<Record<string, number>> = {
  '/v1/chat/completions': T.reqChat,
  '/v1/embeddings': T.reqEmbeddings,
  '/v1/messages': T.reqMessages,
  '/v1/responses': T.reqResponses,
};

function emptyCounts(): UsageCounts {
  return {
    requests: 0,
    hits: 0,
    misses: 0,
    coalesced: 0,
    bypass: 0,
    other: 0,
    rateLimited: 0,
    errors: 0,
    tokensIn: 0,
    tokensOut: 0,
    tokensSavedByCache: 0,
    tokensSavedByCoalescing: 0,
    promptRead: 0,
    promptWrite: 0,
    promptUncached: 0,
    promptBreaks: 0,
    spend: 0,
    savedByCache: 0,
    savedByCoalescing: 0,
    savedByPromptCache: 0,
  };
}

/**
 * Counts the gateway for the dashboard and samples it once per interval, from construction on, so a page
 * opened later still gets the last five minutes. Rates are per second over each interval's measured length.
 */
export class DashboardFeed {
  readonly #o: DashboardFeedOptions;
  readonly #intervalMs: number;
  readonly #clock: { now(): number };
  readonly #overhead = createHistogram();
  readonly #upstream = createHistogram();
  readonly #loop = monitorEventLoopDelay({ resolution: 20 });
  readonly #clients = new Set<ServerResponse>();
  readonly #points: DashboardPoint[] = [];
  readonly #totals = new Float64Array(TOTALS);
  readonly #last = new Float64Array(TOTALS);
  readonly #rows = new Map<string, UsageRow>();
  /** Each tenant's requests and tokens at each of the last minute's points. */
  readonly #minutes: Map<string, [number, number]>[] = [];
  #minute: TenantMinute[] = [];
  #deployments: DeploymentRow[] = [];
  #lastAt: number;
  #lastUpstreamCalls = 0;
  #lastRejections = 0;
  #timer: NodeJS.Timeout | undefined;
  #ticking = false;
  #assets: { js: string; css: string } | undefined;

  constructor(options: DashboardFeedOptions) {
    this.#o = options;
    this.#intervalMs = options.intervalMs ?? DASHBOARD_INTERVAL_MS;
    this.#clock = options.clock ?? Date;
    this.#lastAt = this.#clock.now();
    this.#lastUpstreamCalls = options.counts.upstreamCalls;
    this.#lastRejections = options.counts.rateLimited;
    this.#registerMetrics(options.registry);
    this.#loop.enable();
    this.#timer = setInterval(() => {
      this.#tick().catch(() => {});
    }, this.#intervalMs);
    this.#timer.unref();
  }

  /** Counts one finished API request (`/v1/*`), once its response has gone. */
  record(request: FastifyRequest, reply: FastifyReply): void {
    const s = request.clawperf;
    if (s === null || s === undefined) return;
    const totals = this.#totals;
    totals[ROUTE_INDEX[request.routeOptions.url ?? ''] ?? T.reqOther]!++;
    if (s.overheadMs !== undefined) this.#overhead.record(Math.max(1, Math.round(s.overheadMs * 1000)));
    if (s.upstreamMs > 0) this.#upstream.record(Math.max(1, Math.round(s.upstreamMs * 1000)));
    const status = reply.statusCode;
    const answered = s.recorded && status < 400;
    if (answered) {
      if (s.cache === 'hit') totals[T.cacheHit]!++;
      else if (s.cache === 'miss') totals[T.cacheMiss]!++;
      else if (s.cache === 'coalesced') totals[T.cacheCoalesced]!++;
      else totals[T.cacheBypass]!++;
    }
    const tenant = s.tenant;
    // A request refused before its tenant was known (a bad key, an unknown model) belongs to no table row.
    if (tenant === undefined) return;
    const model = (request.body as { model?: unknown } | null | undefined)?.model;
    const row = this.#row(tenant, typeof model === 'string' ? model : '');
    row.requests++;
    if (status === 429) row.rateLimited++;
    else if (status >= 400) row.errors++;
    else if (!s.recorded) row.other++;
    else if (s.cache === 'hit') row.hits++;
    else if (s.cache === 'miss') row.misses++;
    else if (s.cache === 'coalesced') row.coalesced++;
    else row.bypass++;
    if (!answered) return;
    const usage: TokenUsage | undefined =
      s.streamed?.usage ?? tokenUsage((s.answer as { usage?: unknown } | null | undefined)?.usage);
    const price = this.#o.prices?.[row.model];
    if (s.cache === 'hit' || s.cache === 'coalesced') {
      const byCache = s.cache === 'hit';
      totals[byCache ? T.savedByCache : T.savedByCoalescing]!++;
      if (usage === undefined) return;
      const tokens = usage.input + usage.output;
      totals[byCache ? T.tokensSavedByCache : T.tokensSavedByCoalescing]! += tokens;
      if (byCache) row.tokensSavedByCache += tokens;
      else row.tokensSavedByCoalescing += tokens;
      if (price === undefined) return;
      if (byCache) row.savedByCache += costOf(price, usage);
      else row.savedByCoalescing += costOf(price, usage);
      return;
    }
    if (usage === undefined) return;
    totals[T.tokensIn]! += usage.input;
    totals[T.tokensOut]! += usage.output;
    row.tokensIn += usage.input;
    row.tokensOut += usage.output;
    const read = usage.cacheRead ?? 0;
    const write = usage.cacheWrite ?? 0;
    row.promptRead += read;
    row.promptWrite += write;
    row.promptUncached += Math.max(0, usage.input - read - write);
    if (price === undefined) return;
    const spend = costOf(price, usage);
    row.spend += spend;
    totals[T.spend]! += spend;
    row.savedByPromptCache += promptCacheSavingOf(price, usage);
  }

  #row(tenant: string, model: string): UsageRow {
    const id = `${tenant}\u0000${model}`;
    let row = this.#rows.get(id);
    if (row === undefined) {
      row = { tenant, model, ...emptyCounts() };
      this.#rows.set(id, row);
    }
    return row;
  }

  /** This process's dashboard: the recent points and the tables as of the last point. */
  snapshot(): DashboardSnapshot {
    return {
      points: [...this.#points],
      usage: [...this.#rows.values()].map((r) => ({ ...r })),
      minute: this.#minute,
      deployments: this.#deployments,
      limits: { ...this.#o.limits },
      priced: this.#o.prices !== undefined,
      processes: 1,
    };
  }

  /** The whole gateway's snapshot: the `gateway` option's, else this process's. */
  async gatewaySnapshot(): Promise<DashboardSnapshot> {
    return (await this.#o.gateway?.().catch(() => undefined)) ?? this.snapshot();
  }

  /** Takes the next point now (the timer does it every interval). */
  async tick(): Promise<void> {
    await this.#tick();
  }

  async #tick(): Promise<void> {
    if (this.#ticking) return;
    this.#ticking = true;
    try {
      await this.#readTables();
    } finally {
      this.#ticking = false;
    }
    const at = this.#clock.now();
    const seconds = Math.max(1e-3, (at - this.#lastAt) / 1000);
    this.#lastAt = at;
    const totals = this.#totals;
    const last = this.#last;
    const rate = (i: number) => (totals[i]! - last[i]!) / seconds;
    const counts = this.#o.counts;
    const ms = (h: ReturnType<typeof createHistogram>, p: number) =>
      h.count === 0 ? 0 : h.percentile(p) / 1000;
    const point: DashboardPoint = {
      t: Math.round(at / 1000),
      reqChat: rate(T.reqChat),
      reqEmbeddings: rate(T.reqEmbeddings),
      reqMessages: rate(T.reqMessages),
      reqResponses: rate(T.reqResponses),
      reqOther: rate(T.reqOther),
      cacheHit: rate(T.cacheHit),
      cacheMiss: rate(T.cacheMiss),
      cacheCoalesced: rate(T.cacheCoalesced),
      cacheBypass: rate(T.cacheBypass),
      overheadP50Ms: ms(this.#overhead, 50),
      overheadP99Ms: ms(this.#overhead, 99),
      upstreamP50Ms: ms(this.#upstream, 50),
      upstreamP99Ms: ms(this.#upstream, 99),
      tokensIn: rate(T.tokensIn),
      tokensOut: rate(T.tokensOut),
      upstreamCalls: (counts.upstreamCalls - this.#lastUpstreamCalls) / seconds,
      savedByCache: rate(T.savedByCache),
      savedByCoalescing: rate(T.savedByCoalescing),
      tokensSavedByCache: rate(T.tokensSavedByCache),
      tokensSavedByCoalescing: rate(T.tokensSavedByCoalescing),
      limiterRejections: (counts.rateLimited - this.#lastRejections) / seconds,
      queueDepth: num(this.#o.backpressure.stats(), 'queued') + num(this.#o.batcherStats(), 'queued'),
      eventLoopP99Ms: this.#loop.count === 0 ? 0 : this.#loop.percentile(99) / 1e6,
      heapUsedMb: process.memoryUsage().heapUsed / 1048576,
      spend: rate(T.spend),
    };
    last.set(totals);
    this.#lastUpstreamCalls = counts.upstreamCalls;
    this.#lastRejections = counts.rateLimited;
    this.#overhead.reset();
    this.#upstream.reset();
    this.#loop.reset();
    this.#points.push(point);
    if (this.#points.length > DASHBOARD_HISTORY) this.#points.shift();
    this.#minute = this.#tenantMinutes();
    if (this.#clients.size === 0) return;
    const whole = this.#o.gateway === undefined ? undefined : await this.#o.gateway().catch(() => undefined);
    const line = `data: ${JSON.stringify({
      point: whole?.points.at(-1) ?? point,
      usage: whole?.usage ?? [...this.#rows.values()],
      minute: whole?.minute ?? this.#minute,
      deployments: whole?.deployments ?? this.#deployments,
      processes: whole?.processes ?? 1,
    })}\n\n`;
    for (const res of this.#clients) res.write(line);
  }

  /** What each tenant used in the last minute: its totals now less those of a minute ago. */
  #tenantMinutes(): TenantMinute[] {
    const now = new Map<string, [number, number]>();
    for (const row of this.#rows.values()) {
      const t = now.get(row.tenant) ?? [0, 0];
      t[0] += row.requests - row.rateLimited;
      t[1] += row.tokensIn + row.tokensOut;
      now.set(row.tenant, t);
    }
    this.#minutes.push(now);
    if (this.#minutes.length > MINUTE_POINTS + 1) this.#minutes.shift();
    // Until a minute has passed, everything counted so far is the last minute's.
    const before =
      this.#minutes.length > MINUTE_POINTS ? this.#minutes[0]! : new Map<string, [number, number]>();
    return [...now].map(([tenant, [requests, tokens]]) => {
      const [r0, t0] = before.get(tenant) ?? [0, 0];
      return { tenant, requests: requests - r0, tokens: tokens - t0 };
    });
  }

  /** The deployments' state and counters, and the prompt-cache breaks per tenant and model. */
  async #readTables(): Promise<void> {
    const registry = this.#o.registry;
    const values = async (name: string) => (await registry.getSingleMetric(name)?.get())?.values ?? [];
    const calls = new Map<string, number>();
    for (const v of await values('clawperf_gateway_deployment_requests_total'))
      calls.set(String(v.labels.deployment), v.value);
    const failures = new Map<string, Record<string, number>>();
    for (const v of await values('clawperf_gateway_deployment_failures_total')) {
      const d = String(v.labels.deployment);
      const f = failures.get(d) ?? {};
      f[String(v.labels.kind)] = v.value;
      failures.set(d, f);
    }
    this.#deployments = this.#o.deployments.map((d) => {
      let pacingRequests = -1;
      let pacingTokens = -1;
      let pacingQueued = 0;
      for (const p of d.pacers) {
        const s = p.stats?.();
        if (s === undefined) continue;
        pacingRequests = smallest(pacingRequests, s.remainingRequests);
        pacingTokens = smallest(pacingTokens, s.remainingTokens);
        pacingQueued += s.queued;
      }
      return {
        name: d.name,
        api: d.api,
        circuit: d.client.circuitState,
        inFlight: d.inFlight,
        concurrencyLimit: d.limit.stats().limit,
        pacingRequests,
        pacingTokens,
        pacingQueued,
        latencyMs: d.latencyMs,
        calls: calls.get(d.name) ?? 0,
        failures: failures.get(d.name) ?? {},
      };
    });
    const breaks = new Map<string, number>();
    for (const v of await values('clawperf_gateway_prompt_cache_breaks_total')) {
      const id = `${v.labels.tenant}\u0000${v.labels.model}`;
      breaks.set(id, (breaks.get(id) ?? 0) + v.value);
    }
    for (const [id, n] of breaks) {
      const [tenant, model] = id.split('\u0000') as [string, string];
      this.#row(tenant, model).promptBreaks = n;
    }
  }

  /** The usage counts on `/metrics`, read from the same rows the page shows. */
  #registerMetrics(registry: Registry): void {
    const rows = () => this.#rows.values();
    /**
     * A counter family built from the rows at each scrape: the samples are made straight from the rows (a
     * prom-client Counter would be reset and filled label set by label set, hashing each: most of a scrape's
     * time with a few hundred tenants, in one stretch the scrape cannot split). Each row gives distinct labels:
     * its tenant and model, and `label` when the family has one, set to the value `each` gives. A row's label
     * objects are made once and kept, so a scrape renders only the series that are new (exposition.ts).
     */
    const counter = (
      name: string,
      help: string,
      label: string | undefined,
      each: (row: UsageRow, inc: (value: string, n: number) => void) => void,
    ) => {
      const family = { name, help, type: 'counter', aggregator: 'sum' };
      const kept = new WeakMap<UsageRow, Map<string, Record<string, string>>>();
      const metric = {
        ...family,
        get: () => {
          const values: { labels: Record<string, string>; value: number }[] = [];
          for (const row of rows()) {
            let labelsOf = kept.get(row);
            if (labelsOf === undefined) {
              labelsOf = new Map();
              kept.set(row, labelsOf);
            }
            const mine = labelsOf;
            each(row, (value, n) => {
              let labels = mine.get(value);
              if (labels === undefined) {
                labels = { tenant: row.tenant, model: row.model };
                if (label !== undefined) labels[label] = value;
                mine.set(value, labels);
              }
              values.push({ labels, value: n });
            });
          }
          return { ...family, values };
        },
        reset: () => {},
      };
      registry.registerMetric(metric as unknown as Counter);
    };
    const OUTCOMES = [
      ['hit', 'hits'],
      ['miss', 'misses'],
      ['coalesced', 'coalesced'],
      ['bypass', 'bypass'],
      ['other', 'other'],
      ['rate_limited', 'rateLimited'],
      ['error', 'errors'],
    ] as const;
    counter(
      'clawperf_gateway_tenant_requests_total',
      'API requests of each tenant and model, by outcome: the cache outcome of an answer, rate_limited (429), error (other 4xx/5xx), other',
      'outcome',
      (row, inc) => {
        for (const [outcome, field] of OUTCOMES) {
          const n = row[field];
          if (n > 0) inc(outcome, n);
        }
      },
    );
    counter(
      'clawperf_gateway_tenant_tokens_total',
      "Tokens of the answers the provider produced for each tenant and model (a cached answer's are saved, not used)",
      'direction',
      (row, inc) => {
        inc('input', row.tokensIn);
        inc('output', row.tokensOut);
      },
    );
    counter(
      'clawperf_gateway_tenant_tokens_saved_total',
      "Tokens of answers no upstream call was made for: from the gateway's cache, or another request's call",
      'by',
      (row, inc) => {
        inc('cache', row.tokensSavedByCache);
        inc('coalescing', row.tokensSavedByCoalescing);
      },
    );
    // Off means free: without prices there is no spend to export.
    if (this.#o.prices === undefined) return;
    counter(
      'clawperf_gateway_spend_total',
      'What the answers the provider produced cost at the configured prices, by tenant and model',
      undefined,
      (row, inc) => {
        inc('', row.spend);
      },
    );
    counter(
      'clawperf_gateway_savings_total',
      "What was not spent at the configured prices: answers from the gateway's cache or another request's call, and input read from the provider's prompt cache",
      'by',
      (row, inc) => {
        inc('cache', row.savedByCache);
        inc('coalescing', row.savedByCoalescing);
        inc('prompt_cache', row.savedByPromptCache);
      },
    );
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

  /** Streams each new point and the tables to one page until it goes away. */
  subscribe(req: IncomingMessage, res: ServerResponse): void {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-clawperf-cache': 'bypass',
    });
    res.write(`retry: ${this.#intervalMs}\n\n`);
    this.#clients.add(res);
    req.once('close', () => this.#clients.delete(res));
  }

  /** Stops sampling and ends every open stream. */
  close(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#loop.disable();
    for (const res of this.#clients) res.end();
    this.#clients.clear();
  }
}

function smallest(a: number, b: number): number {
  if (a < 0) return b;
  if (b < 0) return a;
  return Math.min(a, b);
}

/**
 * The dashboard's routes: the page (with the whole gateway's snapshot), uPlot's script and stylesheet, the
 * favicon, and the stream of points.
 */
export function registerDashboard(app: FastifyInstance, feed: DashboardFeed): void {
  app.get('/', async (_request, reply) =>
    reply
      .type('text/html; charset=utf-8')
      .header('cache-control', 'no-store')
      .send(dashboardPage(await feed.gatewaySnapshot())),
  );
  app.get('/dashboard/uplot.js', (_request, reply) => reply.type('text/javascript').send(feed.asset('js')));
  app.get('/dashboard/uplot.css', (_request, reply) => reply.type('text/css').send(feed.asset('css')));
  const icon = (_request: FastifyRequest, reply: FastifyReply) =>
    reply.type('image/svg+xml').header('cache-control', 'max-age=86400').send(FAVICON_SVG);
  app.get('/favicon.ico', icon);
  app.get('/favicon.svg', icon);
  app.get('/dashboard/events', (request, reply) => {
    reply.hijack();
    feed.subscribe(request.raw, reply.raw);
  });
}
