import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Browser, chromium } from 'playwright-core';
import { request } from 'undici';
import { createGateway, type Gateway } from '../../src/gateway/server.ts';
import { requireBinary, waitFor } from '../helpers/servers.ts';

// The picture in docs/ is refreshed only when asked (CLAWPERF_UPDATE_DOCS=1 npm test -- test/gateway), so a
// test run never changes tracked files.
const docsScreenshot = new URL('../../docs/dashboard.png', import.meta.url).pathname;
let gw: Gateway;
let base: string;
let browser: Browser;
let dir: string;
let stopTraffic = false;
let traffic: Promise<void> = Promise.resolve();

before(async () => {
  requireBinary('chromium', 'chromium');
  const executablePath = '/usr/bin/chromium';
  dir = await mkdtemp(join(tmpdir(), 'clawperf-dash-'));
  gw = await createGateway({ cacheDir: dir, localChatLatencyMs: 5, limits: { rpm: 600 } });
  base = await gw.app.listen({ port: 0, host: '127.0.0.1' });
  browser = await chromium.launch({
    executablePath,
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
});

after(async () => {
  stopTraffic = true;
  await traffic;
  await browser?.close();
  await gw?.close();
  await rm(dir, { recursive: true, force: true });
});

async function send(path: string, body: unknown): Promise<void> {
  const res = await request(`${base}${path}`, {
    method: 'POST',
    body: JSON.stringify(body),
    headers: { 'content-type': 'application/json' },
  });
  await res.body.dump();
}

describe('the dashboard', () => {
  it('draws live charts with data after traffic', async () => {
    const page = await browser.newPage({ viewport: { width: 1320, height: 860 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${base}/`);
    traffic = (async () => {
      for (let i = 0; !stopTraffic; i++) {
        await send('/v1/embeddings', { model: 'local-embed', input: `dash ${i % 40}` });
        await send('/v1/chat/completions', {
          model: 'local-chat',
          temperature: 0,
          messages: [{ role: 'user', content: `dash ${i % 10}` }],
        });
      }
    })();
    await waitFor(async () => ((await page.evaluate('window.clawperfPoints')) as number) >= 4, {
      what: 'four dashboard updates',
      timeoutMs: 20_000,
    });
    assert.equal(await page.locator('canvas').count(), 8);
    assert.match((await page.locator('#status').textContent()) ?? '', /live/);
    const rate = Number(await page.locator('#now-rate').textContent());
    assert.ok(rate > 0, `request rate ${rate}`);
    const latency = await page.locator('#now-latency').textContent();
    assert.match(latency ?? '', /^\d/);
    // A chart with data has drawn a series path: its canvas is not blank.
    const drawn = (await page.evaluate(`Array.from(document.querySelectorAll('canvas')).map((c) => {
      const { data } = c.getContext('2d').getImageData(0, 0, c.width, c.height);
      let ink = 0;
      for (let i = 3; i < data.length; i += 4) if (data[i] > 0) ink++;
      return ink;
    })`)) as number[];
    assert.ok(
      drawn.every((ink) => ink > 0),
      `ink per chart: ${drawn}`,
    );
    const screenshot = process.env.CLAWPERF_UPDATE_DOCS === '1' ? docsScreenshot : join(dir, 'dashboard.png');
    await page.screenshot({ path: screenshot, fullPage: true });
    assert.ok((await stat(screenshot)).size > 10_000, 'the screenshot holds a rendered page');
    assert.deepEqual(errors, []);
    await page.close();
  });
});
