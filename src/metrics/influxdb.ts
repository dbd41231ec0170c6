/**
 * InfluxDBExporter: pushes every collected sample as InfluxDB line protocol, to InfluxDB 1.x (`/write`) or
 * 2.x/3.x (`/api/v2/write`), batched, retried with backoff, through a bounded buffer that drops the oldest
 * points (and counts them) when the database stays away too long.
 */
import { ClosedError, UpstreamError } from '../errors.ts';
import * as check from '../internal/options.ts';
import type { ExportBatch, MetricsExporter } from './collector.ts';

/** Points held while InfluxDB is unreachable; past this the oldest are dropped. @default 100_000 */
export const DEFAULT_INFLUX_MAX_BUFFER_POINTS = 100_000;
/** Points per write request. @default 5_000 */
export const DEFAULT_INFLUX_BATCH_SIZE = 5_000;
/** First retry delay after a failed write; doubles per failure. @default 1_000 */
export const DEFAULT_INFLUX_RETRY_INITIAL_MS = 1_000;
/** Longest retry delay. @default 30_000 */
export const DEFAULT_INFLUX_RETRY_MAX_MS = 30_000;
/** Timeout of one write request. @default 10_000 */
export const DEFAULT_INFLUX_REQUEST_TIMEOUT_MS = 10_000;
/** Timestamp precision written. @default 'ms' */
export const DEFAULT_INFLUX_PRECISION = 'ms';

export type InfluxPrecision = 'ns' | 'us' | 'ms' | 's';

export interface InfluxDBExporterOptions {
  /** Base URL of the server, e.g. `http://127.0.0.1:8086`. */
  url: string;
  /** API: 1 writes to `/write?db=` (InfluxDB 1.x), 2 to `/api/v2/write?org=&bucket=` (2.x, 3.x). @default 1 */
  version?: 1 | 2;
  /** Database (version 1). */
  database?: string;
  /** Retention policy (version 1). @default the database's default */
  retentionPolicy?: string;
  /** Basic-auth user (version 1). */
  username?: string;
  /** Basic-auth password (version 1). */
  password?: string;
  /** Organization (version 2). */
  org?: string;
  /** Bucket (version 2). */
  bucket?: string;
  /** API token, sent as `Authorization: Token <token>` (version 2). */
  token?: string;
  /** Timestamp precision. @default 'ms' */
  precision?: InfluxPrecision;
  /** Tags added to every point, e.g. `{ host: os.hostname() }`. @default {} */
  tags?: Record<string, string>;
  /** Points per request. @default 5_000 */
  batchSize?: number;
  /** Points buffered while writes fail; the oldest are dropped past it. @default 100_000 */
  maxBufferPoints?: number;
  /** First retry delay, ms; doubles per consecutive failure, with jitter. @default 1_000 */
  retryInitialMs?: number;
  /** Longest retry delay, ms. @default 30_000 */
  retryMaxMs?: number;
  /** Timeout of one request, ms. @default 10_000 */
  requestTimeoutMs?: number;
}

const V1_PRECISION: Record<InfluxPrecision, string> = { ns: 'n', us: 'u', ms: 'ms', s: 's' };
const NS_PER_MS: Record<InfluxPrecision, bigint> = { ns: 1_000_000n, us: 1_000n, ms: 1n, s: 0n };

/**
 * Writes each collection as line protocol: one point per sample, measurement = the sample's metric name
 * (`clawperf_http_requests_total`, `clawperf_http_request_duration_seconds_bucket`, ...), tags = its labels
 * plus `tags`, one float field `value`. Non-finite values are skipped (InfluxDB cannot store them).
 *
 * Writes go out in batches of `batchSize`; a failed write (network, timeout, 5xx, 429) keeps its points and
 * is retried with exponential backoff; a 4xx other than 429 means InfluxDB refused the data, so those points
 * are dropped and counted as `rejected`. While InfluxDB is down the buffer holds up to `maxBufferPoints`,
 * then drops the oldest (`dropped`).
 *
 * @example
 * const influx = new InfluxDBExporter({ url: 'http://127.0.0.1:8086', database: 'clawperf' });
 * collector.registerExporter(influx);
 */
export class InfluxDBExporter implements MetricsExporter {
  readonly name = 'influxdb';
  readonly statsCounters: readonly string[] = [
    'written',
    'writes',
    'writeFailures',
    'dropped',
    'rejected',
    'skipped',
  ];
  readonly #endpoint: string;
  readonly #headers: Record<string, string>;
  readonly #precision: InfluxPrecision;
  readonly #tagSuffix: string;
  readonly #batchSize: number;
  readonly #capacity: number;
  readonly #retryInitialMs: number;
  readonly #retryMaxMs: number;
  readonly #requestTimeoutMs: number;

