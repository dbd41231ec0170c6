/**
 * MetricsCollector: system, application and business metrics (seed 20.1.1) in a prom-client registry of its
 * own, components tracked through their `stats()` read at scrape time, and push exporters fed on an interval.
 */
import { EventEmitter } from 'node:events';
import { loadavg } from 'node:os';
import {
  type EventLoopUtilization,
  type IntervalHistogram,
  monitorEventLoopDelay,
  performance,
} from 'node:perf_hooks';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { ClosedError, TimeoutError } from '../errors.ts';
import { type Clock, systemClock } from '../internal/clock.ts';
import { delaySummary } from '../internal/histogram.ts';
import * as check from '../internal/options.ts';
import {
  type ExpositionFormat,
  formatValue,
  type MetricFamily,
  renderFamilies,
  renderHead,
  YIELD_EVERY_MS,
} from './exposition.ts';

/** Collection interval. `0` turns the timer off (call `collect()` yourself). @default 10_000 */
export const DEFAULT_METRICS_INTERVAL_MS = 10_000;
/** Label sets kept per metric (and fields per tracked component) before new ones are dropped. @default 1_000 */
export const DEFAULT_METRICS_MAX_SERIES = 1_000;
/** How long one exporter's push may take before the collector stops waiting for it. @default 5_000 */
export const DEFAULT_METRICS_EXPORT_TIMEOUT_MS = 5_000;
/** Buckets of the latency histograms, in seconds (LLM calls run long). */
export const DEFAULT_LATENCY_BUCKETS_SECONDS: readonly number[] = [
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
];
/** Resolution of the event-loop delay histogram, ms. */
const EVENT_LOOP_RESOLUTION_MS = 10;

/** What the collector measured over its last interval (the seed's shape). */
export interface PerformanceMetrics {
  system: {
    /** CPU time used over the last interval as a ratio of wall time: 1 = one core busy the whole time. */
    cpuUsage: number;
    /** Heap in use, MB (as in the seed). */
    memoryUsage: number;
    heapUsedBytes: number;
    heapTotalBytes: number;
    rssBytes: number;
    externalBytes: number;
    /** Event-loop delay over the last interval, ms. */
    eventLoopDelay: { min: number; mean: number; p50: number; p90: number; p99: number; max: number };
    /** Share of the last interval the event loop was busy, 0..1. */
    eventLoopUtilization: number;
    /** Process uptime, seconds. */
    uptime: number;
    /** 1, 5 and 15 minute load averages. */
    loadAverage: number[];
  };
  application: {
    activeConnections: number;
    /** Requests per second over the last interval. */
    requestRate: number;
    /** Share of the last interval's requests that failed, 0..1. */
    errorRate: number;
    /** Mean request duration over the last interval, ms. */
    averageResponseTime: number;
  };
  business: {
    messagesProcessed: number;
    agentExecutions: number;
    toolCalls: number;
    /** Cache hits / lookups since start, 0..1 (0 before the first lookup). */
    cacheHitRate: number;
  };
}

/** What a push exporter receives on every collection. */
export interface ExportBatch {
  /** Wall-clock time of the collection, ms since the epoch. */
  time: number;
  metrics: PerformanceMetrics;
  /** Every metric family in the registry, read at collection time. */
  families: MetricFamily[];
}

/**
 * An exporter registered with {@link MetricsCollector.registerExporter}: one the collector pushes batches to
 * (`export`: InfluxDBExporter, or your own), or one bound to the collector that reads it when scraped
 * (`attach`: PrometheusExporter).
 */
export interface MetricsExporter {
  /** Name used in counters and events. */
  readonly name?: string;
  /**
   * Pushes one batch. May be slow or fail: the collector contains and counts both. An exporter without it
   * gets no batches, and costs collections nothing.
   */
  export?(batch: ExportBatch, options: { signal: AbortSignal }): unknown;
  /** Binds the exporter to the collector registering it, before any push; throws to refuse. */
  attach?(collector: MetricsCollector): void;
  /** Flushes what is buffered and releases resources; called by the collector's `close()`. */
  close?(): Promise<void>;
}

/** Anything with `stats()`: a flat (or nested, flattened with `_`) object of numbers. */
export interface Trackable {
  stats(): object;
  /** Fields that only grow; exported as counters `..._total`. */
  readonly statsCounters?: readonly string[];
}

