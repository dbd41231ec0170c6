/**
 * The optional `prices` setting: read from a config file, the environment or code, validated with errors
 * that name the model and the field (and `clawperf gateway check` exits 2 on them), and priced into
 * `clawperf_gateway_spend_total` and `clawperf_gateway_savings_total`, which exist only with prices.
 * Answers come from a FAKE OpenAI-compatible upstream (its usage: 3 tokens in, 5 out) and the local models.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { ConfigError } from '../../src/errors.ts';
import { loadConfig, resolveConfig } from '../../src/gateway/config.ts';
import { costOf, parsePrices, promptCacheSavingOf } from '../../src/gateway/prices.ts';
import { createGateway, type Gateway } from '../../src/gateway/server.ts';
import { type FakeUpstream, startFakeUpstream } from './fake-upstream.ts';

const root = new URL('../..', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'clawperf-prices-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function problem(fn: () => unknown, setting: string, message: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof ConfigError, `expected ConfigError, got ${String(error)}`);
    assert.equal(error.setting, setting);
    assert.match(error.message, message);
    return true;
  });
}

describe('the prices setting', () => {
  it('is off by default: no price list is built in', () => {
    assert.equal(loadConfig([], {}).prices, undefined);
    assert.equal(resolveConfig({}).prices, undefined);
  });

  it('reads a config file, with cached input and cache writes at the input price unless given', () => {
    const path = join(dir, 'prices.yaml');
    writeFileSync(
      path,
      [
        'prices:',
        '  gpt-4o-mini: { input: 0.15, cachedInput: 0.075, output: 0.6 }',
        '  claude-sonnet-4: { input: 3, cachedInput: 0.3, cacheWrite: 3.75, output: 15 }',
      ].join('\n'),
    );
    assert.deepEqual(loadConfig(['--config', path], {}).prices, {
      'gpt-4o-mini': { input: 0.15, cachedInput: 0.075, cacheWrite: 0.15, output: 0.6 },
      'claude-sonnet-4': { input: 3, cachedInput: 0.3, cacheWrite: 3.75, output: 15 },
    });
  });

  it('reads JSON from CLAWPERF_PRICES and --prices', () => {
    const json = '{"m":{"input":1,"output":2}}';
    const expected = { m: { input: 1, cachedInput: 1, cacheWrite: 1, output: 2 } };
    assert.deepEqual(loadConfig([], { CLAWPERF_PRICES: json }).prices, expected);
    assert.deepEqual(loadConfig(['--prices', json], {}).prices, expected);
    problem(() => loadConfig(['--prices', '{m'], {}), '--prices', /JSON object of prices per model/);
  });

  it('names the model and the field of a bad entry', () => {
    problem(() => parsePrices('prices', { m: { input: 1 } }), 'prices.m.output', /is required/);
    problem(() => parsePrices('prices', { m: { input: -1, output: 1 } }), 'prices.m.input', /got -1/);
    problem(() => parsePrices('prices', { m: { input: '1', output: 1 } }), 'prices.m.input', /got "1"/);
    problem(
      () => parsePrices('prices', { m: { input: 1, output: 1, cached: 1 } }),
      'prices.m.cached',
      /unknown price/,
    );
    problem(() => parsePrices('prices', { m: 3 }), 'prices.m', /must be \{ input/);
    problem(() => parsePrices('prices', [1]), 'prices', /object of models/);
  });

  it('makes `clawperf gateway check` list the bad field and exit 2', async () => {
    const path = join(dir, 'bad.json');
    writeFileSync(path, JSON.stringify({ prices: { 'gpt-4o': { input: 2.5, output: 'ten' } } }));
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', 'src/gateway/main.ts', 'check', '--config', path],
      {
        cwd: root,
        env: { PATH: process.env.PATH, XDG_CACHE_HOME: join(dir, 'xdg') },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let output = '';
    child.stdout.on('data', (c) => {
      output += c;
    });
    child.stderr.on('data', (c) => {
      output += c;
    });
    const [code] = await once(child, 'exit');
    assert.equal(code, 2, output);
    assert.match(output, /prices\.gpt-4o\.output/);
  });
});

describe('what tokens cost', () => {
  const price = { input: 3, cachedInput: 0.3, cacheWrite: 3.75, output: 15 };

  it('prices uncached input, prompt-cache reads and writes, and output each at its own price', () => {
    // 1,000 input tokens of which 600 read from the prompt cache and 100 written to it; 200 output.
    const usage = { input: 1000, output: 200, cacheRead: 600, cacheWrite: 100 };
    assert.equal(costOf(price, usage), (300 * 3 + 600 * 0.3 + 100 * 3.75 + 200 * 15) / 1e6);
    assert.equal(promptCacheSavingOf(price, usage), (600 * (3 - 0.3)) / 1e6);
  });
});

describe('spend and savings on /metrics', () => {
  let fake: FakeUpstream;
  let priced: Gateway;
  let plain: Gateway;

  before(async () => {
    fake = await startFakeUpstream();
    const settings = {
      cacheDir: false as const,
      apiKeys: { 'key-a': 'team-a' },
      deployments: [{ name: 'fake', api: 'openai', baseUrl: fake.url, models: ['fake-chat'] }] as never,
    };
    priced = await createGateway({
      ...settings,
      prices: { 'fake-chat': { input: 0.15, cachedInput: 0.075, output: 0.6 } },
    });
    plain = await createGateway(settings);
  });
  after(async () => {
    await priced.close();
    await plain.close();
    await fake.close();
  });

  async function ask(gw: Gateway, n: number): Promise<string> {
    const base = await gw.app.listen({ port: 0, host: '127.0.0.1' });
    for (let i = 0; i < n; i++) {
      const res = await request(`${base}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: 'Bearer key-a' },
        // The same deterministic question each time: one upstream call, then hits.
        body: JSON.stringify({
          model: 'fake-chat',
          temperature: 0,
          messages: [{ role: 'user', content: 'hi' }],
        }),
      });
      assert.equal(res.statusCode, 200);
      await res.body.dump();
    }
    return (await request(`${base}/metrics`)).body.text();
  }

  const sample = (exposition: string, series: string): number | undefined => {
    const line = exposition.split('\n').find((l) => l.startsWith(`${series} `));
    return line === undefined ? undefined : Number(line.slice(series.length + 1));
  };

  it('counts the spend of the answers the provider produced, and what cache hits would have cost', async () => {
    const exposition = await ask(priced, 3);
    const one = (3 * 0.15 + 5 * 0.6) / 1e6;
    const labels = 'tenant="team-a",model="fake-chat"';
    assert.ok(Math.abs(sample(exposition, `clawperf_gateway_spend_total{${labels}}`)! - one) < 1e-15);
    assert.ok(
      Math.abs(sample(exposition, `clawperf_gateway_savings_total{${labels},by="cache"}`)! - 2 * one) < 1e-15,
    );
    assert.equal(sample(exposition, `clawperf_gateway_savings_total{${labels},by="prompt_cache"}`), 0);
    assert.equal(sample(exposition, `clawperf_gateway_tenant_requests_total{${labels},outcome="hit"}`), 2);
    assert.equal(sample(exposition, `clawperf_gateway_tenant_tokens_total{${labels},direction="output"}`), 5);
    assert.equal(sample(exposition, `clawperf_gateway_tenant_tokens_saved_total{${labels},by="cache"}`), 16);
  });

  it('without prices counts tokens only, and exports no spend', async () => {
    const exposition = await ask(plain, 2);
    assert.doesNotMatch(exposition, /clawperf_gateway_(spend|savings)_total/);
    assert.equal(
      sample(
        exposition,
        'clawperf_gateway_tenant_tokens_total{tenant="team-a",model="fake-chat",direction="input"}',
      ),
      3,
    );
  });
});
