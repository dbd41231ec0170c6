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
export const YIELD_EVERY_MS = 2;

/** Each family's text, without the OpenMetrics `# EOF` terminator. */
export async function renderFamilies(families: MetricFamily[], format: ExpositionFormat): Promise<string[]> {
  const parts: string[] = [];
  let since = performance.now();
  for (const family of families) {
    parts.push(renderFamily(family, format));
    if (performance.now() - since > YIELD_EVERY_MS) {
      await new Promise((resolve) => setImmediate(resolve));
      since = performance.now();
    }
  }
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

function renderFamily(family: MetricFamily, format: ExpositionFormat): string {
  const open = format === 'openmetrics';
  const kind = family.type as unknown as string;
  const counter = kind === 'counter';
  const familyName = open && counter ? family.name.replace(/_total$/, '') : family.name;
  const type = open && kind === 'untyped' ? 'unknown' : kind;
  let out = `# HELP ${familyName} ${escapeHelp(family.help, open)}\n# TYPE ${familyName} ${type}\n`;
  for (const sample of family.values) {
    const name = sample.metricName ?? (open && counter ? `${familyName}_total` : family.name);
    out += `${name}${renderLabels(sample.labels)} ${formatValue(sample.value)}\n`;
  }
  return out;
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
  return value.replace(/[\\\n"]/g, (c) => (c === '\n' ? '\\n' : `\\${c}`));
}

function escapeHelp(help: string, open: boolean): string {
  return open ? escapeLabel(help) : help.replace(/[\\\n]/g, (c) => (c === '\n' ? '\\n' : '\\\\'));
}
