/**
 * What the request log costs: the CPU time per request of a gateway process writing one JSON line per
 * request (`logLevel: 'info'`, the `clawperf gateway` default) beside the same gateway with the lines off
 * (`logLevel: 'warn'`), each alone in its own process, rounds interleaved.
 *
 * Two paths: a cached answer (`/v1/embeddings`, one input asked again and again: an L1 hit, where the
 * gateway does least and a log line weighs most) and the miss path (distinct deterministic chat
 * completions through to an instant upstream in its own process, as bench/gateway.ts's CPU section). Each
 * gateway logs as `clawperf gateway` does, to its stderr, which is a file here (`2> gateway.log`); after the
 * rounds the file must hold one line per request sent to the gateway that logs, and none from the other.
 *
 * Each gateway process reads its own `process.cpuUsage()` (fixtures/cpu-probe.mjs) and reports it over IPC.
 * CPU time is what the log costs whoever runs the gateway, and on a shared machine it holds much steadier
 * than requests/s.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, openSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Pool } from 'undici';
import { hitAndMissPaths } from './fixtures/gateway-paths.ts';
import { CPU_PROBE, cpuOf, startProcess } from './fixtures/processes.ts';
import { serveToParent } from './fixtures/serve-to-parent.ts';

/** Requests per round; warm-up rounds come first, interleaved like the timed ones (see bench/gateway.ts). */
const REQUESTS = 2_500;
const WARMUP_ROUNDS = 2;
const ROUNDS = 7;
const CONNECTIONS = 16;

/** `serve <logLevel> <upstream port>`: one gateway alone in its process, logging to its stderr. */
async function serve(): Promise<void> {
  const { createGateway, LISTEN_BACKLOG } = await import('../src/gateway/server.ts');
  const [, , , level, upstreamPort] = process.argv;
  const g = await createGateway({
    cacheDir: false,
    limits: undefined,
    redisUrl: undefined,
    localChatLatencyMs: 0,
    upstreamUrl: `http://127.0.0.1:${Number(upstreamPort)}/v1`,
    logLevel: level as 'info' | 'warn',
  });
  await serveToParent(g, LISTEN_BACKLOG);
}

interface Gateway {
  name: string;
  child: ChildProcess;
  pool: Pool;
  file: string;
  sent: number;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'clawperf-bench-log-'));
  const upstream = await startProcess('upstream', 0);
  const start = async (name: string, level: string): Promise<Gateway> => {
    const file = join(dir, `${level}.log`);
    const stderr = openSync(file, 'w');
    const child = fork(fileURLToPath(import.meta.url), ['serve', level, String(upstream.port)], {
      execArgv: ['--import', 'tsx', ...CPU_PROBE],
      stdio: ['ignore', 'inherit', stderr, 'ipc'],
    });
    closeSync(stderr);
    const [port] = (await once(child, 'message')) as [number];
    return {
      name,
      child,
      pool: new Pool(`http://127.0.0.1:${port}`, { connections: CONNECTIONS }),
      file,
      sent: 0,
    };
  };
  const gateways = [
    await start('request log on (`--log-level info`, a JSON line per request to stderr, a file)', 'info'),
    await start('request log off (`--log-level warn`)', 'warn'),
  ];
  const paths = hitAndMissPaths('log');
  console.log(
    `\n### CPU per request of the gateway process, request log on and off: ${REQUESTS.toLocaleString('en')} ` +
      `requests per round from ${CONNECTIONS} keep-alive connections, ${ROUNDS} rounds after ${WARMUP_ROUNDS} ` +
      'untimed ones, interleaved (median)\n',
  );
  console.log('| path | gateway, in its own process | CPU µs / request | ÷ log off | req/s |');
  console.log('|---|---|---:|---:|---:|');
  for (const p of paths) {
    const fire = async (g: Gateway) => {
      let left = REQUESTS;
      const loop = async () => {
        while (left > 0) {
          left--;
          const r = await g.pool.request({
            path: p.path,
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify(p.body()),
          });
          await r.body.dump();
          g.sent++;
          if (r.statusCode !== 200) throw new Error(`${g.name}: HTTP ${r.statusCode}`);
          if (r.headers['x-clawperf-cache'] !== p.cache) {
            throw new Error(`${g.name}: ${p.path} was a ${r.headers['x-clawperf-cache']}, not a ${p.cache}`);
          }
        }
      };
      await Promise.all(Array.from({ length: CONNECTIONS }, loop));
    };
    // The embedding is cached before any round, so every request of every round is a hit.
    if (p.cache === 'hit') {
      for (const g of gateways) {
        const r = await g.pool.request({
          path: p.path,
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(p.body()),
        });
        await r.body.dump();
        g.sent++;
      }
    }
    const us = gateways.map(() => [] as number[]);
    const rps = gateways.map(() => [] as number[]);
    for (let round = 0; round < WARMUP_ROUNDS + ROUNDS; round++) {
      for (const [i, g] of gateways.entries()) {
        const cpu0 = await cpuOf(g.child);
        const t0 = performance.now();
        await fire(g);
        const ms = performance.now() - t0;
        const cpu1 = await cpuOf(g.child);
        if (round < WARMUP_ROUNDS) continue;
        us[i]!.push((cpu1.user - cpu0.user + cpu1.system - cpu0.system) / REQUESTS);
        rps[i]!.push((REQUESTS * 1000) / ms);
      }
    }
    const off = median(us[1]!);
    for (const [i, g] of gateways.entries()) {
      const cpu = median(us[i]!);
      console.log(
        `| ${p.title} | ${g.name} | ${cpu.toFixed(1)} | ${(cpu / off).toFixed(2)} | ${Math.round(median(rps[i]!)).toLocaleString('en')} |`,
      );
    }
  }
  // Proof the log was written: one request line per request sent to the gateway that logs, none from the other.
  for (const g of gateways) {
    const text = await readFile(g.file, 'utf8').catch(() => '');
    const lines = text.split('\n').filter((l) => l.includes('"msg":"request"')).length;
    const expected = g === gateways[0] ? g.sent : 0;
    if (lines !== expected) throw new Error(`${g.name}: ${lines} request lines for ${g.sent} requests`);
    console.log(
      `\n${g.name}: ${lines.toLocaleString('en')} request lines for ${g.sent.toLocaleString('en')} requests`,
    );
  }
  for (const g of gateways) {
    await g.pool.close();
    g.child.disconnect();
    await once(g.child, 'exit');
  }
  await upstream.stop();
  await rm(dir, { recursive: true, force: true });
}

if (process.argv[2] === 'serve') await serve();
else await main();
