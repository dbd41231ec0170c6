/**
 * `clawperf gateway --workers 2` as a real process tree: a primary, two workers on one port and, without
 * `--redis`, a private redis-server on a Unix socket; a FAKE upstream stands in for the provider. The
 * workers keep the guarantees of gateway nodes (exact limits, one cache, one upstream call for identical
 * concurrent requests, the whole gateway's metrics on any worker), a worker that dies is replaced with
 * only its own requests failing, and SIGTERM drains everything and exits 0.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readdirSync } from 'node:fs';
import { mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { freePort, waitFor } from '../helpers/servers.ts';
import { type FakeUpstream, startFakeUpstream } from './fake-upstream.ts';

const root = new URL('../..', import.meta.url).pathname;
const dirs: string[] = [];
const children: ChildProcess[] = [];
let fake: FakeUpstream;

before(async () => {
  fake = await startFakeUpstream();
});
after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await fake.close();
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'clawperf-workers-'));
  dirs.push(dir);
  return dir;
}

/** Starts `clawperf gateway` from source with `args`; resolves once it serves. */
async function gateway(args: string[], env: NodeJS.ProcessEnv = process.env) {
  const port = await freePort();
  const cacheDir = await tempDir();
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', 'src/gateway/main.ts', '--port', String(port), '--cache-dir', cacheDir, ...args],
    { cwd: root, env, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  children.push(child);
  let output = '';
  child.stderr!.on('data', (c) => {
    output += c;
  });
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  return { child, port, cacheDir, base: `http://127.0.0.1:${port}`, output: () => output, exited };
}

/** The pids of the primary's worker processes. */
function workerPids(primary: number): number[] {
  const out = execFileSync('ps', ['-o', 'pid=,args=', '--ppid', String(primary)]).toString();
  return out
    .split('\n')
    .filter((line) => line.includes('src/gateway/main.ts'))
    .map((line) => Number(line.trim().split(/\s+/, 1)[0]));
}

/** One call on a connection of its own, so the primary hands it to the next worker in turn. */
async function post(base: string, path: string, body: unknown, key = 'k-default') {
  const res = await request(`${base}${path}`, {
    method: 'POST',
    reset: true,
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify(body),
  });
  const text = await res.body.text();
  return {
    status: res.statusCode,
    worker: String(res.headers['x-clawperf-worker']),
    cache: String(res.headers['x-clawperf-cache']),
    text,
  };
}

const chat = (content: string) => ({
  model: 'fake-chat',
  temperature: 0,
  messages: [{ role: 'user', content }],
});

/** The sum of a counter's series in a Prometheus page whose labels include `match`. */
function sum(page: string, name: string, match: string): number {
  let total = 0;
  for (const line of page.split('\n')) {
    if (line.startsWith(`${name}{`) && line.includes(match))
      total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}

describe('clawperf gateway --workers 2', () => {
  let g: Awaited<ReturnType<typeof gateway>>;
  before(async () => {
    g = await gateway([
      '--workers',
      '2',
      '--upstream',
      fake.url,
      '--limits',
      'rpm=10',
      '--api-keys',
      'k-default:default,k-limits:limits,k-cache:cache,k-same:same,k-crash:crash,k-dash:dash,k-inv:inv',
      '--admin-token',
      'admin-secret',
      // A loaded test machine can be slower than the production default: limits must not fall back.
      '--redis-command-timeout-ms',
      '2000',
    ]);
    await waitFor(() => /2 workers listening/.test(g.output()), { timeoutMs: 30_000, what: 'two workers' });
  });
  after(async () => {
    if (g.child.exitCode === null) g.child.kill('SIGKILL');
  });

  it('runs a private redis-server on a Unix socket in its cache directory', () => {
    assert.match(g.output(), /private Redis redis\+unix:\/\//);
    assert.ok(readdirSync(join(g.cacheDir, 'run')).some((f) => f.endsWith('.sock')));
    assert.equal(workerPids(g.child.pid!).length, 2);
    assert.ok(
      g.output().includes(`disk (${join(g.cacheDir, 'worker-0')})`),
      'each worker has a disk cache of its own',
    );
  });

  it('keeps a tenant limit exact across the workers', async () => {
    const answers = await Promise.all(
      Array.from({ length: 30 }, (_, i) =>
        post(g.base, '/v1/embeddings', { model: 'local-embed', input: `limit ${i}` }, 'k-limits'),
      ),
    );
    assert.equal(answers.filter((a) => a.status === 200).length, 10);
    assert.equal(answers.filter((a) => a.status === 429).length, 20);
    assert.equal(new Set(answers.map((a) => a.worker)).size, 2, 'both workers answered');
  });

  it("serves one worker's cached answer from the other", async () => {
    const first = await post(g.base, '/v1/chat/completions', chat('cached once'), 'k-cache');
    assert.equal(first.cache, 'miss');
    let other: Awaited<ReturnType<typeof post>> | undefined;
    for (let i = 0; i < 6 && other === undefined; i++) {
      const again = await post(g.base, '/v1/chat/completions', chat('cached once'), 'k-cache');
      assert.equal(again.status, 200);
      if (again.worker !== first.worker) other = again;
    }
    assert.ok(other !== undefined, 'the other worker answered');
    assert.match(other.cache, /^hit/);
  });

  it('makes one upstream call for identical requests arriving at both workers at once', async () => {
    fake.fail({ kind: 'slow', ms: 400 }, 1);
    const before = fake.total('/v1/chat/completions');
    const answers = await Promise.all(
      Array.from({ length: 6 }, () => post(g.base, '/v1/chat/completions', chat('asked at once'), 'k-same')),
    );
    fake.clear();
    assert.deepEqual(
      answers.map((a) => a.status),
      [200, 200, 200, 200, 200, 200],
    );
    assert.equal(new Set(answers.map((a) => a.worker)).size, 2);
    assert.equal(fake.total('/v1/chat/completions') - before, 1);
  });

  it('serves the whole gateway on /metrics, whichever worker scrapes', async () => {
    const scrape = async () => (await request(`${g.base}/metrics`, { reset: true })).body.text();
    const count = (page: string) => sum(page, 'clawperf_http_requests_total', 'route="/v1/embeddings"');
    const before = count(await scrape());
    await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        post(g.base, '/v1/embeddings', { model: 'local-embed', input: `m ${i}` }),
      ),
    );
    // Each scrape goes to the next worker: both see all eight.
    assert.equal(count(await scrape()) - before, 8);
    assert.equal(count(await scrape()) - before, 8);
  });

  it('an invalidation on one worker reaches the other', async () => {
    const idOf = (a: Awaited<ReturnType<typeof post>>) => (JSON.parse(a.text) as { id: string }).id;
    const first = await post(g.base, '/v1/chat/completions', chat('to invalidate'), 'k-inv');
    // Both workers hold the answer in memory.
    await waitFor(async () => {
      const again = await post(g.base, '/v1/chat/completions', chat('to invalidate'), 'k-inv');
      return again.worker !== first.worker && idOf(again) === idOf(first);
    });
    const inv = await request(`${g.base}/admin/cache/invalidate`, {
      method: 'POST',
      reset: true,
      headers: { authorization: 'Bearer admin-secret', 'content-type': 'application/json' },
      body: JSON.stringify({ tag: 'tenant:inv' }),
    });
    assert.equal(inv.statusCode, 200, await inv.body.text());
    // Once the bus message has arrived, neither worker serves the old answer.
    await waitFor(
      async () => {
        const a = await post(g.base, '/v1/chat/completions', chat('to invalidate'), 'k-inv');
        const b = await post(g.base, '/v1/chat/completions', chat('to invalidate'), 'k-inv');
        return a.worker !== b.worker && idOf(a) !== idOf(first) && idOf(b) !== idOf(first);
      },
      { timeoutMs: 5_000, what: 'the invalidation to reach both workers' },
    );
  });

  it('shows the whole gateway on the dashboard, whichever worker serves the page', async () => {
    const page = async () => {
      const html = await (await request(`${g.base}/`, { reset: true })).body.text();
      const json = /<script id="snapshot" type="application\/json">(.*?)<\/script>/s.exec(html)![1]!;
      const snapshot = JSON.parse(json) as { usage: { tenant: string; requests: number }[] };
      return snapshot.usage.filter((u) => u.tenant === 'dash').reduce((n, u) => n + u.requests, 0);
    };
    const answers = await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        post(g.base, '/v1/embeddings', { model: 'local-embed', input: `dash ${i}` }, 'k-dash'),
      ),
    );
    assert.equal(new Set(answers.map((a) => a.worker)).size, 2, 'both workers answered');
    // Each page load goes to the next worker: both show all six.
    assert.equal(await page(), 6);
    assert.equal(await page(), 6);
  });

  it('replaces a worker that dies; only its own requests in flight fail', async () => {
    const [victim] = workerPids(g.child.pid!);
    fake.fail({ kind: 'slow', ms: 1_500 });
    const sent = fake.total('/v1/chat/completions');
    // One at a time, each upstream before the next is sent: the primary hands them to the workers in turn.
    const calls: Promise<Awaited<ReturnType<typeof post>> | undefined>[] = [];
    for (let i = 0; i < 6; i++) {
      calls.push(
        post(g.base, '/v1/chat/completions', chat(`in flight ${i}`), 'k-crash').catch(() => undefined),
      );
      await waitFor(() => fake.total('/v1/chat/completions') - sent > i, {
        timeoutMs: 5_000,
        what: `call ${i}`,
      });
    }
    process.kill(victim!, 'SIGKILL');
    const outcomes = await Promise.all(calls);
    fake.clear();
    const answered = outcomes.filter((o) => o !== undefined);
    assert.ok(answered.length < 6, 'the requests on the worker that died failed');
    assert.ok(answered.length > 0);
    assert.ok(
      answered.every((o) => o.status === 200 && o.worker !== String(victim)),
      `every request on the other worker was answered: ${JSON.stringify(answered.map((o) => [o.status, o.worker]))}`,
    );
    await waitFor(() => workerPids(g.child.pid!).filter((p) => p !== victim).length === 2, {
      timeoutMs: 20_000,
      what: 'a new worker',
    });
    await waitFor(
      async () =>
        (await post(g.base, '/v1/embeddings', { model: 'local-embed', input: 'after' })).status === 200,
    );
  });

  it('drains every worker on SIGTERM, stops its Redis and exits 0', async () => {
    g.child.kill('SIGTERM');
    assert.equal(await g.exited, 0);
    assert.ok(!readdirSync(join(g.cacheDir, 'run')).some((f) => f.endsWith('.sock')), 'the socket is gone');
  });
});

describe('clawperf gateway --workers, its private Redis', () => {
  it('ends with the primary even when the primary cannot write its log', async () => {
    const g = await gateway(['--workers', '2']);
    await waitFor(() => /2 workers listening/.test(g.output()), { timeoutMs: 30_000, what: 'two workers' });
    const running = () => {
      try {
        return (
          execFileSync('pgrep', ['-f', `redis-server unixsocket:${g.cacheDir}`])
            .toString()
            .trim() !== ''
        );
      } catch {
        return false;
      }
    };
    assert.ok(running());
    g.child.stderr!.destroy();
    g.child.kill('SIGTERM');
    await g.exited;
    await waitFor(() => !running(), { timeoutMs: 10_000, what: 'the private redis-server to stop' });
  });
});

describe('clawperf gateway --workers without Redis', () => {
  it('refuses to start when redis-server is not installed, naming the package', async () => {
    // A PATH with a shell and nothing else.
    const bin = await tempDir();
    await symlink('/bin/sh', join(bin, 'sh'));
    assert.ok(!existsSync(join(bin, 'redis-server')));
    const g = await gateway(['--workers', '2'], { ...process.env, PATH: bin });
    assert.equal(await g.exited, 2);
    assert.match(g.output(), /install redis-server/);
  });
});
