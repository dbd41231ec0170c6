/**
 * The metric definitions of a {@link MetricsCollector}: every metric it owns in its registry, with its name,
 * help text, labels and buckets, in one place.
 *
 * @module
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

/** Buckets of the latency histograms, in seconds (LLM calls run long). */
export const DEFAULT_LATENCY_BUCKETS_SECONDS: readonly number[] = [
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
];

/** The metrics {@link createCollectorMetrics} makes. */
export type CollectorMetrics = ReturnType<typeof createCollectorMetrics>;

/** The collector's own metrics, registered in `registry`; their names are pushed to `owned`. */
export function createCollectorMetrics(registry: Registry, buckets: readonly number[], owned: string[]) {
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