  // Ring buffer addressed by absolute sequence numbers: point `s` lives at `#ring[s % capacity]`, the buffer
  // holds [#start, #end). Sequence numbers let a write that succeeds after overflow dropped some of its
  // points remove exactly what it sent.
  readonly #ring: (string | undefined)[];
  #start = 0;
  #end = 0;
  #flushing: Promise<void> | undefined;
  #retryTimer: NodeJS.Timeout | undefined;
  #failures = 0;
  #closed = false;
  #stats = { written: 0, writes: 0, writeFailures: 0, dropped: 0, rejected: 0, skipped: 0 };

  constructor(options: InfluxDBExporterOptions) {
    const o = check.object<InfluxDBExporterOptions>('options', options);
    const base = URL.canParse(String(o.url)) ? new URL(String(o.url)) : undefined;
    if (base === undefined || (base.protocol !== 'http:' && base.protocol !== 'https:')) {
      check.invalid('options.url', 'an http(s) URL', o.url);
    }
    const version = o.version ?? 1;
    if (version !== 1 && version !== 2) check.invalid('options.version', '1 or 2', version);
    this.#precision = check.oneOf('options.precision', o.precision ?? DEFAULT_INFLUX_PRECISION, [
      'ns',
      'us',
      'ms',
      's',
    ]);
    this.#batchSize = check.integer('options.batchSize', o.batchSize ?? DEFAULT_INFLUX_BATCH_SIZE, 1);
    this.#capacity = check.integer(
      'options.maxBufferPoints',
      o.maxBufferPoints ?? DEFAULT_INFLUX_MAX_BUFFER_POINTS,
      1,
    );
    this.#retryInitialMs = check.integer(
      'options.retryInitialMs',
      o.retryInitialMs ?? DEFAULT_INFLUX_RETRY_INITIAL_MS,
      1,
    );
    this.#retryMaxMs = check.integer('options.retryMaxMs', o.retryMaxMs ?? DEFAULT_INFLUX_RETRY_MAX_MS, 1);
    this.#requestTimeoutMs = check.integer(
      'options.requestTimeoutMs',
      o.requestTimeoutMs ?? DEFAULT_INFLUX_REQUEST_TIMEOUT_MS,
      1,
    );
    const tags = check.object<Record<string, string>>('options.tags', o.tags);
    for (const [k, v] of Object.entries(tags)) {
      if (typeof v !== 'string') check.invalid(`options.tags.${k}`, 'a string', v);
    }
    this.#tagSuffix = Object.keys(tags)
      .sort()
      .filter((k) => tags[k] !== '')
      .map((k) => `,${escapeKey(k)}=${escapeKey(tags[k]!)}`)
      .join('');
    this.#ring = new Array(this.#capacity);

    const path = base.pathname.replace(/\/+$/, '');
    const headers: Record<string, string> = { 'content-type': 'text/plain; charset=utf-8' };
    const query = new URLSearchParams();
    if (version === 1) {
      query.set('db', check.string('options.database', o.database));
      if (o.retentionPolicy !== undefined)
        query.set('rp', check.string('options.retentionPolicy', o.retentionPolicy));
      query.set('precision', V1_PRECISION[this.#precision]);
      if (o.username !== undefined) {
        const credentials = `${check.string('options.username', o.username)}:${o.password ?? ''}`;
        headers.authorization = `Basic ${Buffer.from(credentials).toString('base64')}`;
      }
      this.#endpoint = `${base.origin}${path}/write?${query}`;
    } else {
      query.set('org', check.string('options.org', o.org));
      query.set('bucket', check.string('options.bucket', o.bucket));
      query.set('precision', this.#precision);
      headers.authorization = `Token ${check.string('options.token', o.token)}`;
      this.#endpoint = `${base.origin}${path}/api/v2/write?${query}`;
    }
    this.#headers = headers;
  }

  /** Buffers the batch's samples as points and writes what is buffered. Rejects when the write fails. */
  async export(batch: ExportBatch): Promise<void> {
    if (this.#closed) throw new ClosedError('InfluxDBExporter');
    const timestamp = this.#timestamp(batch.time);
    for (const family of batch.families) {
      for (const sample of family.values) {
        if (!Number.isFinite(sample.value)) {
          this.#stats.skipped++;
          continue;
        }
        let line = escapeMeasurement(sample.metricName ?? family.name);
        const labels = sample.labels as Record<string, string | number | undefined>;
        for (const key of Object.keys(labels).sort()) {
          const value = labels[key];
          if (value === undefined || value === '') continue;
          line += `,${escapeKey(key)}=${escapeKey(String(value))}`;
        }
        this.#push(`${line}${this.#tagSuffix} value=${sample.value} ${timestamp}`);
      }
    }
    await this.flush();
  }

  /** Points waiting to be written. */
  get buffered(): number {
    return this.#end - this.#start;
  }

  /**
   * Writes everything buffered, batch by batch. Resolves when the buffer is empty; rejects with an
   * {@link UpstreamError} on the first failed write (the points stay buffered and a retry is scheduled).
   */
  flush(): Promise<void> {
    this.#flushing ??= this.#flush().finally(() => {
      this.#flushing = undefined;
    });
    return this.#flushing;
  }

  async #flush(): Promise<void> {
    if (this.#retryTimer !== undefined) {
      clearTimeout(this.#retryTimer);
      this.#retryTimer = undefined;
    }
    while (this.#end > this.#start) {
      const from = this.#start;
      const to = Math.min(this.#end, from + this.#batchSize);
      const lines: string[] = [];
      for (let s = from; s < to; s++) lines.push(this.#ring[s % this.#capacity]!);
      let outcome: 'ok' | 'rejected';
      try {
        outcome = await this.#write(lines.join('\n'));
      } catch (error) {
        this.#stats.writeFailures++;
        this.#scheduleRetry();
        throw error;
      }
      this.#failures = 0;
      this.#stats.writes++;
      // Overflow may have dropped some of these points while the request was in flight.
      const sent = to - Math.max(from, this.#start);
      if (outcome === 'ok') this.#stats.written += Math.max(0, sent);
      else this.#stats.rejected += Math.max(0, sent);
      for (let s = this.#start; s < to; s++) this.#ring[s % this.#capacity] = undefined;
      this.#start = Math.max(this.#start, to);
    }
  }

  /** Sends one body. Resolves 'ok', or 'rejected' when InfluxDB refused the data; throws when it may retry. */
  async #write(body: string): Promise<'ok' | 'rejected'> {
    let response: Response;
    try {
      response = await fetch(this.#endpoint, {
        method: 'POST',
        headers: this.#headers,
        body,
        signal: AbortSignal.timeout(this.#requestTimeoutMs),
      });
    } catch (error) {
      throw new UpstreamError(`InfluxDB write failed: ${(error as Error).message}`, {}, { cause: error });
    }
    const text = await response.text().catch(() => '');
    if (response.ok) return 'ok';
    if (
      response.status >= 400 &&
      response.status < 500 &&
      response.status !== 429 &&
      response.status !== 408
    ) {
      return 'rejected';
    }
    throw new UpstreamError(`InfluxDB write answered ${response.status}: ${text.slice(0, 200)}`, {
      status: response.status,
    });
  }

  #scheduleRetry(): void {
    if (this.#closed || this.#retryTimer !== undefined) return;
    const ceiling = Math.min(this.#retryMaxMs, this.#retryInitialMs * 2 ** this.#failures);
    this.#failures = Math.min(this.#failures + 1, 30);
    // Equal jitter: at least half the backoff, so retries from many processes spread out but never bunch up.
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.flush().catch(() => {});
    }, delay);
    this.#retryTimer.unref();
  }

  #push(line: string): void {
    if (this.#end - this.#start === this.#capacity) {
      this.#ring[this.#start % this.#capacity] = undefined;
      this.#start++;
      this.#stats.dropped++;
    }
    this.#ring[this.#end % this.#capacity] = line;
    this.#end++;
  }

  #timestamp(timeMs: number): string {
    const ms = BigInt(Math.round(timeMs));
    return this.#precision === 's' ? String(ms / 1000n) : String(ms * NS_PER_MS[this.#precision]);
  }

  /** Counters, and points currently buffered. */
  stats(): {
    written: number;
    writes: number;
    writeFailures: number;
    dropped: number;
    rejected: number;
    skipped: number;
    buffered: number;
  } {
    return { ...this.#stats, buffered: this.buffered };
  }

  /**
   * Tries one last flush (errors are swallowed: the caller is shutting down), then stops retrying.
   * Idempotent.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.flush().catch(() => {});
    this.#closed = true;
    if (this.#retryTimer !== undefined) clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
  }
}

// The escapes of the official client (influxdb-client-js): backslashes pass through as written, control
// characters become two-character escapes so a point stays on one line.
const CONTROL: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };
const escapeChar = (c: string) => CONTROL[c] ?? `\\${c}`;

/** A measurement name in line protocol: commas, spaces and control characters escaped. */
export function escapeMeasurement(name: string): string {
  return name.replace(/[, \n\r\t]/g, escapeChar);
}

/** A tag key, tag value or field key in line protocol: commas, equals signs, spaces and control characters escaped. */
export function escapeKey(name: string): string {
  return name.replace(/[,= \n\r\t]/g, escapeChar);
}
