/**
 * `clawperf/metrics`: a prom-client based {@link MetricsCollector} with system, application and business
 * metrics and components tracked through `stats()`, served by {@link PrometheusExporter} and pushed by
 * {@link InfluxDBExporter}.
 *
 * @module
 */
export {
  DEFAULT_LATENCY_BUCKETS_SECONDS,
  DEFAULT_METRICS_EXPORT_TIMEOUT_MS,
  DEFAULT_METRICS_INTERVAL_MS,
  DEFAULT_METRICS_MAX_SERIES,
  type ExportBatch,
  MetricsCollector,
  type MetricsCollectorOptions,
  type MetricsExporter,
  type PerformanceMetrics,
  type RequestRecord,
  type Trackable,
} from './collector.ts';
export {
  type ExpositionFormat,
  type MetricFamily,
  OPENMETRICS_CONTENT_TYPE,
  PROMETHEUS_CONTENT_TYPE,
} from './exposition.ts';
export {
  DEFAULT_INFLUX_BATCH_SIZE,
  DEFAULT_INFLUX_MAX_BUFFER_POINTS,
  DEFAULT_INFLUX_PRECISION,
  DEFAULT_INFLUX_REQUEST_TIMEOUT_MS,
  DEFAULT_INFLUX_RETRY_INITIAL_MS,
  DEFAULT_INFLUX_RETRY_MAX_MS,
  InfluxDBExporter,
  type InfluxDBExporterOptions,
  type InfluxPrecision,
} from './influxdb.ts';
export {
  DEFAULT_PROMETHEUS_HOST,
  DEFAULT_PROMETHEUS_PATH,
  DEFAULT_PROMETHEUS_PORT,
  PrometheusExporter,
  type PrometheusExporterOptions,
  type ScrapeResponse,
} from './prometheus.ts';
