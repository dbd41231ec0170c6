import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { request } from 'undici';
import { freePort, waitFor } from '../helpers/servers.ts';

const root = new URL('../..', import.meta.url).pathname;
const children: ChildProcess[] = [];
const dirs: string[] = [];

after(async () => {
  for (const child of children)
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

/** Starts the gateway from source, as `clawperf gateway` would run. */
function gateway(args: string[], env: NodeJS.ProcessEnv = {}) {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/gateway/main.ts', ...args], {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let out = '';
  child.stdout!.on('data', (c) => {
    out += c;
  });
  child.stderr!.on('data', (c) => {
    out += c;
  });
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  return { child, output: () => out, exited };
}

describe('clawperf gateway on the command line', () => {
  it('prints every setting with --help and exits 0', async () => {
    const g = gateway(['--help']);
    assert.equal(await g.exited, 0);
    assert.match(g.output(), /--port <value>\s+PORT/);
    assert.match(g.output(), /GATEWAY_API_KEYS/);
  });

  it('refuses to start on a bad setting, naming it', async () => {
    const g = gateway([], { CLAWPERF_LOCAL_CHAT_LATENCY_MS: 'fast' });
    assert.equal(await g.exited, 2);
    assert.match(g.output(), /invalid setting CLAWPERF_LOCAL_CHAT_LATENCY_MS/);
  });

  it('on SIGTERM finishes the request in flight, then exits 0', async () => {
    const port = await freePort();
    const dir = await mkdtemp(join(tmpdir(), 'clawperf-cli-'));
    dirs.push(dir);
    const g = gateway(['--port', String(port), '--cache-dir', dir, '--local-chat-latency-ms', '1500']);
    const base = `http://127.0.0.1:${port}`;
    await waitFor(async () => (await request(`${base}/healthz`)).statusCode === 200, {
      what: 'the gateway to listen',
      describe: g.output,
    });
    assert.match(g.output(), /LOCAL models/);
    assert.match(g.output(), /loopback only/);
    const inFlight = request(`${base}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'local-chat', messages: [{ role: 'user', content: 'finish me' }] }),
    });
    await waitFor(
      async () =>
        /clawperf_backpressure_processing 1\b/.test(await (await request(`${base}/metrics`)).body.text()),
      { what: 'the chat call to be running', describe: g.output },
    );
    g.child.kill('SIGTERM');
    const res = await inFlight;
    assert.equal(res.statusCode, 200);
    const body = (await res.body.json()) as { choices: { message: { content: string } }[] };
    assert.match(body.choices[0]!.message.content, /finish me/);
    assert.equal(await g.exited, 0, g.output());
    assert.match(g.output(), /SIGTERM received/);
    assert.match(g.output(), /stopped/);
  });
});
