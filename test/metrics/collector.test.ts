import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { after, describe, it, mock } from 'node:test';
import { Registry } from 'prom-client';
import { ClosedError } from '../../src/errors.ts';
import { ManualClock } from '../../src/internal/clock.ts';
import { type ExportBatch, MetricsCollector, type MetricsExporter } from '../../src/metrics/index.ts';
import { promtoolCheckMetrics } from '../helpers/prometheus.ts';

/** The value of one sample line in a Prometheus exposition, or undefined when absent. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** Burns CPU until this process has used at least `ms` more CPU time. */
function burnCpu(ms: number): void {
  const start = process.cpuUsage();
  let x = 0;
  while (true) {
    for (let i = 0; i < 10_000; i++) x += Math.sqrt(i);
    const used = process.cpuUsage(start);
    if ((used.user + used.system) / 1e3 >= ms) break;
  }
  assert.ok(x > 0);
}

const cpuMs = (u: NodeJS.CpuUsage) => (u.user + u.system) / 1e3;

describe('system metrics', () => {
  it('reports CPU as the share of wall time used over the last interval, not cumulative seconds', async () => {
    const clock = new ManualClock();
    const collector = new MetricsCollector({ intervalMs: 0, clock });
    after(() => collector.close());

    const outerStart = process.cpuUsage();
    await collector.collect();
    const innerStart = process.cpuUsage();
    burnCpu(50);
    await clock.advance(100);
    const innerUsed = cpuMs(process.cpuUsage(innerStart));
    const beforeSecond = process.cpuUsage();
    await collector.collect();
    const outerUsed = cpuMs(process.cpuUsage(outerStart));
    const busy = collector.getMetrics().system.cpuUsage;
    // The collector's CPU delta lies between what was used strictly inside and around its two samples.
    assert.ok(
      busy >= innerUsed / 100 && busy <= outerUsed / 100,
      `${innerUsed} <= ${busy * 100} <= ${outerUsed}`,
    );

    await clock.advance(10_000);
    await collector.collect();
    const idle = collector.getMetrics().system.cpuUsage;
    // Cumulative CPU seconds would have grown; the ratio over an idle interval falls.
    assert.ok(idle <= cpuMs(process.cpuUsage(beforeSecond)) / 10_000, `idle ratio ${idle}`);
    assert.ok(idle < busy);
    const text = await collector.scrape();
    assert.equal(sample(text, 'clawperf_process_cpu_usage_ratio'), idle);
  });

  it('exports memory, event-loop delay and utilization, uptime and load', async () => {
    const collector = new MetricsCollector({ intervalMs: 0 });
    after(() => collector.close());
    await new Promise((r) => setTimeout(r, 30));
    await collector.collect();
    const m = collector.getMetrics().system;
    assert.ok(m.heapUsedBytes > 0 && m.rssBytes > 0 && m.memoryUsage === m.heapUsedBytes / 1024 / 1024);
    assert.ok(m.uptime > 0);
    assert.equal(m.loadAverage.length, 3);
    assert.ok(m.eventLoopUtilization >= 0 && m.eventLoopUtilization <= 1);
    const d = m.eventLoopDelay;
    assert.ok(d.min <= d.p50 && d.p50 <= d.p90 && d.p90 <= d.p99 && d.p99 <= d.max);
    const text = await collector.scrape();
    for (const name of [
      'clawperf_process_heap_used_bytes',
      'clawperf_process_resident_memory_bytes',
      'clawperf_process_uptime_seconds',
      'clawperf_eventloop_delay_p99_seconds',
      'clawperf_eventloop_utilization_ratio',
      'clawperf_system_load_average{window="1m"}',
    ]) {
      assert.notEqual(sample(text, name), undefined, name);
    }
  });
});