export interface MetricsCollectorOptions {
  /** Collection (and push) interval, ms; `0` disables the timer. @default 10_000 */
  intervalMs?: number;
  /**
   * Registry to register into. A given registry also gets every tracked field as a prom-client metric read
   * through `collect()`, so serving it with prom-client's own `registry.metrics()` includes tracked
   * components; the collector's own registry does not (its scrape reads them directly, which is much cheaper
   * for thousands of fields). @default a new prom-client `Registry` (never the global one unless given)
   */
  registry?: Registry;
  /** Label sets per metric, and fields per tracked component, before new ones are dropped. @default 1_000 */
  maxSeries?: number;
  /** Time one exporter gets per push before the collector moves on. @default 5_000 */
  exportTimeoutMs?: number;
  /** Buckets of the request latency histogram, seconds. @default DEFAULT_LATENCY_BUCKETS_SECONDS */
  latencyBuckets?: readonly number[];
  /** Time source for interval rates (CPU ratio, request rate). @default systemClock */
  clock?: Clock;
}

/** A request as `recordRequest` takes it. */
export interface RequestRecord {
  method?: string;
  route?: string;
  status?: number;
  durationMs: number;
  /** Whether the request failed. @default status >= 500 */
  error?: boolean;
}

interface ExporterEntry {
  exporter: MetricsExporter;
  name: string;
  inFlight: Promise<void> | undefined;
}

interface TrackedField {
  name: string;
  /** The OpenMetrics family: the name, without `_total` for a counter. */
  family: string;
  help: string;
  counter: boolean;
  /** What the field's value is divided by: 1000 for a field in milliseconds, exported in seconds. */
  divisor: number;
  /** The HELP/TYPE lines and sample name, rendered once per format: a scrape only appends the value. */
  head: Partial<Record<ExpositionFormat, string>>;
}

interface TrackedComponent {
  name: string;
  component: Trackable;
  counters: Set<string>;
  /** Field -> its metric; null for a dropped field. */
  fields: Map<string, TrackedField | null>;
  exported: number;
  snapshot: Record<string, number> | undefined;
  /** The last snapshot read without error; reused when stats() throws. */
  lastGood: Record<string, number>;
}

/** Children of a labelled metric, bounded by `maxSeries`; a label set past the bound is dropped and counted. */
class SeriesGuard<C> {
  readonly #children = new Map<string, C>();
  readonly #max: number;
  readonly #create: (labels: string[]) => C;
  readonly #drop: () => void;

  constructor(max: number, create: (labels: string[]) => C, drop: () => void) {
    this.#max = max;
    this.#create = create;
    this.#drop = drop;
  }

  get(labels: string[]): C | undefined {
    const key = labels.join('\u0000');
    let child = this.#children.get(key);
    if (child === undefined) {
      if (this.#children.size >= this.#max) {
        this.#drop();
        return undefined;
      }
      child = this.#create(labels);
      this.#children.set(key, child);
    }
    return child;
  }
}

/**
 * Collects system, application and business metrics into a prom-client registry, exports tracked components'
 * `stats()` at scrape time, and pushes a batch to every registered exporter each `intervalMs`.
 *
 * Exporters run independently: one that throws, rejects or hangs is contained, counted
 * (`clawperf_metrics_export_failures_total`) and reported as an `'exportError'` event; the others and the
 * collector carry on. The timer is `unref()`ed, so a collector never keeps a process alive.
 *
 * @example
 * const metrics = new MetricsCollector({ intervalMs: 10_000 });
 * metrics.track('backpressure', controller);       // clawperf_backpressure_<field>
 * metrics.recordRequest({ method: 'POST', route: '/v1/chat', status: 200, durationMs: 84 });
 * const text = await metrics.scrape();             // Prometheus exposition
 * await metrics.close();
 */
export class MetricsCollector extends EventEmitter {
  /** The registry holding every metric of this collector. */
  readonly registry: Registry;
  readonly statsCounters: readonly string[] = [
    'collections',
    'exports',
    'exportFailures',
    'exportTimeouts',
    'exportsSkipped',
    'seriesDropped',
    'statsFailures',
  ];

  readonly #clock: Clock;
  readonly #maxSeries: number;
  readonly #exportTimeoutMs: number;
  readonly #timer: NodeJS.Timeout | undefined;
  readonly #loopDelay: IntervalHistogram;
  /** Every registered exporter; `#pushers` holds those with `export`. */
  readonly #exporters: ExporterEntry[] = [];
  readonly #pushers: ExporterEntry[] = [];
  readonly #tracked = new Map<string, TrackedComponent>();
  readonly #trackedNames = new Set<string>();
  readonly #trackedFamilies = new Set<string>();
  readonly #shareRegistry: boolean;
  readonly #owned: string[] = [];
  #closing: Promise<void> | undefined;

