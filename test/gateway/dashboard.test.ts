/**
 * The dashboard in a real browser (Debian's chromium driven by playwright-core): it arrives with the recent
 * history drawn, keeps its tables equal to `/metrics`, fits a phone's width, and loads without an error or
 * a 404. Traffic goes to the local models and to a FAKE OpenAI-compatible upstream as a deployment.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Browser, chromium, type Page } from 'playwright-core';
import { request } from 'undici';
import { createGateway, type Gateway } from '../../src/gateway/server.ts';
import { requireBinary, waitFor } from '../helpers/servers.ts';
import { type FakeUpstream, startFakeUpstream } from './fake-upstream.ts';

// The picture in docs/ is refreshed only when asked (CLAWPERF_UPDATE_DOCS=1 npm test -- test/gateway), so a
// test run never changes tracked files.
const docsScreenshot = new URL('../../docs/dashboard.png', import.meta.url).pathname;
const KEYS = { 'key-a': 'team-a', 'key-b': 'team-b' } as const;
const RPM = 40;

let gw: Gateway;
let base: string;
let browser: Browser;
let dir: string;
let fake: FakeUpstream;

async function send(key: string, path: string, body: unknown): Promise<number> {
  const res = await request(`${base}${path}`, {
    method: 'POST',
    body: JSON.stringify(body),
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
  });
  await res.body.dump();
  return res.statusCode;
}

/** Some of every kind: hits, misses, coalesced calls, embeddings, a deployment's answers, and 429s. */
async function traffic(): Promise<void> {
  const chat = (key: string, model: string, i: number) =>
    send(key, '/v1/chat/completions', {
      model,
      temperature: 0,
      messages: [{ role: 'user', content: `question ${i}` }],
    });
  // Team a stays within its requests per minute (with the five requests a test adds later).
  for (let i = 0; i < 10; i++) {
    await Promise.all([
      chat('key-a', 'local-chat', i % 6),
      chat('key-a', 'local-chat', i % 6),
      send('key-a', '/v1/embeddings', { model: 'local-embed', input: [`text ${i % 10}`, `other ${i}`] }),
    ]);
  }
  // Team b goes past its requests per minute.
  for (let i = 0; i < RPM + 10; i++) await chat('key-b', 'fake-chat', i % 8);
}

