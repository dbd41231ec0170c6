import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { MetricsCollector, PrometheusExporter } from '../../src/metrics/index.ts';
import { type PrometheusServer, startPrometheus } from '../helpers/prometheus.ts';
import { waitFor } from '../helpers/servers.ts';

interface Dashboard {
  panels: { title: string; targets: { expr: string; refId: string }[] }[];
  templating: { list: { name: string; allValue?: string }[] };
}

const dashboard = JSON.parse(
  await readFile(new URL('../../docs/grafana-dashboard.json', import.meta.url), 'utf8'),
) as Dashboard;

/** What Grafana substitutes before it sends a panel's query: the "All" value of each variable, the rate window. */
function expand(expr: string): string {
  let out = expr.replaceAll('$__rate_interval', '1m').replaceAll('$__interval', '15s');
  for (const variable of dashboard.templating.list) {
    out = out.replaceAll(`$${variable.name}`, variable.allValue ?? '.+');
  }
  return out;
}

describe('the Grafana dashboard in docs/', () => {
  let prometheus: PrometheusServer;
  let collector: MetricsCollector;
  let exporter: PrometheusExporter;
  let traffic: NodeJS.Timeout;

  before(async () => {
    collector = new MetricsCollector({ intervalMs: 250 });
    const queue = {
      statsCounters: ['admitted'],
      admitted: 0,
      stats() {
        return { processing: 2, admitted: this.admitted };
      },
    };
    collector.track('backpressure', queue);
    let n = 0;
    // A clawperf process at work: requests (some failing), cache lookups, agents, tools, connections.
    traffic = setInterval(() => {
      n++;
      queue.admitted++;
      collector.recordRequest({
        method: 'POST',
        route: '/v1/chat/completions',
        status: n % 5 ? 200 : 502,
        durationMs: n % 90,
      });
      collector.recordCacheLookup(n % 3 !== 0);
      collector.recordMessage();
      collector.recordAgentExecution({ agent: 'planner' });
      collector.recordToolCall({ tool: 'search' });
      if (n === 1) collector.connectionOpened();
    }, 50);
    exporter = new PrometheusExporter({ collector, port: 0, host: '127.0.0.1' });
    const { port } = await exporter.listen();
    prometheus = await startPrometheus({ targets: [`127.0.0.1:${port}`] });
    // Rates need at least two scrapes inside their window.
    await waitFor(
      async () =>
        Number(
          (await prometheus.query('count_over_time(clawperf_process_uptime_seconds[1m])'))[0]?.value[1],
        ) >= 3,
      { what: 'three scrapes of clawperf', timeoutMs: 30_000, describe: () => prometheus.output() },
    );
  });

  after(async () => {
    clearInterval(traffic);
    await prometheus.stop();
    await exporter.close();
    await collector.close();
  });

  it('has panels for CPU, heap, event-loop delay, request rate, errors, latency, cache hit rate and tracked components', () => {
    const exprs = dashboard.panels.flatMap((p) => p.targets.map((t) => t.expr)).join('\n');
    for (const metric of [
      'clawperf_process_cpu_usage_ratio',
      'clawperf_process_heap_used_bytes',
      'clawperf_eventloop_delay_p99_seconds',
      'clawperf_http_requests_total',
      'clawperf_http_request_errors_total',
      'clawperf_http_request_duration_seconds_bucket',
      'clawperf_cache_lookups_total',
    ]) {
      assert.ok(exprs.includes(metric), metric);
    }
    assert.ok(dashboard.panels.some((p) => /tracked/i.test(p.title)));
  });

  it('every panel query runs against the real Prometheus and returns data', async () => {
    const failures: string[] = [];
    // The gateway's panels run against a real gateway: test/gateway/dashboard-grafana.test.ts.
    for (const panel of dashboard.panels.filter(
      (p) => !p.targets.some((t) => t.expr.includes('clawperf_gateway_')),
    )) {
      for (const target of panel.targets) {
        const expr = expand(target.expr);
        try {
          const result = await prometheus.query(expr);
          if (result.length === 0) failures.push(`${panel.title} / ${target.refId}: no data for ${expr}`);
        } catch (error) {
          failures.push(`${panel.title} / ${target.refId}: ${(error as Error).message}`);
        }
      }
    }
    assert.deepEqual(failures, []);
  });

  it('the tracked-component panels show the tracked component and none of the collector’s own metrics', async () => {
    const names = async (title: string) => {
      const panel = dashboard.panels.find((p) => p.title === title)!;
      const result = await prometheus.query(expand(panel.targets[0]!.expr));
      return result.map((s) => s.metric.__name__).sort();
    };
    assert.deepEqual(await names('Tracked components: gauges'), ['clawperf_backpressure_processing']);
    assert.deepEqual(await names('Tracked components: counters'), ['clawperf_backpressure_admitted_total']);
  });
});
