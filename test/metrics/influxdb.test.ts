import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { ClosedError, UpstreamError } from '../../src/errors.ts';
import {
  type ExportBatch,
  InfluxDBExporter,
  type MetricFamily,
  MetricsCollector,
} from '../../src/metrics/index.ts';
import { type InfluxServer, startInfluxDB } from '../helpers/influxdb.ts';
import { waitFor } from '../helpers/servers.ts';

/** A batch of one gauge family whose samples carry the given labels and values. */
function batch(
  time: number,
  name: string,
  samples: { labels?: Record<string, string>; value: number }[],
): ExportBatch {
  const family = {
    name,
    help: name,
    type: 'gauge',
    aggregator: 'sum',
    values: samples.map((s) => ({ labels: s.labels ?? {}, value: s.value })),
  } as unknown as MetricFamily;
  return { time, metrics: undefined as never, families: [family] };
}

const count = async (influx: InfluxServer, db: string, measurement: string) => {
  const series = await influx.query(`SELECT count("value") FROM "${measurement}"`, db);
  return Number(series[0]?.values[0]?.[1] ?? 0);
};

describe('writing to a real InfluxDB 1.x', () => {
  let influx: InfluxServer;
  before(async () => {
    influx = await startInfluxDB();
    await influx.query('CREATE DATABASE clawperf');
  });
  after(() => influx.stop());

  it('writes what the collector collected, queryable back with tags', async () => {
    const collector = new MetricsCollector({ intervalMs: 0 });
    const exporter = new InfluxDBExporter({
      url: influx.url,
      database: 'clawperf',
      tags: { host: 'test-host' },
    });
    collector.registerExporter(exporter);
    collector.track('pool', { stats: () => ({ borrowed: 4 }) });
    collector.recordRequest({ method: 'GET', route: '/a', status: 200, durationMs: 30 });
    await collector.collect();
    await collector.close();

    const pool = await influx.query('SELECT "value", "host" FROM "clawperf_pool_borrowed"', 'clawperf');
    assert.equal(pool[0]?.values.at(-1)?.[1], 4);
    assert.equal(pool[0]?.values.at(-1)?.[2], 'test-host');
    const requests = await influx.query(
      `SELECT "value" FROM "clawperf_http_requests_total" WHERE "route" = '/a' AND "status" = '200'`,
      'clawperf',
    );
    assert.equal(requests[0]?.values.at(-1)?.[1], 1);
    const buckets = await influx.query(
      `SELECT "value" FROM "clawperf_http_request_duration_seconds_bucket" WHERE "le" = '0.05'`,
      'clawperf',
    );
    assert.equal(buckets[0]?.values.at(-1)?.[1], 1);
    assert.ok(exporter.stats().written > 20);
  });

  it('escapes tag values and measurement names so they read back unchanged', async () => {
    const exporter = new InfluxDBExporter({ url: influx.url, database: 'clawperf' });
    after(() => exporter.close());
    const tricky = 'a b,c=d"e\\f\u00e9';
    await exporter.export(
      batch(1_000, 'weird name,x', [{ labels: { 'k ey=': tricky, empty: '' }, value: 2.5 }]),
    );
    const series = await influx.query('SELECT * FROM "weird name,x"', 'clawperf');
    assert.deepEqual(series[0]?.columns, ['time', 'k ey=', 'value']);
    assert.deepEqual(series[0]?.values, [[1_000, tricky, 2.5]]);
  });

  it('skips non-finite values, which InfluxDB cannot store', async () => {
    const exporter = new InfluxDBExporter({ url: influx.url, database: 'clawperf' });
    after(() => exporter.close());
    await exporter.export(
      batch(2_000, 'nonfinite', [{ value: Number.NaN }, { value: Number.POSITIVE_INFINITY }, { value: 1 }]),
    );
    assert.equal(exporter.stats().skipped, 2);
    assert.equal(await count(influx, 'clawperf', 'nonfinite'), 1);
  });

  it('sends at most batchSize points per request', async () => {
    const exporter = new InfluxDBExporter({ url: influx.url, database: 'clawperf', batchSize: 10 });
    after(() => exporter.close());
    const samples = Array.from({ length: 35 }, (_, i) => ({ labels: { i: String(i) }, value: i }));
    await exporter.export(batch(3_000, 'batched', samples));
    assert.equal(exporter.stats().writes, 4);
    assert.equal(await count(influx, 'clawperf', 'batched'), 35);
  });

  it('drops points InfluxDB refuses (4xx) instead of retrying them forever', async () => {
    const exporter = new InfluxDBExporter({ url: influx.url, database: 'no_such_database' });
    after(() => exporter.close());
    await exporter.export(batch(4_000, 'refused', [{ value: 1 }]));
    assert.deepEqual(
      { ...exporter.stats(), writes: 0 },
      {
        written: 0,
        writes: 0,
        writeFailures: 0,
        dropped: 0,
        rejected: 1,
        skipped: 0,
        buffered: 0,
      },
    );
  });
});