describe('application and business metrics', () => {
  it('computes request rate, error rate and mean response time over the interval', async () => {
    const clock = new ManualClock();
    const collector = new MetricsCollector({ intervalMs: 0, clock });
    after(() => collector.close());
    await collector.collect();
    collector.recordRequest({ method: 'GET', route: '/a', status: 200, durationMs: 10 });
    collector.recordRequest({ method: 'GET', route: '/a', status: 200, durationMs: 20 });
    collector.recordRequest({ method: 'POST', route: '/b', status: 503, durationMs: 30 });
    collector.recordRequest({ method: 'POST', route: '/b', status: 200, durationMs: 40, error: true });
    collector.connectionOpened();
    collector.connectionOpened();
    collector.connectionClosed();
    await clock.advance(2_000);
    await collector.collect();
    assert.deepEqual(collector.getMetrics().application, {
      activeConnections: 1,
      requestRate: 2,
      errorRate: 0.5,
      averageResponseTime: 25,
    });
    await clock.advance(1_000);
    await collector.collect();
    assert.equal(collector.getMetrics().application.requestRate, 0);

    const text = await collector.scrape();
    assert.equal(sample(text, 'clawperf_http_requests_total{method="GET",route="/a",status="200"}'), 2);
    assert.equal(sample(text, 'clawperf_http_request_errors_total{method="POST",route="/b"}'), 2);
    assert.equal(sample(text, 'clawperf_http_request_duration_seconds_count{method="GET",route="/a"}'), 2);
    assert.equal(sample(text, 'clawperf_http_active_connections'), 1);
  });

  it('counts messages, agent executions, tool calls and the cache hit rate', async () => {
    const collector = new MetricsCollector({ intervalMs: 0 });
    after(() => collector.close());
    collector.recordMessage();
    collector.recordMessage(4);
    collector.recordAgentExecution({ agent: 'planner' });
    collector.recordAgentExecution({ agent: 'planner', ok: false });
    collector.recordToolCall({ tool: 'search' });
    collector.recordCacheLookup(true);
    collector.recordCacheLookup(true);
    collector.recordCacheLookup(true);
    collector.recordCacheLookup(false);
    await collector.collect();
    assert.deepEqual(collector.getMetrics().business, {
      messagesProcessed: 5,
      agentExecutions: 2,
      toolCalls: 1,
      cacheHitRate: 0.75,
    });
    const text = await collector.scrape();
    assert.equal(sample(text, 'clawperf_messages_processed_total'), 5);
    assert.equal(sample(text, 'clawperf_agent_executions_total{agent="planner",outcome="error"}'), 1);
    assert.equal(sample(text, 'clawperf_tool_calls_total{tool="search",outcome="ok"}'), 1);
    assert.equal(sample(text, 'clawperf_cache_hit_ratio'), 0.75);
    assert.equal(sample(text, 'clawperf_cache_lookups_total{result="miss"}'), 1);
  });
});

