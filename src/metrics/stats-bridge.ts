/**
 * The `stats()` bridge to Prometheus: components tracked by a {@link MetricsCollector} are read through their
 * `stats()` at scrape time, and each numeric field becomes a metric named by Prometheus' conventions. The
 * component's hot path pays nothing: it only counts in plain fields.
 *
 * @module
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import * as check from '../internal/options.ts';
import type { ExpositionFormat, Slicer } from './exposition.ts';

/** Anything with `stats()`: a flat (or nested, flattened with `_`) object of numbers. */
export interface Trackable {
  stats(): object;
  /** Fields that only grow; exported as counters `..._total`. */
  readonly statsCounters?: readonly string[];
}

/** One exported field of a tracked component. */
export interface TrackedField {
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

export interface StatsBridgeOptions {
  /** The collector's registry: names in use there are not taken again. */
  registry: Registry;
  /** Also register every field in `registry` as a prom-client metric read through `collect()`. */
  shareRegistry: boolean;
  /** Fields exported per component; the rest are dropped. */
  maxSeries: number;
  /** A `stats()` threw (its last good read is used). */
  onStatsFailure: () => void;
  /** A field was dropped: past `maxSeries`, or its name taken. `metric` is the component's metric prefix. */
  onDropped: (metric: string) => void;
}

/** The components a collector tracks, and the metrics their `stats()` fields become. */
export class StatsBridge {
  readonly #o: StatsBridgeOptions;
  readonly #tracked = new Map<string, TrackedComponent>();
  readonly #names = new Set<string>();
  readonly #families = new Set<string>();

  constructor(options: StatsBridgeOptions) {
    this.#o = options;
  }

  /** Components tracked now. */
  get size(): number {
    return this.#tracked.size;
  }

  /** Whether `name` is the metric of a tracked field. */
  has(name: string): boolean {
    return this.#names.has(name);
  }

  /**
   * Starts exporting `component.stats()` as `clawperf_<name>_<field>`; returns the function that stops it.
   * @throws {TypeError} for a bad name or component, a name already tracked, or a field whose metric name
   *   another metric already has.
   */
  track(name: string, component: Trackable): () => void {
    if (typeof name !== 'string' || !/^[a-zA-Z_][a-zA-Z0-9_]*$/.test(name)) {
      check.invalid('name', 'a metric name part ([a-zA-Z_][a-zA-Z0-9_]*)', name);
    }
    if (component === null || typeof component !== 'object' || typeof component.stats !== 'function') {
      check.invalid('component', 'an object with a stats() method', component);
    }
    if (this.#tracked.has(name)) check.invalid('name', 'a name not already tracked', name);
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

  /** Stops tracking every component. */
  clear(): void {
    for (const tracked of [...this.#tracked.values()]) this.#untrack(tracked);
  }

  /** Reads every tracked component once and visits each exported field's value, yielding between slices. */
  async each(visit: (field: TrackedField, value: number) => void, slicer: Slicer): Promise<void> {
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
        if ((++n & 255) === 0 && slicer.spent) await slicer.yield();
      }
    }
  }

  #untrack(tracked: TrackedComponent): void {
    if (this.#tracked.get(tracked.name) !== tracked) return;
    this.#tracked.delete(tracked.name);
    for (const field of tracked.fields.values()) {
      if (field === null) continue;
      this.#names.delete(field.name);
      this.#families.delete(field.family);
      if (this.#o.shareRegistry) this.#o.registry.removeSingleMetric(field.name);
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
        this.#o.onStatsFailure();
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
    const registry = this.#o.registry;
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
        this.#names.has(name) ||
        this.#families.has(family) ||
        registry.getSingleMetric(name) !== undefined ||
        registry.getSingleMetric(family) !== undefined ||
        registry.getSingleMetric(`${family}_total`) !== undefined;
      if (taken && strict) {
        throw new TypeError(`cannot track "${tracked.name}": a metric named ${name} already exists`);
      }
      if (taken || tracked.exported >= this.#o.maxSeries) {
        tracked.fields.set(field, null);
        this.#o.onDropped(prefix.slice(0, -1));
        continue;
      }
      const help = `${tracked.name}.stats().${field}${divisor === 1 ? '' : ' / 1000'}`;
      const metric: TrackedField = { name, family, help, counter, divisor, head: {} };
      tracked.fields.set(field, metric);
      tracked.exported++;
      this.#names.add(name);
      this.#families.add(family);
      if (this.#o.shareRegistry) this.#register(tracked, field, metric);
    }
  }

  /** Registers one field as a prom-client metric read through collect(), for a registry served by others. */
  #register(tracked: TrackedComponent, field: string, { name, help, counter, divisor }: TrackedField): void {
    const registers = [this.#o.registry];
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
