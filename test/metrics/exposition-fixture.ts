/**
 * Two fixed collectors whose exposition is kept byte for byte in fixtures/: one with its own registry, and
 * one sharing a registry that has default labels and metrics of its own. Values the process measures
 * (CPU, memory, event loop, load) are masked, since they differ on every run.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ExpositionFormat } from '../../src/metrics/exposition.ts';
import { MetricsCollector, type MetricsCollectorOptions } from '../../src/metrics/index.ts';

const VOLATILE = /^(clawperf_process_|clawperf_eventloop_|clawperf_system_load)/;

/** `text` with the sample values of process-measured metrics replaced by `X`. */
export function masked(text: string): string {
  return text
    .split('\n')
    .map((line) => (VOLATILE.test(line) ? line.replace(/ [^ ]+$/, ' X') : line))
    .join('\n');
}

/** The fixed collectors, by fixture name; `options` is passed through (a clock, say). */
export function fixedCollectors(options: MetricsCollectorOptions = {}): Record<string, MetricsCollector> {
  const own = new MetricsCollector({ intervalMs: 0, ...options });
  own.recordRequest({ method: 'POST', route: '/v1/chat', status: 200, durationMs: 84 });
  own.recordRequest({ method: 'POST', route: '/v1/chat', status: 502, durationMs: 3_100 });
  own.recordRequest({ method: 'GET', route: '/a "quoted"\\path\nnext', status: 404, durationMs: 0.4 });
  own.recordCacheLookup(true);
  own.recordCacheLookup(false);
  own.recordCacheLookup(true);
  own.recordMessage(7);
  own.recordAgentExecution({ agent: 'planner' });
  own.recordAgentExecution({ agent: 'planner', ok: false });
  own.recordToolCall({ tool: 'search' });
  own.connectionOpened();
  own.track('pool', {
    stats: () => ({ acquired: 12, waitMs: 1_500, nested: { depth: 3, ratio: 0.25 }, rejected: 2 }),
    statsCounters: ['acquired', 'rejected'],
  });
  own.track('queue', {
    stats: () => ({ size: 4, dropped_total: 9, ageMs: 0.5 }),
    statsCounters: ['dropped_total'],
  });

  const registry = new Registry();
  registry.setDefaultLabels({ region: 'eu "west"\\1' });
  const tenants = new Counter({
    name: 'app_tenant_requests_total',
    help: 'Requests by tenant\nand "model" \\ outcome',
    labelNames: ['tenant', 'model', 'outcome'],
    registers: [registry],
  });
  for (let t = 0; t < 30; t++) {
    for (const model of ['m-a', 'm"b']) tenants.inc({ tenant: `tenant-${t}`, model, outcome: 'hit' }, t + 1);
  }
  const collected: Counter = new Counter({
    name: 'app_collected_total',
    help: 'Set in collect()',
    labelNames: ['kind'],
    registers: [registry],
    collect() {
      collected.reset();
      collected.inc({ kind: 'a' }, 3);
      collected.inc({ kind: 'b' }, 0.5);
    },
  });
  const gauge = new Gauge({
    name: 'app_level',
    help: 'Levels',
    labelNames: ['which'],
    registers: [registry],
  });
  gauge.set({ which: 'nan' }, Number.NaN);
  gauge.set({ which: 'inf' }, Number.POSITIVE_INFINITY);
  gauge.set({ which: '-inf' }, Number.NEGATIVE_INFINITY);
  gauge.set({ which: 'tiny' }, 1e-7);
  gauge.set({ which: 'big' }, 12_345_678_901_234_568);
  const histogram = new Histogram({
    name: 'app_duration_seconds',
    help: 'Durations',
    labelNames: ['route'],
    buckets: [0.1, 1, 10],
    registers: [registry],
  });
  for (const v of [0.05, 0.5, 5, 50]) histogram.observe({ route: '/x' }, v);
  new Gauge({ name: 'app_empty', help: 'No samples', labelNames: ['x'], registers: [registry] });
  const shared = new MetricsCollector({ intervalMs: 0, registry, ...options });
  shared.recordRequest({ method: 'GET', route: '/', status: 200, durationMs: 2 });
  shared.track('worker', {
    stats: () => ({ busy: 1, doneTotal: 40, idleMs: 250 }),
    statsCounters: ['doneTotal'],
  });
  return { own, shared };
}

export const FORMATS: ExpositionFormat[] = ['prometheus', 'openmetrics'];