describe('track()', () => {
  it('exports stats() fields as gauges and statsCounters as _total counters, read at scrape time', async () => {
    const collector = new MetricsCollector({ intervalMs: 0 });
    after(() => collector.close());
    let reads = 0;
    const component = {
      hits: 0,
      statsCounters: ['hits', 'l1.evictions'] as const,
      stats() {
        reads++;
        return { hits: this.hits, size: 7, l1: { evictions: 2, bytes: 100 }, label: 'not a number' };
      },
    };
    collector.track('cache', component);
    const readsAfterTrack = reads;
    for (let i = 0; i < 1_000; i++) component.hits++;
    assert.equal(reads, readsAfterTrack, 'the hot path never calls stats()');

    const text = await collector.scrape();
    assert.equal(reads, readsAfterTrack + 1, 'one stats() call per scrape, however many fields');
    assert.equal(sample(text, 'clawperf_cache_hits_total'), 1_000);
    assert.equal(sample(text, 'clawperf_cache_size'), 7);
    assert.equal(sample(text, 'clawperf_cache_l1_evictions_total'), 2);
    assert.equal(sample(text, 'clawperf_cache_l1_bytes'), 100);
    assert.match(text, /# TYPE clawperf_cache_hits_total counter/);
    assert.match(text, /# TYPE clawperf_cache_size gauge/);
    assert.doesNotMatch(text, /clawperf_cache_label/);

    component.hits = 1_500;
    assert.equal(sample(await collector.scrape(), 'clawperf_cache_hits_total'), 1_500);
  });

  it('picks up fields that appear later and stops exporting after untrack', async () => {
    const collector = new MetricsCollector({ intervalMs: 0 });
    after(() => collector.close());
    let stats: Record<string, number> = { a: 1 };
    const untrack = collector.track('late', { stats: () => stats });
    stats = { a: 1, b: 2 };
    assert.equal(sample(await collector.scrape(), 'clawperf_late_b'), 2);
    untrack();
    assert.doesNotMatch(await collector.scrape(), /clawperf_late_/);
  });

  it('contains a stats() that throws and counts it', async () => {
    const collector = new MetricsCollector({ intervalMs: 0 });
    after(() => collector.close());
    let fail = false;
    collector.track('flaky', {
      stats: () => {
        if (fail) throw new Error('boom');
        return { x: 1 };
      },
    });
    assert.equal(sample(await collector.scrape(), 'clawperf_flaky_x'), 1);
    fail = true;
    const text = await collector.scrape();
    assert.equal(sample(text, 'clawperf_flaky_x'), 1, 'the last value stays');
    assert.equal(collector.stats().statsFailures, 1);
  });

  it("in a registry it was given, tracked fields are also prom-client metrics, so the registry's own metrics() shows them", async () => {
    const registry = new Registry();
    const collector = new MetricsCollector({ intervalMs: 0, registry });
    after(() => collector.close());
    let n = 2;
    collector.track('ext', { stats: () => ({ a: 5, n }), statsCounters: ['n'] });
    n = 3;
    const text = await registry.metrics();
    assert.match(text, /^clawperf_ext_a 5$/m);
    assert.match(text, /^clawperf_ext_n_total 3$/m);
    const scraped = await collector.scrape();
    assert.equal(scraped.split('\n').filter((l) => l.startsWith('clawperf_ext_a ')).length, 1);
  });

  it('refuses a field whose metric name the collector already uses', () => {
    const collector = new MetricsCollector({ intervalMs: 0 });
    after(() => collector.close());
    assert.throws(
      () => collector.track('cache', { stats: () => ({ lookups: 1 }), statsCounters: ['lookups'] }),
      /clawperf_cache_lookups_total already exists/,
    );
  });

  it('rejects bad names, components without stats() and a name tracked twice', () => {
    const collector = new MetricsCollector({ intervalMs: 0 });
    after(() => collector.close());
    assert.throws(() => collector.track('bad name', { stats: () => ({}) }), /name must be/);
    assert.throws(
      () => collector.track('x', {} as never),
      /component must be an object with a stats\(\) method/,
    );
    collector.track('twice', { stats: () => ({ a: 1 }) });
    assert.throws(() => collector.track('twice', { stats: () => ({ a: 1 }) }), /already tracked/);
  });
});

describe('cardinality guard', () => {
  it('drops label sets past maxSeries per metric and counts them in clawperf_metrics_series_dropped_total', async () => {
    const collector = new MetricsCollector({ intervalMs: 0, maxSeries: 3 });
    after(() => collector.close());
    for (let i = 0; i < 10; i++) {
      collector.recordRequest({ method: 'GET', route: `/user/${i}`, status: 200, durationMs: 1 });
    }
    collector.recordToolCall({ tool: 'a' });
    const text = await collector.scrape();
    assert.equal(text.split('\n').filter((l) => l.startsWith('clawperf_http_requests_total{')).length, 3);
    assert.equal(
      sample(text, 'clawperf_metrics_series_dropped_total{metric="clawperf_http_requests_total"}'),
      7,
    );
    assert.equal(
      sample(text, 'clawperf_metrics_series_dropped_total{metric="clawperf_http_request_duration_seconds"}'),
      7,
    );
    assert.equal(sample(text, 'clawperf_tool_calls_total{tool="a",outcome="ok"}'), 1);
    assert.equal(collector.stats().seriesDropped, 14);
  });

  it('bounds the fields exported for one tracked component', async () => {
    const collector = new MetricsCollector({ intervalMs: 0, maxSeries: 2 });
    after(() => collector.close());
    collector.track('wide', { stats: () => ({ a: 1, b: 2, c: 3, d: 4 }) });
    const text = await collector.scrape();
    assert.equal(text.split('\n').filter((l) => l.startsWith('clawperf_wide_')).length, 2);
    assert.ok((sample(text, 'clawperf_metrics_series_dropped_total{metric="clawperf_wide"}') ?? 0) >= 2);
  });
});

describe('exporters', () => {
  it('a throwing, a rejecting and a hanging exporter never block the others or escape as unhandled rejections', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    after(() => process.off('unhandledRejection', onUnhandled));

    const collector = new MetricsCollector({ intervalMs: 0, exportTimeoutMs: 50 });
    const received: ExportBatch[] = [];
    let hangingCalls = 0;
    let hangingSignal: AbortSignal | undefined;
    const events: string[] = [];
    collector.on('exportError', (_error, name) => events.push(name));
    collector
      .registerExporter({
        name: 'throws',
        export() {
          throw new Error('sync failure');
        },
      })
      .registerExporter({ name: 'rejects', export: () => Promise.reject(new Error('async failure')) })
      .registerExporter({
        name: 'hangs',
        export(_batch, { signal }) {
          hangingCalls++;
          hangingSignal = signal;
          return new Promise(() => {});
        },
      })
      .registerExporter({ name: 'healthy', export: (batch) => void received.push(batch) });

    for (let i = 0; i < 3; i++) await collector.collect();
    assert.equal(received.length, 3, 'the healthy exporter got every batch');
    assert.ok(received[0]!.families.some((f) => f.name === 'clawperf_process_cpu_usage_ratio'));
    assert.equal(typeof received[0]!.metrics.system.cpuUsage, 'number');
    assert.equal(hangingCalls, 1, 'a hanging exporter is not called again while its push is in flight');
    assert.ok(hangingSignal?.aborted, 'the hanging push was aborted at its timeout');

    const stats = collector.stats();
    assert.equal(stats.exports, 3);
    assert.equal(stats.exportTimeouts, 1);
    assert.equal(stats.exportsSkipped, 2);
    assert.equal(stats.exportFailures, 3 + 3 + 1);
    const text = await collector.scrape();
    assert.equal(sample(text, 'clawperf_metrics_export_failures_total{exporter="throws"}'), 3);
    assert.equal(sample(text, 'clawperf_metrics_export_failures_total{exporter="hangs"}'), 1);
    assert.equal(events.filter((e) => e === 'rejects').length, 3);

    await collector.close();
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(unhandled, []);
  });

  it('close() pushes a last batch and closes every exporter, even when one fails to close', async () => {
    const collector = new MetricsCollector({ intervalMs: 0 });
    const closed: string[] = [];
    let batches = 0;
    const exporter = (name: string, fail: boolean): MetricsExporter => ({
      name,
      export: () => void batches++,
      close: async () => {
        closed.push(name);
        if (fail) throw new Error('close failed');
      },
    });
    collector.registerExporter(exporter('a', true)).registerExporter(exporter('b', false));
    await collector.close();
    assert.equal(batches, 2);
    assert.deepEqual(closed.sort(), ['a', 'b']);
  });
});

describe('lifecycle', () => {
  it('its interval timer never keeps the process alive', async () => {
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        '--input-type=module',
        '-e',
        `import { MetricsCollector } from './src/metrics/index.ts';
         const collector = new MetricsCollector({ intervalMs: 20 });
         collector.registerExporter({ export() { process.stdout.write('.'); } });
         setTimeout(() => {}, 200);`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    const killer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    const [code, signal] = await once(child, 'exit');
    clearTimeout(killer);
    assert.equal(signal, null, 'the child had to be killed: the collector kept it alive');
    assert.equal(code, 0);
    assert.ok(out.length > 0, 'the timer did run while the process had other work');
  });

  it('close() stops the timer: no collection runs after it', async () => {
    mock.timers.enable({ apis: ['setInterval'] });
    after(() => mock.timers.reset());
    const collector = new MetricsCollector({ intervalMs: 1_000 });
    let batches = 0;
    collector.registerExporter({ export: () => void batches++ });
    const settle = () => new Promise((r) => setImmediate(r));
    mock.timers.tick(1_000);
    await settle();
    mock.timers.tick(1_000);
    await settle();
    assert.equal(batches, 2);
    await collector.close();
    const afterClose = batches;
    mock.timers.tick(10_000);
    await settle();
    assert.equal(batches, afterClose);
  });

  it('close() is idempotent; afterwards calls reject with ClosedError and records are ignored', async () => {
    const collector = new MetricsCollector({ intervalMs: 0 });
    await Promise.all([collector.close(), collector.close()]);
    await collector.close();
    await assert.rejects(collector.collect(), ClosedError);
    await assert.rejects(collector.scrape(), ClosedError);
    assert.throws(() => collector.registerExporter({ export() {} }), ClosedError);
    assert.throws(() => collector.track('x', { stats: () => ({}) }), ClosedError);
    collector.recordRequest({ durationMs: 1 });
  });

  it('removes its metrics from a registry it was given, so another collector can use it', async () => {
    const registry = new Registry();
    const first = new MetricsCollector({ intervalMs: 0, registry });
    first.track('shared', { stats: () => ({ a: 1 }) });
    await first.close();
    assert.equal(await registry.metrics(), '\n');
    const second = new MetricsCollector({ intervalMs: 0, registry });
    after(() => second.close());
    assert.match(await registry.metrics(), /clawperf_process_cpu_usage_ratio/);
  });
});

describe('options', () => {
  it('rejects invalid options with a TypeError naming the option and value', () => {
    assert.throws(
      () => new MetricsCollector({ intervalMs: -1 }),
      /intervalMs must be an integer >= 0, got -1/,
    );
    assert.throws(() => new MetricsCollector({ maxSeries: 0 }), /maxSeries must be an integer >= 1, got 0/);
    assert.throws(() => new MetricsCollector({ exportTimeoutMs: 1.5 }), /exportTimeoutMs/);
    assert.throws(
      () => new MetricsCollector({ registry: {} as never }),
      /registry must be a prom-client Registry/,
    );
    assert.throws(() => new MetricsCollector({ latencyBuckets: [] }), /latencyBuckets/);
    assert.throws(
      () => new MetricsCollector({ clock: {} as never }),
      /clock must be an object with a now\(\) method/,
    );
  });
});

describe('exposition', () => {
  async function populated(): Promise<MetricsCollector> {
    const collector = new MetricsCollector({ intervalMs: 0 });
    collector.track('pool', {
      stats: () => ({ borrowed: 2, created: 9, waiting: 0 }),
      statsCounters: ['created'],
    });
    collector.recordRequest({
      method: 'POST',
      route: '/v1/chat "quoted"\\path',
      status: 200,
      durationMs: 120,
    });
    collector.recordToolCall({ tool: 'line\nbreak' });
    collector.recordCacheLookup(false);
    await collector.collect();
    return collector;
  }

  it('passes promtool check metrics', async () => {
    const collector = await populated();
    after(() => collector.close());
    const text = await collector.scrape();
    const { ok, output } = promtoolCheckMetrics(text);
    assert.ok(ok, output);
    assert.match(text, /route="\/v1\/chat \\"quoted\\"\\\\path"/);
    assert.match(text, /tool="line\\nbreak"/);
  });

  it('renders OpenMetrics with counter families named without _total and a final # EOF', async () => {
    const collector = await populated();
    after(() => collector.close());
    const text = await collector.scrape('openmetrics');
    assert.ok(text.endsWith('# EOF\n'));
    assert.match(text, /# TYPE clawperf_pool_created counter\nclawperf_pool_created_total 9\n/);
    assert.match(text, /# TYPE clawperf_http_requests counter\n/);
  });

  it('an OpenMetrics scrape does not change the names in a Prometheus scrape running alongside', async () => {
    const collector = await populated();
    after(() => collector.close());
    const [open, text] = await Promise.all([collector.scrape('openmetrics'), collector.scrape()]);
    assert.match(open, /clawperf_http_requests_total\{/);
    assert.match(text, /# TYPE clawperf_http_requests_total counter/);
    assert.match(
      await collector.scrape(),
      /# TYPE clawperf_pool_created_total counter\nclawperf_pool_created_total 9/,
    );
  });
});