/** The sum of every sample of `name` in the exposition whose labels match `filter`. */
function total(exposition: string, name: string, filter = ''): number {
  let sum = 0;
  for (const line of exposition.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (!line.includes(filter)) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

async function metrics(): Promise<string> {
  return (await request(`${base}/metrics`)).body.text();
}

/** A page that records console errors, page errors and failed loads. */
async function open(width: number, height: number): Promise<{ page: Page; problems: string[] }> {
  const page = await browser.newPage({ viewport: { width, height } });
  const problems: string[] = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console: ${m.text()}`);
  });
  page.on('response', (r) => {
    if (r.status() >= 400) problems.push(`${r.status()} ${r.url()}`);
  });
  await page.goto(`${base}/`);
  return { page, problems };
}

/** Pixels drawn on each chart's canvas. */
async function ink(page: Page): Promise<number[]> {
  return (await page.evaluate(`Array.from(document.querySelectorAll('.chart canvas')).map((c) => {
    const { data } = c.getContext('2d').getImageData(0, 0, c.width, c.height);
    let n = 0;
    for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n++;
    return n;
  })`)) as number[];
}

before(async () => {
  requireBinary('chromium', 'chromium');
  dir = await mkdtemp(join(tmpdir(), 'clawperf-dash-'));
  fake = await startFakeUpstream();
  gw = await createGateway({
    cacheDir: dir,
    localChatLatencyMs: 5,
    apiKeys: { ...KEYS },
    limits: { rpm: RPM },
    deployments: [{ name: 'fake-east', api: 'openai', baseUrl: fake.url, models: ['fake-chat'] }] as never,
    prices: {
      'local-chat': { input: 2.5, cachedInput: 1.25, output: 10 },
      'fake-chat': { input: 0.15, output: 0.6 },
    },
  });
  base = await gw.app.listen({ port: 0, host: '127.0.0.1' });
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
  await traffic();
  const trafficEnded = Date.now();
  // The history holds the traffic once a point after it was taken: the page embeds it. The usage rows are
  // live, so the wait is for a point too (its `t` is rounded to the second: one a second after is surely
  // later).
  const done = total(await metrics(), 'clawperf_gateway_tenant_requests_total');
  await waitFor(
    async () => {
      const page = await (await request(`${base}/`)).body.text();
      const json = page.match(/<script id="snapshot" type="application\/json">(.*?)<\/script>/s)?.[1];
      const snapshot = JSON.parse(json ?? '{"usage":[],"points":[]}') as {
        usage: { requests: number }[];
        points: { t: number }[];
      };
      return (
        snapshot.usage.reduce((n, r) => n + r.requests, 0) === done &&
        snapshot.points.some((p) => p.t * 1000 >= trafficEnded + 1000)
      );
    },
    { what: 'a dashboard point after the traffic', timeoutMs: 20_000 },
  );
});

after(async () => {
  await browser?.close();
  await gw?.close();
  await fake?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('the dashboard', () => {
  it('arrives with the recent history drawn: every chart has data at load, before any live update', async () => {
    const { page, problems } = await open(1320, 900);
    // Read at the load event, with no wait for the stream: the data came with the page.
    const points = (await page.evaluate('window.clawperfPoints')) as number;
    assert.ok(points >= 1, `points at load: ${points}`);
    const data = (await page.evaluate(
      `charts.map((c) => ({ id: c.id, points: c.data[0].length, peak: Math.max(0, ...c.data.slice(1).flat()) }))`,
    )) as { id: string; points: number; peak: number }[];
    assert.equal(data.length, 10, 'nine panels, and spend with prices');
    for (const chart of data) assert.ok(chart.points >= 1, `${chart.id} has points`);
    // Charts of what the traffic did show it, not zeros.
    for (const id of ['routes', 'cache', 'latency', 'tokens', 'calls', 'saved', 'limiter', 'heap', 'spend']) {
      assert.ok(data.find((c) => c.id === id)!.peak > 0, `${id} shows the traffic: ${JSON.stringify(data)}`);
    }
    const drawn = await ink(page);
    assert.ok(drawn.length === 10 && drawn.every((n) => n > 0), `ink per chart: ${drawn}`);
    await page.close();
    assert.deepEqual(problems, []);
  });

  it('shortens large numbers on its axes (k, M) and sizes the axis to the longest label', async () => {
    const { page } = await open(1320, 900);
    assert.equal(await page.evaluate('fmt(100651)'), '100.7k');
    assert.equal(await page.evaluate('fmt(2500000)'), '2.5M');
    assert.equal(await page.evaluate('fmt(950)'), '950');
    assert.equal(await page.evaluate('fmt(0.25)'), '0.25');
    // Room for every label of every axis: the axis is at least as wide as its widest label needs.
    const fits = (await page.evaluate(`charts.map((c) => {
      const axis = c.plot.axes[1];
      const labels = (axis._values || []).map(String);
      const ctx = c.plot.ctx;
      ctx.font = axis.font ? axis.font[0] : '12px system-ui';
      const widest = Math.max(0, ...labels.map((l) => ctx.measureText(l).width));
      return axis._size * devicePixelRatio >= widest;
    })`)) as boolean[];
    assert.ok(fits.every(Boolean), `axes fitting their labels: ${fits}`);
    await page.close();
  });

  it('fills each card with its chart, and a 390 px window still shows every panel without side-scrolling', async () => {
    for (const width of [1320, 390]) {
      const { page, problems } = await open(width, 844);
      const cards = (await page.evaluate(`Array.from(document.querySelectorAll('.card')).map((card) => {
        const box = card.getBoundingClientRect();
        const canvas = card.querySelector('canvas');
        const inner = card.clientWidth - 16;
        return { left: box.left, right: box.right, width: box.width, chart: canvas ? canvas.getBoundingClientRect().width / inner : 1 };
      })`)) as { left: number; right: number; width: number; chart: number }[];
      assert.equal(cards.length, 13, 'ten charts and three tables');
      for (const card of cards) {
        assert.ok(
          card.left >= 0 && card.right <= width,
          `a card inside ${width} px: ${JSON.stringify(card)}`,
        );
        assert.ok(
          card.chart > 0.95 && card.chart <= 1.001,
          `a chart filling its card: ${JSON.stringify(card)}`,
        );
      }
      const scroll = (await page.evaluate('document.documentElement.scrollWidth')) as number;
      assert.ok(scroll <= width, `page width ${scroll} in a ${width} px window`);
      assert.deepEqual(problems, []);
      await page.close();
    }
  });

  it("keeps its tables live, and once traffic stops their totals equal /metrics' counters", async () => {
    const { page, problems } = await open(1320, 900);
    // More traffic after the page loaded: the tables follow.
    for (let i = 0; i < 5; i++) {
      await send('key-a', '/v1/chat/completions', {
        model: 'local-chat',
        messages: [{ role: 'user', content: `late ${i}` }],
      });
    }
    const exposition = await metrics();
    const expected = {
      requests: total(exposition, 'clawperf_gateway_tenant_requests_total'),
      tokensIn: total(exposition, 'clawperf_gateway_tenant_tokens_total', 'direction="input"'),
      tokensOut: total(exposition, 'clawperf_gateway_tenant_tokens_total', 'direction="output"'),
      rateLimited: total(exposition, 'clawperf_gateway_tenant_requests_total', 'outcome="rate_limited"'),
    };
    // The tenants' requests are every answer plus every refusal, as the gateway's own counters say.
    assert.equal(
      expected.requests,
      total(exposition, 'clawperf_gateway_answers_total') +
        total(exposition, 'clawperf_gateway_rate_limited_total'),
    );
    assert.equal(expected.rateLimited, 10);
    const footer = async () =>
      (await page.evaluate(`Object.fromEntries(Array.from(document.querySelectorAll('#tenants tfoot td'))
        .map((td) => [td.dataset.col, td.textContent]))`)) as Record<string, string>;
    const shown = async () => {
      const f = await footer();
      return {
        requests: Number(f.requests),
        tokensIn: Number(f['tokens in']),
        tokensOut: Number(f['tokens out']),
        rateLimited: Number(f['429s']),
      };
    };
    let last: unknown;
    await waitFor(
      async () => {
        last = await shown();
        return JSON.stringify(last) === JSON.stringify(expected);
      },
      {
        what: 'the tables catching up',
        timeoutMs: 10_000,
        describe: () => `${JSON.stringify(last)} vs ${JSON.stringify(expected)}`,
      },
    );
    assert.deepEqual(await shown(), expected);
    // Spend is priced per tenant as on /metrics.
    const spend = total(exposition, 'clawperf_gateway_spend_total');
    assert.ok(spend > 0);
    // Shown to three significant digits.
    const shownSpend = Number((await footer()).spend);
    assert.ok(Math.abs(shownSpend - spend) <= spend * 0.005, `${shownSpend} against ${spend}`);
    // The deployment's row: its calls as /metrics counts them, its circuit closed.
    const row =
      (await page.evaluate(`Array.from(document.querySelectorAll('#deployments tbody tr')).map((tr) =>
      Array.from(tr.children).map((td) => td.textContent))`)) as string[][];
    assert.equal(row.length, 1);
    assert.equal(row[0]![0], 'fake-east');
    assert.equal(row[0]![1], 'closed');
    assert.equal(Number(row[0]![7]), total(exposition, 'clawperf_gateway_deployment_requests_total'));
    // Team b used its whole minute.
    const tenants =
      (await page.evaluate(`Array.from(document.querySelectorAll('#tenants tbody tr')).map((tr) =>
      Array.from(tr.children).map((td) => td.textContent))`)) as string[][];
    const b = tenants.find((r) => r[0] === 'team-b');
    assert.equal(b?.[4], '100 %');
    assert.deepEqual(problems, []);

    const screenshot = process.env.CLAWPERF_UPDATE_DOCS === '1' ? docsScreenshot : join(dir, 'dashboard.png');
    await page.screenshot({ path: screenshot, fullPage: true });
    assert.ok((await stat(screenshot)).size > 10_000, 'the screenshot holds a rendered page');
    await page.close();
  });

  it('serves a favicon', async () => {
    const res = await request(`${base}/favicon.ico`);
    assert.equal(res.statusCode, 200);
    assert.match(String(res.headers['content-type']), /image\/svg\+xml/);
    assert.match(await res.body.text(), /^<svg /);
  });
});