  #lastWall: number;
  #lastCpu: NodeJS.CpuUsage;
  #lastElu: EventLoopUtilization;
  #latest: PerformanceMetrics;

  #activeConnections = 0;
  #intervalRequests = 0;
  #intervalErrors = 0;
  #intervalDurationMs = 0;
  #messages = 0;
  #agentExecutions = 0;
  #toolCalls = 0;
  #cacheHits = 0;
  #cacheMisses = 0;

  #stats = {
    collections: 0,
    exports: 0,
    exportFailures: 0,
    exportTimeouts: 0,
    exportsSkipped: 0,
    seriesDropped: 0,
    statsFailures: 0,
  };

  readonly #m: ReturnType<typeof createMetrics>;
  readonly #requests: SeriesGuard<{ inc(): void }>;
  readonly #requestErrors: SeriesGuard<{ inc(): void }>;
  readonly #latency: SeriesGuard<{ observe(value: number): void }>;
  readonly #agents: SeriesGuard<{ inc(): void }>;
  readonly #tools: SeriesGuard<{ inc(): void }>;
  readonly #exportFailureCounters: SeriesGuard<{ inc(): void }>;

  constructor(options: MetricsCollectorOptions = {}) {
    super();
    const o = check.object<MetricsCollectorOptions>('options', options);
    const intervalMs = check.integer('intervalMs', o.intervalMs ?? DEFAULT_METRICS_INTERVAL_MS);
    this.#maxSeries = check.integer('maxSeries', o.maxSeries ?? DEFAULT_METRICS_MAX_SERIES, 1);
    this.#exportTimeoutMs = check.integer(
      'exportTimeoutMs',
      o.exportTimeoutMs ?? DEFAULT_METRICS_EXPORT_TIMEOUT_MS,
      1,
    );
    this.#clock = check.clock('clock', o.clock ?? systemClock);
    if (o.registry !== undefined && !(o.registry instanceof Registry)) {
      throw new TypeError(`registry must be a prom-client Registry, got ${typeof o.registry}`);
    }
    const buckets = o.latencyBuckets ?? DEFAULT_LATENCY_BUCKETS_SECONDS;
    if (!Array.isArray(buckets) || buckets.length === 0 || buckets.some((b) => !(b > 0))) {
      throw new TypeError(`latencyBuckets must be a non-empty array of positive numbers, got ${buckets}`);
    }
    this.registry = o.registry ?? new Registry();
    this.#shareRegistry = o.registry !== undefined;
    this.#m = createMetrics(this.registry, buckets, this.#owned);

    const dropped = (metric: string) => () => {
      this.#stats.seriesDropped++;
      this.#m.seriesDropped.inc({ metric });
    };
    const m = this.#m;
    this.#requests = new SeriesGuard(
      this.#maxSeries,
      (l) => m.requests.labels(...l),
      dropped('clawperf_http_requests_total'),
    );
    this.#requestErrors = new SeriesGuard(
      this.#maxSeries,
      (l) => m.requestErrors.labels(...l),
      dropped('clawperf_http_request_errors_total'),
    );
    this.#latency = new SeriesGuard(
      this.#maxSeries,
      (l) => m.latency.labels(...l),
      dropped('clawperf_http_request_duration_seconds'),
    );
    this.#agents = new SeriesGuard(
      this.#maxSeries,
      (l) => m.agentExecutions.labels(...l),
      dropped('clawperf_agent_executions_total'),
    );
    this.#tools = new SeriesGuard(
      this.#maxSeries,
      (l) => m.toolCalls.labels(...l),
      dropped('clawperf_tool_calls_total'),
    );
    this.#exportFailureCounters = new SeriesGuard(
      this.#maxSeries,
      (l) => m.exportFailures.labels(...l),
      dropped('clawperf_metrics_export_failures_total'),
    );

    this.#loopDelay = monitorEventLoopDelay({ resolution: EVENT_LOOP_RESOLUTION_MS });
    this.#loopDelay.enable();
    this.#lastWall = this.#clock.now();
    this.#lastCpu = process.cpuUsage();
    this.#lastElu = performance.eventLoopUtilization();
    this.#latest = this.#sample();
    if (intervalMs > 0) {
      this.#timer = setInterval(() => {
        this.collect().catch(() => {});
      }, intervalMs);
      this.#timer.unref();
    }
  }

  /**
   * Registers an exporter: a push exporter (with `export`) receives a batch on every collection; a
   * PrometheusExporter (with `attach`) serves this collector's metrics. Every registered exporter is closed
   * by `close()`. Throws `TypeError` for an object with neither method, or one `attach` refuses.
   */
  registerExporter(exporter: MetricsExporter): this {
    this.#assertOpen();
    if (
      exporter === null ||
      typeof exporter !== 'object' ||
      (typeof exporter.export !== 'function' && typeof exporter.attach !== 'function')
    ) {
      throw new TypeError('exporter must be an object with an export(batch) or attach(collector) method');
    }
    if (this.#exporters.some((entry) => entry.exporter === exporter)) return this;
    exporter.attach?.(this);
    const entry: ExporterEntry = {
      exporter,
      name: exporter.name ?? exporter.constructor.name,
      inFlight: undefined,
    };
    this.#exporters.push(entry);
    if (typeof exporter.export === 'function') this.#pushers.push(entry);
    return this;
  }

  /**
   * Exports `component.stats()` as `clawperf_<name>_<field>` gauges, and the fields listed in
   * `component.statsCounters` as `clawperf_<name>_<field>_total` counters, read at scrape time: the
   * component's hot path pays nothing. Nested objects are flattened with `_`. Fields past `maxSeries` per
   * component, or whose name another metric already has, are dropped and counted. Returns a function that
   * stops tracking.
   */
  track(name: string, component: Trackable): () => void {
    this.#assertOpen();
    if (typeof name !== 'string' || !/^[a-zA-Z_][a-zA-Z0-9_]*$/.test(name)) {
      throw new TypeError(`name must be a metric name part ([a-zA-Z_][a-zA-Z0-9_]*), got ${String(name)}`);
    }
    if (component === null || typeof component !== 'object' || typeof component.stats !== 'function') {
      throw new TypeError(`component must have a stats() method, got ${typeof component}`);
    }
    if (this.#tracked.has(name)) throw new TypeError(`name "${name}" is already tracked`);
    const tracked: TrackedComponent = {
      name,
      component,
      counters: new Set((component.statsCounters ?? []).map((f) => sanitize(f))),
      fields: new Map(),
      exported: 0,
      snapshot: undefined,
      lastGood: {},
    };
    this.#tracked.set(name, tracked);
    try {
      this.#discover(tracked, this.#read(tracked), true);
    } catch (error) {
      this.#untrack(tracked);
      throw error;
    } finally {
      tracked.snapshot = undefined;
    }
    return () => this.#untrack(tracked);
  }

  #untrack(tracked: TrackedComponent): void {
    if (this.#tracked.get(tracked.name) !== tracked) return;
    this.#tracked.delete(tracked.name);
    for (const field of tracked.fields.values()) {
      if (field === null) continue;
      this.#trackedNames.delete(field.name);
      this.#trackedFamilies.delete(field.family);
      if (this.#shareRegistry) this.registry.removeSingleMetric(field.name);
    }
  }

  /**
   * A tracked component's stats, flattened; the last good read when stats() throws. In a shared registry
   * the per-field collect() callbacks of one `registry.metrics()` call share one read.
   */
  #read(tracked: TrackedComponent): Record<string, number> {
    if (tracked.snapshot === undefined) {
      try {
        const flat: Record<string, number> = {};
        flatten(tracked.component.stats(), '', flat);
        tracked.lastGood = flat;
      } catch {
        this.#stats.statsFailures++;
      }
      tracked.snapshot = tracked.lastGood;
      queueMicrotask(() => {
        tracked.snapshot = undefined;
      });
    }
    return tracked.snapshot;
  }

  /**
   * Names a metric for every field not seen before, up to `maxSeries` per component. Names follow
   * Prometheus' conventions whatever the field's spelling: snake_case (`rateLimited` becomes
   * `rate_limited`), and seconds, the base unit, for the milliseconds clawperf counts durations in
   * (`queueWaitMs` becomes `queue_wait_seconds`, its value divided by 1000).
   */
  #discover(tracked: TrackedComponent, snapshot: Record<string, number>, strict = false): void {
    const prefix = `clawperf_${snakeCase(tracked.name)}_`;
    for (const field in snapshot) {
      if (tracked.fields.has(field)) continue;
      const counter = tracked.counters.has(field);
      const [part, divisor] = inSeconds(snakeCase(field));
      const base = `${prefix}${part}`;
      // A counter already named `x_total` keeps one suffix, unless the component also has a field `x`:
      // OpenMetrics would then see two families named `x`.
      const single = counter && base.endsWith('_total') && !(part.slice(0, -6) in partsOf(snapshot));
      const name = counter && !single ? `${base}_total` : base;
      const family = counter ? name.slice(0, -6) : name;
      const taken =
        this.#trackedNames.has(name) ||
        this.#trackedFamilies.has(family) ||
        this.registry.getSingleMetric(name) !== undefined ||
        this.registry.getSingleMetric(family) !== undefined ||
        this.registry.getSingleMetric(`${family}_total`) !== undefined;
      if (taken && strict) {
        throw new TypeError(`cannot track "${tracked.name}": a metric named ${name} already exists`);
      }
      if (taken || tracked.exported >= this.#maxSeries) {
        tracked.fields.set(field, null);
        this.#stats.seriesDropped++;
        this.#m.seriesDropped.inc({ metric: prefix.slice(0, -1) });
        continue;
      }
      const help = `${tracked.name}.stats().${field}${divisor === 1 ? '' : ' / 1000'}`;
      const metric: TrackedField = { name, family, help, counter, divisor, head: {} };
      tracked.fields.set(field, metric);
      tracked.exported++;
      this.#trackedNames.add(name);
      this.#trackedFamilies.add(family);
      if (this.#shareRegistry) this.#register(tracked, field, metric);
    }
  }

  /** Registers one field as a prom-client metric read through collect(), for a registry served by others. */
  #register(tracked: TrackedComponent, field: string, { name, help, counter, divisor }: TrackedField): void {
    const registers = [this.registry];
    const value = () => {
      const v = this.#read(tracked)[field];
      return typeof v === 'number' && Number.isFinite(v) ? v / divisor : undefined;
    };
    if (counter) {
      const metric: Counter = new Counter({
        name,
        help,
        registers,
        collect: () => {
          const v = value();
          if (v === undefined || v < 0) return;
          metric.reset();
          metric.inc(v);
        },
      });
    } else {
      const metric: Gauge = new Gauge({
        name,
        help,
        registers,
        collect: () => {
          const v = value();
          if (v !== undefined) metric.set(v);
        },
      });
    }
  }

  /** Counts one request: rate, errors and latency, labelled by method, route and status. */
  recordRequest(request: RequestRecord): void {
    if (this.#closing) return;
    const method = request.method ?? '';
    const route = request.route ?? '';
    const status = request.status ?? 0;
    const failed = request.error ?? status >= 500;
    const durationMs = Math.max(request.durationMs, 0) || 0;
    this.#intervalRequests++;
    this.#intervalDurationMs += durationMs;
    this.#requests.get([method, route, String(status)])?.inc();
    this.#latency.get([method, route])?.observe(durationMs / 1e3);
    if (failed) {
      this.#intervalErrors++;
      this.#requestErrors.get([method, route])?.inc();
    }
  }

  /** A client connection opened. */
  connectionOpened(): void {
    this.#activeConnections++;
    this.#m.connections.set(this.#activeConnections);
  }

  /** A client connection closed. */
  connectionClosed(): void {
    if (this.#activeConnections > 0) this.#activeConnections--;
    this.#m.connections.set(this.#activeConnections);
  }

  /** Counts processed messages. @default count 1 */
  recordMessage(count = 1): void {
    if (this.#closing || !(count > 0)) return;
    this.#messages += count;
    this.#m.messages.inc(count);
  }

  /** Counts one agent execution. */
  recordAgentExecution(execution: { agent?: string; ok?: boolean } = {}): void {
    if (this.#closing) return;
    this.#agentExecutions++;
    this.#agents.get([execution.agent ?? '', execution.ok === false ? 'error' : 'ok'])?.inc();
  }

  /** Counts one tool call. */
  recordToolCall(call: { tool?: string; ok?: boolean } = {}): void {
    if (this.#closing) return;
    this.#toolCalls++;
    this.#tools.get([call.tool ?? '', call.ok === false ? 'error' : 'ok'])?.inc();
  }

  /** Counts one cache lookup. */
  recordCacheLookup(hit: boolean): void {
    if (this.#closing) return;
    if (hit) {
      this.#cacheHits++;
      this.#m.cacheLookups.inc({ result: 'hit' });
    } else {
      this.#cacheMisses++;
      this.#m.cacheLookups.inc({ result: 'miss' });
    }
    this.#m.cacheHitRatio.set(this.#cacheHits / (this.#cacheHits + this.#cacheMisses));
  }

  /** The metrics of the last completed interval. */
  getMetrics(): PerformanceMetrics {
    return this.#latest;
  }

  /** The exposition of every metric in the registry and every tracked component, in Prometheus text or OpenMetrics. */
  async scrape(format: ExpositionFormat = 'prometheus'): Promise<string> {
    this.#assertOpen();
    const own = await this.#ownFamilies();
    const parts = await renderFamilies(own, format);
    // Tracked fields go straight from the stats() read to text, with their header lines rendered once: a
    // page of 10,000 fields then allocates little and never holds the event loop long (bench/metrics.ts).
    await this.#eachTracked((field, value) => {
      let head = field.head[format];
      if (head === undefined) {
        head = renderHead(field.name, field.help, field.counter ? 'counter' : 'gauge', format);
        field.head[format] = head;
      }
      parts.push(`${head} ${formatValue(value)}\n`);
    });
    if (format === 'openmetrics') parts.push('# EOF\n');
    return parts.join('');
  }

  /** Every metric family in the registry and every tracked component, read now (what push exporters get). */
  async families(): Promise<MetricFamily[]> {
    this.#assertOpen();
    return this.#families();
  }

  async #families(): Promise<MetricFamily[]> {
    const families = await this.#ownFamilies();
    await this.#eachTracked((field, value) => {
      families.push({
        name: field.name,
        help: field.help,
        type: (field.counter ? 'counter' : 'gauge') as unknown as MetricFamily['type'],
        aggregator: 'sum',
        values: [{ labels: {}, value }],
      } as MetricFamily);
    });
    return families;
  }

  async #ownFamilies(): Promise<MetricFamily[]> {
    const own = (await this.registry.getMetricsAsJSON()) as MetricFamily[];
    return this.#shareRegistry ? own.filter((f) => !this.#trackedNames.has(f.name)) : own;
  }

  /** Reads every tracked component once and visits each exported field's value, yielding when slow. */
  async #eachTracked(visit: (field: TrackedField, value: number) => void): Promise<void> {
    let since = performance.now();
    let n = 0;
    for (const tracked of this.#tracked.values()) {
      tracked.snapshot = undefined;
      const snapshot = this.#read(tracked);
      this.#discover(tracked, snapshot);
      for (const [key, field] of tracked.fields) {
        if (field === null) continue;
        const value = snapshot[key];
        if (typeof value !== 'number' || !Number.isFinite(value) || (field.counter && value < 0)) continue;
        visit(field, value / field.divisor);
        if ((++n & 255) === 0 && performance.now() - since > YIELD_EVERY_MS) {
          await new Promise((resolve) => setImmediate(resolve));
          since = performance.now();
        }
      }
    }
  }

  /**
   * Samples the interval that just ended and pushes a batch to every exporter. Runs on the timer; call it
   * yourself when `intervalMs` is 0. Resolves when every exporter has finished or timed out; never rejects
   * for an exporter's failure.
   */
  async collect(): Promise<void> {
    this.#assertOpen();
    await this.#collect();
  }

  async #collect(): Promise<void> {
    this.#latest = this.#sample();
    this.#stats.collections++;
    if (this.#pushers.length === 0) return;
    let families: MetricFamily[];
    try {
      families = await this.#families();
    } catch (error) {
      this.#stats.statsFailures++;
      this.emit('collectError', error);
      return;
    }
    const batch: ExportBatch = { time: Date.now(), metrics: this.#latest, families };
    await Promise.all(this.#pushers.map((entry) => this.#export(entry, batch)));
  }

  async #export(entry: ExporterEntry, batch: ExportBatch): Promise<void> {
    if (entry.inFlight !== undefined) {
      // The previous push is still running: skip this one rather than pile pushes onto a slow exporter.
      this.#stats.exportsSkipped++;
      return;
    }
    const controller = new AbortController();
    let timedOut = false;
    const fail = (error: unknown) => {
      this.#stats.exportFailures++;
      this.#exportFailureCounters.get([entry.name])?.inc();
      this.emit('exportError', error, entry.name);
    };
    const run = Promise.resolve()
      .then(() => entry.exporter.export!(batch, { signal: controller.signal }))
      .then(
        () => {
          if (!timedOut) this.#stats.exports++;
        },
        (error: unknown) => {
          if (!timedOut) fail(error);
        },
      )
      .finally(() => {
        entry.inFlight = undefined;
      });
    entry.inFlight = run;
    let timer: NodeJS.Timeout | undefined;
    // Left ref'ed: someone awaits this push (collect() or close()), and the wait is bounded.
    const deadline = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), this.#exportTimeoutMs);
    });
    const outcome = await Promise.race([run, deadline]);
    clearTimeout(timer);
    if (outcome === 'timeout') {
      timedOut = true;
      this.#stats.exportTimeouts++;
      const error = new TimeoutError(`export to ${entry.name}`, this.#exportTimeoutMs);
      controller.abort(error);
      fail(error);
    }
  }

  #sample(): PerformanceMetrics {
    const now = this.#clock.now();
    const wallMs = now - this.#lastWall;
    const cpu = process.cpuUsage(this.#lastCpu);
    const elu = performance.eventLoopUtilization(this.#lastElu);
    this.#lastWall = now;
    this.#lastCpu = process.cpuUsage();
    this.#lastElu = performance.eventLoopUtilization();
    const cpuRatio = wallMs > 0 ? (cpu.user + cpu.system) / 1e3 / wallMs : 0;
    const memory = process.memoryUsage();
    const h = this.#loopDelay;
    const delay = delaySummary(h);
    h.reset();
    const load = loadavg();
    const requests = this.#intervalRequests;
    const lookups = this.#cacheHits + this.#cacheMisses;
    const metrics: PerformanceMetrics = {
      system: {
        cpuUsage: cpuRatio,
        memoryUsage: memory.heapUsed / 1024 / 1024,
        heapUsedBytes: memory.heapUsed,
        heapTotalBytes: memory.heapTotal,
        rssBytes: memory.rss,
        externalBytes: memory.external,
        eventLoopDelay: delay,
        eventLoopUtilization: elu.utilization,
        uptime: process.uptime(),
        loadAverage: load,
      },
      application: {
        activeConnections: this.#activeConnections,
        requestRate: wallMs > 0 ? (requests * 1e3) / wallMs : 0,
        errorRate: requests > 0 ? this.#intervalErrors / requests : 0,
        averageResponseTime: requests > 0 ? this.#intervalDurationMs / requests : 0,
      },
      business: {
        messagesProcessed: this.#messages,
        agentExecutions: this.#agentExecutions,
        toolCalls: this.#toolCalls,
        cacheHitRate: lookups > 0 ? this.#cacheHits / lookups : 0,
      },
    };
    this.#intervalRequests = 0;
    this.#intervalErrors = 0;
    this.#intervalDurationMs = 0;

    const m = this.#m;
    m.cpu.set(cpuRatio);
    m.heapUsed.set(memory.heapUsed);
    m.heapTotal.set(memory.heapTotal);
    m.rss.set(memory.rss);
    m.external.set(memory.external);
    m.uptime.set(metrics.system.uptime);
    m.load.set({ window: '1m' }, load[0] ?? 0);
    m.load.set({ window: '5m' }, load[1] ?? 0);
    m.load.set({ window: '15m' }, load[2] ?? 0);
    m.loopMin.set(delay.min / 1e3);
    m.loopMean.set(delay.mean / 1e3);
    m.loopP50.set(delay.p50 / 1e3);
    m.loopP90.set(delay.p90 / 1e3);
    m.loopP99.set(delay.p99 / 1e3);
    m.loopMax.set(delay.max / 1e3);
    m.loopUtilization.set(elu.utilization);
    return metrics;
  }

  /** Counters of the collector itself (numbers only). */
  stats(): {
    collections: number;
    exports: number;
    exportFailures: number;
    exportTimeouts: number;
    exportsSkipped: number;
    seriesDropped: number;
    statsFailures: number;
    exporters: number;
    tracked: number;
  } {
    return { ...this.#stats, exporters: this.#exporters.length, tracked: this.#tracked.size };
  }

  /**
   * Stops the timer, pushes a last batch, waits (each bounded by `exportTimeoutMs`) for exporters to finish
   * and `close()` them, and removes this collector's metrics from the registry. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    await Promise.all(this.#pushers.map((e) => this.#bounded(e.inFlight)));
    await this.#collect();
    await Promise.all(
      this.#exporters.map((entry) =>
        this.#bounded(
          Promise.resolve()
            .then(() => entry.exporter.close?.())
            .catch((error: unknown) => {
              this.#stats.exportFailures++;
              this.emit('exportError', error, entry.name);
            }),
        ),
      ),
    );
    this.#loopDelay.disable();
    for (const tracked of [...this.#tracked.values()]) this.#untrack(tracked);
    for (const name of this.#owned) this.registry.removeSingleMetric(name);
  }

  /** Waits for `promise`, at most `exportTimeoutMs`. */
  async #bounded(promise: Promise<unknown> | undefined): Promise<void> {
    if (promise === undefined) return;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, this.#exportTimeoutMs);
    });
    await Promise.race([promise, deadline]);
    clearTimeout(timer);
  }

  #assertOpen(): void {
    if (this.#closing) throw new ClosedError('MetricsCollector');
  }
}

