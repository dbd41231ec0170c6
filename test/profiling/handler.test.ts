import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import {
  createProfilingHandler,
  isProfilingPath,
  PerformanceProfiler,
  type ProfilingHandler,
} from '../../src/profiling/index.ts';

const TOKEN = 'correct horse battery staple';

async function serve(handler: ProfilingHandler): Promise<{ base: string; server: Server }> {
  const server = createServer((req, res) => void handler(req, res));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

describe('without a configured token', () => {
  it('every endpoint is disabled', async () => {
    const handler = createProfilingHandler();
    const { base, server } = await serve(handler);
    after(() => server.close());
    for (const path of ['/debug/eventloop', '/debug/pprof/profile', '/debug/pprof/heap']) {
      const response = await fetch(`${base}${path}`, { headers: bearer('anything') });
      assert.equal(response.status, 404, path);
      assert.match(await response.text(), /disabled/);
    }
    await handler.close();
  });
});

describe('with a token', () => {
  let handler: ProfilingHandler;
  let profiler: PerformanceProfiler;
  let base: string;
  let server: Server;
  before(async () => {
    profiler = new PerformanceProfiler();
    handler = createProfilingHandler({ token: TOKEN, profiler, maxProfileSeconds: 5 });
    ({ base, server } = await serve(handler));
  });
  after(async () => {
    server.close();
    await handler.close();
    await profiler.close();
  });

  it('refuses a missing or wrong token with 401', async () => {
    const none = await fetch(`${base}/debug/eventloop`);
    assert.equal(none.status, 401);
    assert.equal(none.headers.get('www-authenticate'), 'Bearer');
    for (const token of ['wrong', `${TOKEN}x`, TOKEN.slice(0, -1), '']) {
      assert.equal((await fetch(`${base}/debug/eventloop`, { headers: bearer(token) })).status, 401, token);
    }
    const basic = await fetch(`${base}/debug/eventloop`, { headers: { authorization: `Basic ${TOKEN}` } });
    assert.equal(basic.status, 401);
  });

  it('/debug/eventloop returns the lag histogram in ms', async () => {
    const response = await fetch(`${base}/debug/eventloop?seconds=0.2`, { headers: bearer(TOKEN) });
    assert.equal(response.status, 200);
    const lag = (await response.json()) as Record<string, number>;
    assert.deepEqual(Object.keys(lag).sort(), ['max', 'mean', 'min', 'p50', 'p90', 'p99', 'samples']);
  });

  it('/debug/pprof/profile returns a .cpuprofile for the requested seconds', async () => {
    const response = await fetch(`${base}/debug/pprof/profile?seconds=0.2`, { headers: bearer(TOKEN) });
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-disposition') ?? '', /\.cpuprofile"$/);
    const profile = (await response.json()) as { nodes: unknown[]; startTime: number; endTime: number };
    assert.ok(profile.nodes.length > 0 && profile.endTime > profile.startTime);
  });

  it('a second profile while one runs gets 409', async () => {
    const first = fetch(`${base}/debug/pprof/profile?seconds=1`, { headers: bearer(TOKEN) });
    while (profiler.active === undefined) await new Promise((r) => setTimeout(r, 5));
    const second = await fetch(`${base}/debug/pprof/profile?seconds=1`, { headers: bearer(TOKEN) });
    assert.equal(second.status, 409);
    assert.equal((await first).status, 200);
  });

  it('a client that hangs up ends its profile early', async () => {
    const controller = new AbortController();
    const request = fetch(`${base}/debug/pprof/profile?seconds=5`, {
      headers: bearer(TOKEN),
      signal: controller.signal,
    });
    while (profiler.active === undefined) await new Promise((r) => setTimeout(r, 5));
    controller.abort();
    await assert.rejects(request);
    while (profiler.active !== undefined) await new Promise((r) => setTimeout(r, 5));
    await profiler.startCPUProfile();
    await profiler.stopCPUProfile();
  });

  it('/debug/pprof/heap streams a heap snapshot, and ?seconds= a sampling heap profile', async () => {
    const snapshot = await fetch(`${base}/debug/pprof/heap`, { headers: bearer(TOKEN) });
    assert.equal(snapshot.status, 200);
    assert.match(snapshot.headers.get('content-disposition') ?? '', /\.heapsnapshot"$/);
    const parsed = (await snapshot.json()) as { snapshot: { meta: object } };
    assert.ok(parsed.snapshot.meta);
    const sampling = await fetch(`${base}/debug/pprof/heap?seconds=0.1`, { headers: bearer(TOKEN) });
    assert.equal(sampling.status, 200);
    assert.ok(((await sampling.json()) as { head: object }).head);
  });

  it('rejects bad seconds (400), other methods (405) and other paths (404)', async () => {
    for (const seconds of ['0', '-1', 'abc', '6']) {
      const response = await fetch(`${base}/debug/pprof/profile?seconds=${seconds}`, {
        headers: bearer(TOKEN),
      });
      assert.equal(response.status, 400, seconds);
    }
    assert.equal(
      (await fetch(`${base}/debug/eventloop`, { method: 'POST', headers: bearer(TOKEN) })).status,
      405,
    );
    assert.equal((await fetch(`${base}/debug/other`, { headers: bearer(TOKEN) })).status, 404);
  });
});

describe('routing helper', () => {
  it('isProfilingPath matches exactly the served paths', () => {
    assert.ok(isProfilingPath('/debug/pprof/profile?seconds=3'));
    assert.ok(isProfilingPath('/debug/pprof/heap'));
    assert.ok(isProfilingPath('/debug/eventloop'));
    assert.ok(!isProfilingPath('/debug'));
    assert.ok(!isProfilingPath('/metrics'));
    assert.ok(!isProfilingPath(undefined));
  });

  it('rejects invalid options with a TypeError naming the option', () => {
    assert.throws(() => createProfilingHandler({ token: '' }), /token must be a non-empty string/);
    assert.throws(
      () => createProfilingHandler({ profiler: {} as never }),
      /profiler must be a PerformanceProfiler/,
    );
    assert.throws(() => createProfilingHandler({ maxProfileSeconds: -1 }), /maxProfileSeconds/);
  });
});
