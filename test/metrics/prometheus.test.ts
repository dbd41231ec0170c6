import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { gunzipSync } from 'node:zlib';
import Fastify from 'fastify';
import { ClosedError } from '../../src/errors.ts';
import {
  MetricsCollector,
  OPENMETRICS_CONTENT_TYPE,
  PROMETHEUS_CONTENT_TYPE,
  PrometheusExporter,
} from '../../src/metrics/index.ts';
import { type PrometheusServer, promtoolCheckMetrics, startPrometheus } from '../helpers/prometheus.ts';
import { waitFor } from '../helpers/servers.ts';

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** A raw GET (no automatic decompression), so the test sees exactly what a scraper gets. */
function get(
  port: number,
  path: string,
  headers: Record<string, string> = {},
  method = 'GET',
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, headers, method }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
      );
    });
    req.on('error', reject);
    req.end();
  });
}

function component() {
  return {
    statsCounters: ['admitted'],
    admitted: 0,
    stats() {
      return { processing: 3, admitted: this.admitted };
    },
  };
}

describe('serving the exposition', () => {
  let collector: MetricsCollector;
  let exporter: PrometheusExporter;
  let port: number;
  before(async () => {
    collector = new MetricsCollector({ intervalMs: 0 });
    collector.track('queue', component());
    collector.recordRequest({ method: 'GET', route: '/x', status: 200, durationMs: 5 });
    exporter = new PrometheusExporter({ collector, port: 0, host: '127.0.0.1' });
    port = (await exporter.listen()).port;
  });
  after(async () => {
    await exporter.close();
    await collector.close();
  });

  it('answers in the Prometheus text format by default, and promtool accepts it', async () => {
    const answer = await get(port, '/metrics');
    assert.equal(answer.status, 200);
    assert.equal(answer.headers['content-type'], PROMETHEUS_CONTENT_TYPE);
    const text = answer.body.toString();
    assert.match(text, /^clawperf_queue_processing 3$/m);
    assert.ok(promtoolCheckMetrics(text).ok, promtoolCheckMetrics(text).output);
  });

  it('gzips when Accept-Encoding allows it', async () => {
    const answer = await get(port, '/metrics', { 'accept-encoding': 'br;q=1, gzip;q=0.8' });
    assert.equal(answer.headers['content-encoding'], 'gzip');
    assert.match(gunzipSync(answer.body).toString(), /clawperf_queue_admitted_total 0/);
    const refused = await get(port, '/metrics', { 'accept-encoding': 'gzip;q=0' });
    assert.equal(refused.headers['content-encoding'], undefined);
  });

  it('answers in OpenMetrics when the scraper asks for it', async () => {
    const answer = await get(port, '/metrics', {
      accept:
        'application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1',
    });
    assert.equal(answer.headers['content-type'], OPENMETRICS_CONTENT_TYPE);
    assert.ok(answer.body.toString().endsWith('# EOF\n'));
    const plain = await get(port, '/metrics', { accept: 'text/plain;version=0.0.4' });
    assert.equal(plain.headers['content-type'], PROMETHEUS_CONTENT_TYPE);
  });

  it('serves only its path and only GET/HEAD', async () => {
    assert.equal((await get(port, '/other')).status, 404);
    assert.equal((await get(port, '/metrics', {}, 'POST')).status, 405);
    const head = await get(port, '/metrics', {}, 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.body.length, 0);
  });

  it('handler(req, res) serves from an existing node:http server', async () => {
    const server = createServer((req, res) => {
      if (req.url === '/custom-metrics') return void exporter.handler(req, res);
      res.end('app');
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    after(() => server.close());
    const answer = await get((server.address() as AddressInfo).port, '/custom-metrics');
    assert.match(
      answer.body.toString(),
      /clawperf_http_requests_total\{method="GET",route="\/x",status="200"\} 1/,
    );
  });

  it('route() serves from a Fastify app', async () => {
    const app = Fastify();
    app.route(exporter.route());
    after(() => app.close());
    const answer = await app.inject({
      method: 'GET',
      url: '/metrics',
      headers: { 'accept-encoding': 'gzip' },
    });
    assert.equal(answer.statusCode, 200);
    assert.equal(answer.headers['content-encoding'], 'gzip');
    assert.match(gunzipSync(answer.rawPayload).toString(), /clawperf_queue_processing 3/);
  });
});

describe('registered on a collector, as the seed does it', () => {
  it('serves the metrics of the collector it is registered with, from listen() and route()', async () => {
    const collector = new MetricsCollector({ intervalMs: 0 });
    collector.track('queue', component());
    const exporter = new PrometheusExporter({ port: 0, host: '127.0.0.1' });
    assert.equal(collector.registerExporter(exporter), collector);
    const { port } = await exporter.listen();
    after(async () => {
      await exporter.close();
      await collector.close();
    });
    const answer = await get(port, '/metrics');
    assert.equal(answer.status, 200);
    assert.match(answer.body.toString(), /^clawperf_queue_processing 3$/m);
    const app = Fastify();
    app.route(exporter.route());
    after(() => app.close());
    assert.match(
      (await app.inject({ method: 'GET', url: '/metrics' })).body,
      /^clawperf_queue_processing 3$/m,
    );
    assert.equal(collector.stats().exporters, 1);
  });

  it('serves the same page whichever way it was bound', async () => {
    const byOption = new MetricsCollector({ intervalMs: 0 });
    const byRegistration = new MetricsCollector({ intervalMs: 0 });
    after(() => Promise.all([byOption.close(), byRegistration.close()]));
    for (const c of [byOption, byRegistration]) c.track('queue', component());
    const a = new PrometheusExporter({ collector: byOption });
    const b = new PrometheusExporter({});
    byRegistration.registerExporter(b);
    const body = async (e: PrometheusExporter) => String((await e.render({})).body);
    assert.match(await body(a), /^clawperf_queue_admitted_total 0$/m);
    assert.match(await body(b), /^clawperf_queue_admitted_total 0$/m);
  });

  it('gets no pushes: a collection does not read the tracked components for it', async () => {
    const collector = new MetricsCollector({ intervalMs: 0 });
    after(() => collector.close());
    let reads = 0;
    collector.track('queue', { stats: () => ({ n: ++reads }) });
    collector.registerExporter(new PrometheusExporter({}));
    const before = reads;
    await collector.collect();
    assert.equal(reads, before);
  });

  it('answers 503 until it is bound, and binds to one collector only', async () => {
    const exporter = new PrometheusExporter({});
    const answer = await exporter.render({});
    assert.equal(answer.status, 503);
    assert.match(String(answer.body), /registerExporter/);
    const first = new MetricsCollector({ intervalMs: 0 });
    const second = new MetricsCollector({ intervalMs: 0 });
    after(() => Promise.all([first.close(), second.close()]));
    first.registerExporter(exporter);
    assert.throws(() => second.registerExporter(exporter), /already serves another MetricsCollector/);
    assert.equal(second.stats().exporters, 0);
    const bound = new PrometheusExporter({ collector: first });
    assert.throws(() => second.registerExporter(bound), /already serves another MetricsCollector/);
    first.registerExporter(bound);
    assert.throws(
      () => first.registerExporter({} as never),
      /must be an object with an export\(batch\) or attach\(collector\) method/,
    );
  });

  it("is closed with the collector it is registered with, like the collector's push exporters", async () => {
    const collector = new MetricsCollector({ intervalMs: 0 });
    const exporter = new PrometheusExporter({ port: 0, host: '127.0.0.1' });
    collector.registerExporter(exporter);
    await exporter.listen();
    await collector.close();
    await assert.rejects(exporter.listen(), ClosedError);
  });
});

describe('lifecycle', () => {
  it('answers 503 once the collector is closed, and close() is idempotent', async () => {
    const collector = new MetricsCollector({ intervalMs: 0 });
    const exporter = new PrometheusExporter({ collector, port: 0, host: '127.0.0.1' });
    const { port } = await exporter.listen();
    await collector.close();
    assert.equal((await get(port, '/metrics')).status, 503);
    assert.equal(exporter.stats().scrapeErrors, 1);
    await Promise.all([exporter.close(), exporter.close()]);
    await assert.rejects(exporter.listen(), ClosedError);
  });

  it('rejects invalid options with a TypeError naming the option', () => {
    const collector = new MetricsCollector({ intervalMs: 0 });
    after(() => collector.close());
    assert.throws(
      () => new PrometheusExporter({ collector: {} as never }),
      /collector must be a MetricsCollector/,
    );
    assert.throws(() => new PrometheusExporter({ collector, port: 70_000 }), /port must be/);
    assert.throws(
      () => new PrometheusExporter({ collector, path: 'metrics' }),
      /path must be a string starting with/,
    );
  });
});

describe('a real Prometheus', () => {
  let prometheus: PrometheusServer;
  let collector: MetricsCollector;
  let exporter: PrometheusExporter;
  before(async () => {
    collector = new MetricsCollector({ intervalMs: 200 });
    const queue = component();
    queue.admitted = 42;
    collector.track('queue', queue);
    collector.recordRequest({ method: 'POST', route: '/v1/chat/completions', status: 200, durationMs: 80 });
    exporter = new PrometheusExporter({ collector, port: 0, host: '127.0.0.1' });
    const { port } = await exporter.listen();
    prometheus = await startPrometheus({ targets: [`127.0.0.1:${port}`] });
  });
  after(async () => {
    await prometheus.stop();
    await exporter.close();
    await collector.close();
  });

  it('scrapes the exporter (in OpenMetrics) and its HTTP API returns the series', async () => {
    await waitFor(async () => (await prometheus.query('clawperf_queue_admitted_total')).length > 0, {
      what: 'Prometheus to scrape clawperf',
      timeoutMs: 30_000,
      describe: () => prometheus.output(),
    });
    const [target] = await prometheus.targets();
    assert.equal(target?.health, 'up', target?.lastError);
    assert.ok(exporter.stats().scrapes > 0);
    const value = async (expr: string) => Number((await prometheus.query(expr))[0]?.value[1]);
    assert.equal(await value('clawperf_queue_admitted_total'), 42);
    assert.equal(await value('clawperf_queue_processing'), 3);
    assert.equal(
      await value('clawperf_http_requests_total{method="POST",route="/v1/chat/completions",status="200"}'),
      1,
    );
    assert.equal(await value('clawperf_http_request_duration_seconds_count'), 1);
    assert.ok((await value('clawperf_process_heap_used_bytes')) > 0);
    assert.ok((await value('clawperf_process_cpu_usage_ratio')) >= 0);
  });
});
