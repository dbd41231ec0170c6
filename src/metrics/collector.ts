/**
 * MetricsCollector: system, application and business metrics (seed 20.1.1) in a prom-client registry of its
 * own, components tracked through their `stats()` read at scrape time, and push exporters fed on an interval.
 *
 * The collector is here; its parts are beside it: the metrics it defines (`collector-metrics.ts`), system
 * sampling (`system-sampler.ts`), the `stats()` bridge to Prometheus (`stats-bridge.ts`) and the bound on
 * label sets (`series-guard.ts`).
 *
 * @module
 */
import { EventEmitter } from 'node:events';
import { Registry } from 'prom-client';
import { ClosedError, TimeoutError } from '../errors.ts';
import { type Clock, systemClock } from '../internal/clock.ts';
import * as check from '../internal/options.ts';
import {
  type CollectorMetrics,
  createCollectorMetrics,
  DEFAULT_LATENCY_BUCKETS_SECONDS,
} from './collector-metrics.ts';
import {
  type ExpositionFormat,
  formatValue,
  type MetricFamily,
  renderFamilies,
  renderHead,
  Slicer,
} from './exposition.ts';
import { SeriesGuard } from './series-guard.ts';
import { StatsBridge, type Trackable } from './stats-bridge.ts';
import { type SystemMetrics, SystemSampler } from './system-sampler.ts';

export { DEFAULT_LATENCY_BUCKETS_SECONDS } from './collector-metrics.ts';
export type { Trackable } from './stats-bridge.ts';

/** Collection interval. `0` turns the timer off (call `collect()` yourself). @default 10_000 */
export const DEFAULT_METRICS_INTERVAL_MS = 10_000;
/** Label sets kept per metric (and fields per tracked component) before new ones are dropped. @default 1_000 */
export const DEFAULT_METRICS_MAX_SERIES = 1_000;
/** How long one exporter's push may take before the collector stops waiting for it. @default 5_000 */
export const DEFAULT_METRICS_EXPORT_TIMEOUT_MS = 5_000;

/** What the collector measured over its last interval (the seed's shape). */
export interface PerformanceMetrics {
  system: SystemMetrics;
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
  /**
   * Time source for interval rates (CPU ratio, request rate) and for the slices a scrape yields to the event
   * loop between. @default systemClock
   */
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

/** A metric in a prom-client registry, as `getMetricsAsArray()` holds it. */
interface RegisteredMetric {
  name: string;
  get(): Promise<MetricFamily> | MetricFamily;
}

interface ExporterEntry {
  exporter: MetricsExporter;
  name: string;
  inFlight: Promise<void> | undefined;
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

  readonly #maxSeries: number;
  readonly #exportTimeoutMs: number;
  readonly #clock: Clock;
  readonly #timer: NodeJS.Timeout | undefined;
  readonly #system: SystemSampler;
  readonly #tracked: StatsBridge;
  /** Every registered exporter; `#pushers` holds those with `export`. */
  readonly #exporters: ExporterEntry[] = [];
  readonly #pushers: ExporterEntry[] = [];
  readonly #shareRegistry: boolean;
  readonly #owned: string[] = [];
  #closing: Promise<void> | undefined;
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

  readonly #m: CollectorMetrics;
  readonly #requests: SeriesGuard<{ inc(): void }>;
  readonly #requestErrors: SeriesGuard<{ inc(): void }>;
  readonly #latency: SeriesGuard<{ observe(value: number): void }>;
  readonly #agents: SeriesGuard<{ inc(): void }>;
  readonly #tools: SeriesGuard<{ inc(): void }>;
  readonly #exportFailureCounters: SeriesGuard<{ inc(): void }>;