/** The collector's own metrics, registered in `registry`; their names are pushed to `owned`. */
function createMetrics(registry: Registry, buckets: readonly number[], owned: string[]) {
  const registers = [registry];
  const own = <T>(name: string, metric: T): T => {
    owned.push(name);
    return metric;
  };
  const gauge = (name: string, help: string, labelNames: string[] = []) =>
    own(`clawperf_${name}`, new Gauge({ name: `clawperf_${name}`, help, labelNames, registers }));
  const counter = (name: string, help: string, labelNames: string[] = []) =>
    own(
      `clawperf_${name}_total`,
      new Counter({ name: `clawperf_${name}_total`, help, labelNames, registers }),
    );
  return {
    cpu: gauge('process_cpu_usage_ratio', 'CPU time used over the last interval per second of wall time'),
    heapUsed: gauge('process_heap_used_bytes', 'V8 heap in use'),
    heapTotal: gauge('process_heap_total_bytes', 'V8 heap allocated'),
    rss: gauge('process_resident_memory_bytes', 'Resident set size'),
    external: gauge('process_external_memory_bytes', 'Memory of C++ objects bound to JavaScript objects'),
    uptime: gauge('process_uptime_seconds', 'Process uptime'),
    load: gauge('system_load_average', 'System load average', ['window']),
    loopMin: gauge('eventloop_delay_min_seconds', 'Minimum event-loop delay over the last interval'),
    loopMean: gauge('eventloop_delay_mean_seconds', 'Mean event-loop delay over the last interval'),
    loopP50: gauge('eventloop_delay_p50_seconds', 'Median event-loop delay over the last interval'),
    loopP90: gauge('eventloop_delay_p90_seconds', '90th percentile event-loop delay over the last interval'),
    loopP99: gauge('eventloop_delay_p99_seconds', '99th percentile event-loop delay over the last interval'),
    loopMax: gauge('eventloop_delay_max_seconds', 'Maximum event-loop delay over the last interval'),
    loopUtilization: gauge(
      'eventloop_utilization_ratio',
      'Share of the last interval the event loop was busy',
    ),
    connections: gauge('http_active_connections', 'Open client connections'),
    requests: counter('http_requests', 'HTTP requests served', ['method', 'route', 'status']),
    requestErrors: counter('http_request_errors', 'HTTP requests that failed', ['method', 'route']),
    latency: own(
      'clawperf_http_request_duration_seconds',
      new Histogram({
        name: 'clawperf_http_request_duration_seconds',
        help: 'HTTP request duration',
        labelNames: ['method', 'route'],
        buckets: [...buckets],
        registers,
      }),
    ),
    messages: counter('messages_processed', 'Messages processed'),
    agentExecutions: counter('agent_executions', 'Agent executions', ['agent', 'outcome']),
    toolCalls: counter('tool_calls', 'Tool calls', ['tool', 'outcome']),
    cacheLookups: counter('cache_lookups', 'Cache lookups by result (hit or miss)', ['result']),
    cacheHitRatio: gauge('cache_hit_ratio', 'Cache hits per lookup since start'),
    seriesDropped: counter(
      'metrics_series_dropped',
      'Label sets (or tracked fields) dropped by the cardinality guard',
      ['metric'],
    ),
    exportFailures: counter('metrics_export_failures', 'Exporter pushes that failed or timed out', [
      'exporter',
    ]),
  };
}

