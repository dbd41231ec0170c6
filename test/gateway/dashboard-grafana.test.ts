/**
 * The Grafana dashboard's gateway panels (tenants and models, deployments, cost) against a real Prometheus
 * scraping a real gateway under traffic: three tenants (one past its limit, one answered from the cache), the local models, a deployment
 * on a FAKE OpenAI-compatible upstream that fails now and then, and prices. Every query of a gateway panel
 * must run and return data.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { createGateway, type Gateway } from '../../src/gateway/server.ts';
import { type PrometheusServer, startPrometheus } from '../helpers/prometheus.ts';
import { waitFor } from '../helpers/servers.ts';
import { type FakeUpstream, startFakeUpstream } from './fake-upstream.ts';

interface Dashboard {
  panels: { title: string; type: string; targets: { expr: string; refId: string }[] }[];
  templating: { list: { name: string; allValue?: string }[] };
}

const dashboard = JSON.parse(
  await readFile(new URL('../../docs/grafana-dashboard.json', import.meta.url), 'utf8'),
) as Dashboard;

/** What Grafana substitutes before it sends a panel's query. */
function expand(expr: string): string {
  let out = expr
    .replaceAll('$__rate_interval', '1m')
    .replaceAll('$__interval', '15s')
    .replaceAll('$__range', '5m');
  for (const variable of dashboard.templating.list)
    out = out.replaceAll(`$${variable.name}`, variable.allValue ?? '.+');
  return out;
}

const gatewayPanels = dashboard.panels.filter((p) =>
  p.targets.some((t) => t.expr.includes('clawperf_gateway_')),
);

let fake: FakeUpstream;
let gw: Gateway;
let prometheus: PrometheusServer;
let traffic: NodeJS.Timeout;
let sent: Promise<unknown> = Promise.resolve();

before(async () => {
  fake = await startFakeUpstream();
  gw = await createGateway({
    cacheDir: false,
    localChatLatencyMs: 5,
    apiKeys: { 'key-a': 'team-a', 'key-b': 'team-b', 'key-c': 'team-c' },
    limits: { rpm: 30 },
    deployments: [{ name: 'fake-east', api: 'openai', baseUrl: fake.url, models: ['fake-chat'] }] as never,
    prices: {
      'fake-chat': { input: 0.15, cachedInput: 0.075, output: 0.6 },
      'local-chat': { input: 1, output: 4 },
    },
  });
  const base = await gw.app.listen({ port: 0, host: '127.0.0.1' });
  const post = (key: string, path: string, body: unknown) =>
    request(`${base}${path}`, {
      method: 'POST',
      body: JSON.stringify(body),
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    }).then((res) => res.body.dump());
  let n = 0;
  traffic = setInterval(() => {
    n++;
    // Now and then the upstream fails a call: the deployment's failures by kind.
    if (n % 20 === 0) fake.fail({ kind: 'status', status: 500 }, 1);
    sent = Promise.allSettled([
      sent,
      // Team b asks the deployment ten times a second, past its 30 a minute.
      post('key-b', '/v1/chat/completions', {
        model: 'fake-chat',
        messages: [{ role: 'user', content: `b ${n}` }],
      }),
      // Team a asks the local model under its limit (24 a minute), each answer new: it keeps spending.
      n % 25 === 0
        ? post('key-a', '/v1/chat/completions', {
            model: 'local-chat',
            messages: [{ role: 'user', content: `a ${n}` }],
          })
        : undefined,
      // Team c asks one question again and again: cache hits.
      n % 25 === 12
        ? post('key-c', '/v1/chat/completions', {
            model: 'local-chat',
            temperature: 0,
            messages: [{ role: 'user', content: 'c' }],
          })
        : undefined,
    ]);
  }, 100);
  const { port } = gw.app.server.address() as { port: number };
  prometheus = await startPrometheus({ targets: [`127.0.0.1:${port}`] });
  // Rates need at least two scrapes inside their window of each outcome the panels divide by.
  const scrapes = async (series: string) =>
    Number((await prometheus.query(`count_over_time(${series}[1m])`))[0]?.value[1] ?? 0);
  await waitFor(
    async () =>
      (await scrapes('clawperf_gateway_tenant_requests_total{outcome="rate_limited"}')) >= 3 &&
      (await scrapes('clawperf_gateway_tenant_requests_total{outcome="hit"}')) >= 2 &&
      (await scrapes('clawperf_gateway_deployment_failures_total')) >= 2 &&
      (await prometheus.query('increase(clawperf_gateway_spend_total{tenant="team-a"}[5m]) > 0')).length > 0,
    { what: 'scrapes of the gateway under traffic', timeoutMs: 60_000, describe: () => prometheus.output() },
  );
});

after(async () => {
  clearInterval(traffic);
  await sent;
  await prometheus?.stop();
  await gw?.close();
  await fake?.close();
});

describe("the Grafana dashboard's gateway panels", () => {
  it('has panels per tenant, per deployment and for cost', () => {
    const exprs = gatewayPanels.flatMap((p) => p.targets.map((t) => t.expr)).join('\n');
    for (const metric of [
      'clawperf_gateway_tenant_requests_total',
      'clawperf_gateway_tenant_tokens_total',
      'clawperf_gateway_prompt_cache_tokens_total',
      'clawperf_gateway_deployment_failures_total',
      'clawperf_gateway_deployment_duration_seconds_bucket',
      'clawperf_gateway_deployment_circuit_open',
      'clawperf_gateway_deployment_concurrency_limit',
      'clawperf_gateway_deployment_pacing_remaining',
      'clawperf_gateway_spend_total',
      'clawperf_gateway_savings_total',
    ]) {
      assert.ok(exprs.includes(metric), metric);
    }
  });

  it('every query of a gateway panel runs against the real Prometheus scraping the gateway and returns data', async () => {
    const failures: string[] = [];
    for (const panel of gatewayPanels) {
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

  it('shows the tenant past its limit refused, the deployment failing by kind, and what it cost', async () => {
    const byLabel = async (expr: string, label: string) =>
      Object.fromEntries(
        (await prometheus.query(expand(expr))).map((s) => [s.metric[label] ?? '', Number(s.value[1])]),
      );
    const panel = (title: string) => dashboard.panels.find((p) => p.title === title)!.targets;
    const refused = await byLabel(panel('429s by tenant')[0]!.expr, 'tenant');
    assert.ok((refused['team-b'] ?? 0) > 0, JSON.stringify(refused));
    assert.equal(refused['team-a'], undefined);
    const failed = await byLabel(panel('Deployment calls and failures')[1]!.expr, 'kind');
    assert.ok('server_error' in failed, JSON.stringify(failed));
    const spent = await byLabel(panel('Spend and savings by tenant over the range')[0]!.expr, 'tenant');
    assert.ok((spent['team-a'] ?? 0) > 0, JSON.stringify(spent));
  });
});