  /** @throws {TypeError} naming the option, its allowed range and the value, when an option is invalid. */
  constructor(options: MetricsCollectorOptions = {}) {
    super();
    const o = check.object<MetricsCollectorOptions>('options', options);
    const intervalMs = check.integer('options.intervalMs', o.intervalMs ?? DEFAULT_METRICS_INTERVAL_MS);
    this.#maxSeries = check.integer('options.maxSeries', o.maxSeries ?? DEFAULT_METRICS_MAX_SERIES, 1);
    this.#exportTimeoutMs = check.integer(
      'options.exportTimeoutMs',
      o.exportTimeoutMs ?? DEFAULT_METRICS_EXPORT_TIMEOUT_MS,
      1,
    );
    const clock = check.clock<Clock>('options.clock', o.clock ?? systemClock);
    this.#clock = clock;
    if (o.registry !== undefined)
      check.instance('options.registry', o.registry, Registry, 'a prom-client Registry');
    const buckets = o.latencyBuckets ?? DEFAULT_LATENCY_BUCKETS_SECONDS;
    if (!Array.isArray(buckets) || buckets.length === 0 || buckets.some((b) => !(b > 0))) {
      check.invalid('options.latencyBuckets', 'a non-empty array of positive numbers', buckets);
    }
    this.registry = o.registry ?? new Registry();
    this.#shareRegistry = o.registry !== undefined;
    const m = createCollectorMetrics(this.registry, buckets, this.#owned);
    this.#m = m;
    const guard = <C>(metric: string, create: (labels: string[]) => C) =>
      new SeriesGuard(this.#maxSeries, create, () => this.#dropped(metric));
    this.#requests = guard('clawperf_http_requests_total', (l) => m.requests.labels(...l));
    this.#requestErrors = guard('clawperf_http_request_errors_total', (l) => m.requestErrors.labels(...l));
    this.#latency = guard('clawperf_http_request_duration_seconds', (l) => m.latency.labels(...l));
    this.#agents = guard('clawperf_agent_executions_total', (l) => m.agentExecutions.labels(...l));
    this.#tools = guard('clawperf_tool_calls_total', (l) => m.toolCalls.labels(...l));
    this.#exportFailureCounters = guard('clawperf_metrics_export_failures_total', (l) =>
      m.exportFailures.labels(...l),
    );
    this.#tracked = new StatsBridge({
      registry: this.registry,
      shareRegistry: this.#shareRegistry,
      maxSeries: this.#maxSeries,
      onStatsFailure: () => {
        this.#stats.statsFailures++;
      },
      onDropped: (metric) => this.#dropped(metric),
    });
    this.#system = new SystemSampler(clock, m);
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
      check.invalid('exporter', 'an object with an export(batch) or attach(collector) method', exporter);
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
   *
   * @throws {TypeError} for a bad name or component, a name already tracked, or a field whose metric name
   *   the registry already has.
   */
  track(name: string, component: Trackable): () => void {
    this.#assertOpen();
    return this.#tracked.track(name, component);
  }

  /** A label set (or a tracked field) dropped by a guard: counted, by metric. */
  #dropped(metric: string): void {
    this.#stats.seriesDropped++;
    this.#m.seriesDropped.inc({ metric });
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
    const slicer = new Slicer(this.#clock);
    const parts = await renderFamilies(await this.#ownFamilies(slicer), format, slicer);
    // Tracked fields go straight from the stats() read to text, with their header lines rendered once: a
    // page of 10,000 fields then allocates little and never holds the event loop long (bench/metrics.ts).
    await this.#tracked.each((field, value) => {
      let head = field.head[format];
      if (head === undefined) {
        head = renderHead(field.name, field.help, field.counter ? 'counter' : 'gauge', format);
        field.head[format] = head;
      }
      parts.push(`${head} ${formatValue(value)}\n`);
    }, slicer);
    if (format === 'openmetrics') parts.push('# EOF\n');
    return parts.join('');
  }

  /** Every metric family in the registry and every tracked component, read now (what push exporters get). */
  async families(): Promise<MetricFamily[]> {
    this.#assertOpen();
    return this.#families();
  }

  async #families(): Promise<MetricFamily[]> {
    const slicer = new Slicer(this.#clock);
    const families = await this.#ownFamilies(slicer);
    await this.#tracked.each((field, value) => {
      families.push({
        name: field.name,
        help: field.help,
        type: (field.counter ? 'counter' : 'gauge') as unknown as MetricFamily['type'],
        aggregator: 'sum',
        values: [{ labels: {}, value }],
      } as MetricFamily);
    }, slicer);
    return families;
  }

  /**
   * What `registry.getMetricsAsJSON()` returns, less the tracked fields of a shared registry, read one metric
   * per slice of `slicer`. prom-client's own call runs every metric's `collect()` in one turn of the event
   * loop; a gateway's per-tenant families rebuild thousands of label sets each there, and reading them all
   * at once held the loop 25 ms for 10,000 series. Each `get()` is started in turn and all are awaited
   * together, so an asynchronous `collect()` still overlaps the others as it does in prom-client.
   */
  async #ownFamilies(slicer: Slicer): Promise<MetricFamily[]> {
    const pending: (Promise<MetricFamily> | MetricFamily)[] = [];
    for (const metric of this.registry.getMetricsAsArray() as unknown as RegisteredMetric[]) {
      if (this.#shareRegistry && this.#tracked.has(metric.name)) continue;
      pending.push(metric.get());
      if (slicer.spent) await slicer.yield();
    }
    const families = await Promise.all(pending);
    // prom-client keeps a registry's default labels in a field of its own; they are added as it adds them.
    const defaults = (this.registry as unknown as { _defaultLabels?: Record<string, string> })._defaultLabels;
    const names = defaults === undefined ? [] : Object.keys(defaults);
    if (names.length > 0) {
      for (const family of families) {
        for (const value of family.values) {
          const labels: Record<string, string | number | undefined> = { ...value.labels };
          for (const name of names) labels[name] = labels[name] || defaults![name];
          value.labels = labels;
        }
      }
    }
    return families;
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

  /** Ends the interval: its system figures, and the application ones counted since the last sample. */
  #sample(): PerformanceMetrics {
    const { system, wallMs } = this.#system.sample();
    const requests = this.#intervalRequests;
    const lookups = this.#cacheHits + this.#cacheMisses;
    const metrics: PerformanceMetrics = {
      system,
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
    this.#system.close();
    this.#tracked.clear();
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