/**
 * A name part in snake_case: `rateLimited` -> `rate_limited`, `HTTPErrors` -> `http_errors`,
 * `errors4xx` -> `errors4xx`; snake_case stays as it is.
 */
function snakeCase(name: string): string {
  return name
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1_$2')
    .toLowerCase();
}

/**
 * A snake_case name part with its `ms` unit (milliseconds, clawperf's unit of durations) turned into
 * `seconds`, Prometheus' base unit, and what the value is divided by for it.
 */
function inSeconds(part: string): [string, number] {
  if (!/(^|_)ms(_|$)/.test(part)) return [part, 1];
  return [part.replace(/(^|_)ms(?=_|$)/g, '$1seconds'), 1000];
}

/** The metric name parts of a snapshot's fields (a set as an object, for `in`). */
function partsOf(snapshot: Record<string, number>): Record<string, true> {
  const out: Record<string, true> = {};
  for (const field in snapshot) out[inSeconds(snakeCase(field))[0]] = true;
  return out;
}

/** A metric-name-safe field name. */
function sanitize(field: string): string {
  return field.replace(/[^a-zA-Z0-9_]/g, '_');
}

function flatten(value: object, prefix: string, out: Record<string, number>): void {
  for (const [key, v] of Object.entries(value)) {
    const name = prefix === '' ? sanitize(key) : `${prefix}_${sanitize(key)}`;
    if (typeof v === 'number') out[name] = v;
    else if (v !== null && typeof v === 'object' && !Array.isArray(v)) flatten(v, name, out);
  }
}
