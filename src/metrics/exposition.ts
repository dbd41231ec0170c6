/**
 * The text formats a scraper reads: the Prometheus text format 0.0.4 and OpenMetrics 1.0. Rendered from
 * prom-client's JSON view of a registry rather than by `registry.metrics()`, because prom-client's OpenMetrics
 * mode renames counters in place (it strips `_total` from the shared metric object), which would corrupt a
 * Prometheus-format scrape running at the same time.
 */
import type { MetricObjectWithValues, MetricValueWithName } from 'prom-client';

/** One metric family as prom-client reports it. */
export type MetricFamily = MetricObjectWithValues<MetricValueWithName<string>>;

/** `'prometheus'` (text 0.0.4) or `'openmetrics'` (OpenMetrics 1.0.0). */
export type ExpositionFormat = 'prometheus' | 'openmetrics';

/** Content type of the Prometheus text format. */
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';
/** Content type of OpenMetrics text. */
export const OPENMETRICS_CONTENT_TYPE = 'application/openmetrics-text; version=1.0.0; charset=utf-8';

/** A large scrape yields to the event loop after this much work, ms, so it never stalls requests for long. */
export const YIELD_EVERY_MS = 0.5;

/** Samples rendered between two looks at the clock. */
const SAMPLES_PER_CHECK = 64;

/**
 * The time slices of one scrape: `spent` once `YIELD_EVERY_MS` of work has run since the last yield, and
 * `yield()` lets the event loop turn (I/O, timers, other requests) before the next slice.
 */
export class Slicer {
  readonly #clock: { now(): number };
  #since: number;

  constructor(clock: { now(): number } = performance) {
    this.#clock = clock;
    this.#since = clock.now();
  }

  /** Whether this slice has used its time. */
  get spent(): boolean {
    return this.#clock.now() - this.#since > YIELD_EVERY_MS;
  }

  /** Lets the event loop turn, then starts a new slice. */
  async yield(): Promise<void> {
    await new Promise((resolve) => setImmediate(resolve));
    this.#since = this.#clock.now();
  }
}

/**
 * The start of each counter and gauge line (`name{labels} `), by sample name and labels object. prom-client
 * keeps one labels object per series from scrape to scrape (so do the gateway's per-tenant families), so a
 * scrape renders only the series that are new, and each line is made of three flat strings: joining a slice
 * of lines built of five pieces each was most of a large scrape's time. (Histogram samples are new objects
 * at every scrape and are rendered in full.)
 */
const prefixes = new Map<string, WeakMap<object, string>>();

/**
 * Each family's text, without the OpenMetrics `# EOF` terminator, in pieces. Yields between slices of
 * `slicer`, within a family too: the per-tenant families of a gateway hold thousands of samples each. Lines
 * are joined once per slice, so each piece is a flat string: one rope of a whole page, flattened by the
 * final join, held the event loop 5 to 13 ms for 10,000 series.
 */
export async function renderFamilies(
  families: MetricFamily[],
  format: ExpositionFormat,
  slicer: Slicer = new Slicer(),
): Promise<string[]> {
  const open = format === 'openmetrics';
  const parts: string[] = [];
  let lines: string[] = [];
  for (const family of families) {
    const kind = family.type as unknown as string;
    const counter = kind === 'counter';
    const familyName = open && counter ? family.name.replace(/_total$/, '') : family.name;
    const type = open && kind === 'untyped' ? 'unknown' : kind;
    const sampleName = open && counter ? `${familyName}_total` : family.name;
    lines.push(`# HELP ${familyName} ${escapeHelp(family.help, open)}\n# TYPE ${familyName} ${type}\n`);
    let kept = prefixes.get(sampleName);
    if (kept === undefined) {
      kept = new WeakMap();
      prefixes.set(sampleName, kept);
    }
    const values = family.values;
    for (let i = 0; i < values.length; i++) {
      const sample = values[i]!;
      let prefix: string | undefined;
      if (sample.metricName !== undefined) prefix = `${sample.metricName}${renderLabels(sample.labels)} `;
      else {
        prefix = kept.get(sample.labels);
        if (prefix === undefined) {
          prefix = flat(`${sampleName}${renderLabels(sample.labels)} `);
          kept.set(sample.labels, prefix);
        }
      }
      lines.push(`${prefix}${formatValue(sample.value)}\n`);
      if ((i + 1) % SAMPLES_PER_CHECK === 0 && slicer.spent) {
        parts.push(lines.join(''));
        lines = [];
        await slicer.yield();
      }
    }
    if (slicer.spent) {
      parts.push(lines.join(''));
      lines = [];
      await slicer.yield();
    }
  }
  if (lines.length > 0) parts.push(lines.join(''));
  return parts;
}

/**
 * The HELP and TYPE lines of a family with one unlabelled sample, followed by the sample's name (the value
 * and a newline complete it).
 */
export function renderHead(
  name: string,
  help: string,
  type: 'gauge' | 'counter',
  format: ExpositionFormat,
): string {
  const open = format === 'openmetrics';
  const family = open && type === 'counter' ? name.replace(/_total$/, '') : name;
  const sample = open && type === 'counter' ? `${family}_total` : name;
  return `# HELP ${family} ${escapeHelp(help, open)}\n# TYPE ${family} ${type}\n${sample}`;
}

/**
 * `text` as one flat string. V8 keeps a concatenation as a tree of its pieces, which every join that copies
 * it walks again; reading a character flattens the tree in place, once.
 */
function flat(text: string): string {
  return text.charCodeAt(0) >= 0 ? text : text;
}

function renderLabels(labels: Record<string, string | number | undefined>): string {
  let out = '';
  for (const key in labels) {
    const value = labels[key];
    if (value === undefined) continue;
    out += `${out === '' ? '' : ','}${key}="${escapeLabel(String(value))}"`;
  }
  return out === '' ? '' : `{${out}}`;
}

/** A sample value as both formats spell it. */
export function formatValue(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Number.POSITIVE_INFINITY) return '+Inf';
  if (value === Number.NEGATIVE_INFINITY) return '-Inf';
  return String(value);
}

function escapeLabel(value: string): string {
  // Label values seldom need escaping: scanning first spares the regular expression (12 % of a scrape's CPU).
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c === 0x5c || c === 0x0a || c === 0x22) {
      return value.replace(/[\\\n"]/g, (c) => (c === '\n' ? '\\n' : `\\${c}`));
    }
  }
  return value;
}

function escapeHelp(help: string, open: boolean): string {
  return open ? escapeLabel(help) : help.replace(/[\\\n]/g, (c) => (c === '\n' ? '\\n' : '\\\\'));
}