describe('InfluxDB outages', () => {
  let influx: InfluxServer;
  before(async () => {
    influx = await startInfluxDB();
    await influx.query('CREATE DATABASE outage');
  });
  after(() => influx.stop());

  it('keeps buffered points while influxd is down and writes them all after it restarts', async () => {
    const exporter = new InfluxDBExporter({
      url: influx.url,
      database: 'outage',
      retryInitialMs: 50,
      retryMaxMs: 200,
      requestTimeoutMs: 2_000,
    });
    after(() => exporter.close());
    await exporter.export(batch(1_000, 'kept', [{ value: 1 }]));
    await influx.kill();
    for (let i = 1; i <= 20; i++) {
      await assert.rejects(exporter.export(batch(1_000 + i, 'kept', [{ value: i }])), UpstreamError);
    }
    assert.equal(exporter.buffered, 20);
    await influx.restart();
    // The backoff retry writes the buffer without another export.
    await waitFor(() => exporter.buffered === 0, {
      what: 'the retry to flush the buffer',
      timeoutMs: 20_000,
    });
    assert.equal(await count(influx, 'outage', 'kept'), 21);
    assert.equal(exporter.stats().dropped, 0);
    assert.ok(exporter.stats().writeFailures >= 20);
  });

  it('past maxBufferPoints drops the oldest points, counts them, and writes the newest', async () => {
    const exporter = new InfluxDBExporter({
      url: influx.url,
      database: 'outage',
      maxBufferPoints: 5,
      retryInitialMs: 60_000,
    });
    after(() => exporter.close());
    await influx.kill();
    for (let i = 1; i <= 12; i++) {
      await assert.rejects(exporter.export(batch(10_000 + i, 'bounded', [{ value: i }])));
    }
    assert.equal(exporter.buffered, 5);
    assert.equal(exporter.stats().dropped, 7);
    await influx.restart();
    await exporter.flush();
    const series = await influx.query('SELECT "value" FROM "bounded"', 'outage');
    assert.deepEqual(
      series[0]?.values.map((v) => v[1]),
      [8, 9, 10, 11, 12],
    );
  });

  it('close() stops retrying and later exports reject with ClosedError', async () => {
    const exporter = new InfluxDBExporter({ url: influx.url, database: 'outage' });
    await Promise.all([exporter.close(), exporter.close()]);
    await assert.rejects(exporter.export(batch(1, 'closed', [{ value: 1 }])), ClosedError);
  });
});

describe('InfluxDB 2.x write API (checked by a fake receiver)', () => {
  it('posts line protocol to /api/v2/write with org, bucket, precision and a Token header', async () => {
    const requests: { req: IncomingMessage; body: string }[] = [];
    const fake = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => {
        body += c;
      });
      req.on('end', () => {
        requests.push({ req, body });
        res.writeHead(204).end();
      });
    });
    fake.listen(0, '127.0.0.1');
    await once(fake, 'listening');
    after(() => fake.close());
    const exporter = new InfluxDBExporter({
      url: `http://127.0.0.1:${(fake.address() as AddressInfo).port}/`,
      version: 2,
      org: 'my org',
      bucket: 'clawperf',
      token: 's3cret',
      precision: 'ns',
    });
    after(() => exporter.close());
    await exporter.export(batch(1_700_000_000_123, 'm', [{ labels: { route: '/v1 x' }, value: 3 }]));
    assert.equal(requests.length, 1);
    const { req, body } = requests[0]!;
    const url = new URL(req.url ?? '', 'http://x');
    assert.equal(req.method, 'POST');
    assert.equal(url.pathname, '/api/v2/write');
    assert.deepEqual(Object.fromEntries(url.searchParams), {
      org: 'my org',
      bucket: 'clawperf',
      precision: 'ns',
    });
    assert.equal(req.headers.authorization, 'Token s3cret');
    assert.equal(req.headers['content-type'], 'text/plain; charset=utf-8');
    assert.equal(body, 'm,route=/v1\\ x value=3 1700000000123000000');
  });
});

describe('options', () => {
  it('rejects invalid options with a TypeError naming the option', () => {
    assert.throws(() => new InfluxDBExporter({ url: 'nope', database: 'x' }), /url must be an http\(s\) URL/);
    assert.throws(() => new InfluxDBExporter({ url: 'http://x' }), /database must be a non-empty string/);
    assert.throws(
      () => new InfluxDBExporter({ url: 'http://x', version: 2, org: 'o', bucket: 'b' }),
      /token must be a non-empty string/,
    );
    assert.throws(
      () => new InfluxDBExporter({ url: 'http://x', database: 'd', precision: 'm' as never }),
      /precision/,
    );
    assert.throws(
      () => new InfluxDBExporter({ url: 'http://x', database: 'd', maxBufferPoints: 0 }),
      /maxBufferPoints/,
    );
  });
});
