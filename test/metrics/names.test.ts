import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { createGateway } from '../../src/gateway/server.ts';
import { MetricsCollector } from '../../src/metrics/index.ts';
import { startFakeUpstream } from '../gateway/fake-upstream.ts';
import { promtoolCheckMetrics } from '../helpers/prometheus.ts';

const SNAKE = /^[a-z_:][a-z0-9_:]*$/;

/** The sample names of an exposition (without labels), in order of appearance. */
function sampleNames(text: string): string[] {
  return text
    .split('\n')
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => l.split(/[{ ]/, 1)[0]!);
}

/** The family names of `# TYPE` lines. */
function families(text: string): string[] {
  return [...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!);
}

function assertSnakeCase(text: string): void {
  const bad = sampleNames(text).filter((n) => !SNAKE.test(n));
  assert.deepEqual(bad, [], `names not in snake_case: ${bad.join(', ')}`);
}

function assertUniqueFamilies(text: string): void {
  const seen = families(text);
  assert.deepEqual(
    seen.filter((f, i) => seen.indexOf(f) !== i),
    [],
    'a family name appears twice',
  );
}

describe('tracked stats() fields become snake_case metric names', () => {
  it('turns camelCase fields (and component names) into snake_case, gauges and counters alike', async () => {
    const collector = new MetricsCollector({ intervalMs: 0 });
    after(() => collector.close());
    collector.track('gateway', {
      stats: () => ({ rateLimited: 2, inFlight: 1, upstreamCallsSaved: 5, errors4xx: 3 }),
      statsCounters: ['rateLimited', 'errors4xx'],
    });
    collector.track('localUpstream', {
      stats: () => ({ embedCalls: 4, HTTPErrors: 1, breaker: { lastOpenAt: 7 } }),
      statsCounters: ['embedCalls'],
    });
    const text = await collector.scrape();
    const names = sampleNames(text);
    for (const name of [
      'clawperf_gateway_rate_limited_total',
      'clawperf_gateway_in_flight',
      'clawperf_gateway_upstream_calls_saved',
      'clawperf_gateway_errors4xx_total',
      'clawperf_local_upstream_embed_calls_total',
      'clawperf_local_upstream_http_errors',
      'clawperf_local_upstream_breaker_last_open_at',
    ]) {
      assert.ok(names.includes(name), `${name} is missing from:\n${names.join('\n')}`);
    }
    assertSnakeCase(text);
    assert.match(text, /^# HELP clawperf_gateway_rate_limited_total gateway\.stats\(\)\.rateLimited$/m);
    assertSnakeCase(await collector.scrape('openmetrics'));
  });

  it('keeps a gauge `queued` and a counter `queuedTotal` apart in OpenMetrics too, whatever their order', async () => {
    for (const order of ['gauge first', 'counter first']) {
      const collector = new MetricsCollector({ intervalMs: 0 });
      const stats = order === 'gauge first' ? { queued: 1, queuedTotal: 9 } : { queuedTotal: 9, queued: 1 };
      collector.track('queue', { stats: () => stats, statsCounters: ['queuedTotal'] });
      const text = await collector.scrape();
      const open = await collector.scrape('openmetrics');
      await collector.close();
      assert.match(text, /^clawperf_queue_queued 1$/m, order);
      assert.match(text, /^clawperf_queue_queued_total_total 9$/m, order);
      assertUniqueFamilies(open);
      assert.ok(promtoolCheckMetrics(text).ok, promtoolCheckMetrics(text).output);
    }
  });

  it('does not double the suffix of a counter already named ..._total when nothing clashes', async () => {
    const collector = new MetricsCollector({ intervalMs: 0 });
    after(() => collector.close());
    collector.track('pool', { stats: () => ({ createdTotal: 12 }), statsCounters: ['createdTotal'] });
    assert.match(await collector.scrape(), /^clawperf_pool_created_total 12$/m);
  });

  it('exports durations counted in milliseconds in seconds, the base unit, so promtool accepts the names', async () => {
    const collector = new MetricsCollector({ intervalMs: 0 });
    after(() => collector.close());
    collector.track('pool', {
      stats: () => ({ lastWaitMs: 1500, waitMsTotal: 12, msgs: 3 }),
      statsCounters: ['waitMsTotal'],
    });
    const text = await collector.scrape();
    assert.match(text, /^clawperf_pool_last_wait_seconds 1\.5$/m);
    assert.match(text, /^clawperf_pool_wait_seconds_total 0\.012$/m);
    assert.match(text, /^clawperf_pool_msgs 3$/m);
    assert.match(text, /^# HELP clawperf_pool_last_wait_seconds pool\.stats\(\)\.lastWaitMs \/ 1000$/m);
    assert.ok(promtoolCheckMetrics(text).ok, promtoolCheckMetrics(text).output);
  });
});

describe('a gateway scrape', () => {
  it('has only snake_case names, unique families, and passes promtool check metrics', async () => {
    const fake = await startFakeUpstream();
    const gw = await createGateway({
      upstreamUrl: fake.url,
      limits: { rpm: 100, tpm: 100_000 },
      cacheDir: false,
      localChatLatencyMs: 0,
    });
    after(async () => {
      await gw.close();
      await fake.close();
    });
    const post = (url: string, payload: object) => gw.app.inject({ method: 'POST', url, payload });
    await post('/v1/embeddings', { model: 'local-embed', input: ['a', 'b'] });
    await post('/v1/chat/completions', {
      model: 'fake-chat',
      temperature: 0,
      messages: [{ role: 'user', content: 'names' }],
    });
    const text = (await gw.app.inject({ method: 'GET', url: '/metrics' })).body;
    const names = sampleNames(text);
    for (const name of [
      'clawperf_gateway_rate_limited_total',
      'clawperf_gateway_in_flight',
      'clawperf_gateway_upstream_calls_saved',
      'clawperf_limiter_store_errors_total',
      'clawperf_backpressure_queue_wait_seconds_total',
      'clawperf_prometheus_last_scrape_seconds',
      'clawperf_local_upstream_embed_calls_total',
    ]) {
      assert.ok(names.includes(name), `${name} is missing`);
    }
    assertSnakeCase(text);
    const { ok, output } = promtoolCheckMetrics(text);
    assert.ok(ok, output);
    const open = (
      await gw.app.inject({
        method: 'GET',
        url: '/metrics',
        headers: { accept: 'application/openmetrics-text; version=1.0.0' },
      })
    ).body;
    assertSnakeCase(open);
    assertUniqueFamilies(open);
  });
});
