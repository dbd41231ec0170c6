/**
 * Soak run of the gateway, by hand only: `npm run bench gateway-soak [-- --minutes N]` (default 10).
 *
 * The gateway (disk cache on, in front of a local OpenAI-shaped upstream answering at once) runs in a child
 * process. Its saturation is measured first (16 connections, closed loop, 5 s, the same mixed load); then
 * the load is offered at 80 % of it, open loop, for the duration: half embeddings, half deterministic chat
 * completions, half of each repeating one of 100 inputs (cache hits) and half new (misses). Every 10 s the
 * child reports its heap after a full GC, its RSS and its event-loop delay (p50/p99/max over the interval).
 * At the end a table is printed and whether heap and event-loop delay stayed flat. The first third is the
 * fill phase (the caches grow to their bounds, which is not a leak); flat means the mean of the last third
 * of the samples is within 10 % (heap) and 2x (event-loop p99) of the middle third's.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { Agent, request } from 'undici';
import { startOpenAIUpstream } from './fixtures/openai-upstream.ts';

const SAMPLE_MS = 10_000;

interface Sample {
  heapMiB: number;
  rssMiB: number;
  eldP50Ms: number;
  eldP99Ms: number;
  eldMaxMs: number;
  /** Entries in the memory and disk levels: a heap that grows while these fill is the caches, not a leak. */
  l1Entries: number;
  diskEntries: number;
}

async function serve(): Promise<void> {
  const { createGateway } = await import('../src/gateway/server.ts');
  const { server: upstream, url: upstreamUrl } = await startOpenAIUpstream();
  const dir = await mkdtemp(join(tmpdir(), 'clawperf-soak-'));
  const gw = await createGateway({
    cacheDir: dir,
    localChatLatencyMs: 0,
    upstreamUrl,
  });
  await gw.app.listen({ port: 0, host: '127.0.0.1' });
  const eld = monitorEventLoopDelay({ resolution: 10 });
  eld.enable();
  const timer = setInterval(() => {
    (globalThis as { gc?: () => void }).gc?.();
    const m = process.memoryUsage();
    const sample: Sample = {
      heapMiB: m.heapUsed / 2 ** 20,
      rssMiB: m.rss / 2 ** 20,
      eldP50Ms: eld.percentile(50) / 1e6,
      eldP99Ms: eld.percentile(99) / 1e6,
      eldMaxMs: eld.max / 1e6,
      l1Entries: Number(gw.cache.stats().l1_entries ?? 0),
      diskEntries: Number(gw.cache.stats().l3_entries ?? 0),
    };
    eld.reset();
    process.send?.({ sample });
  }, SAMPLE_MS);
  process.send?.({ port: (gw.app.server.address() as AddressInfo).port });
  process.once('disconnect', async () => {
    clearInterval(timer);
    await gw.close();
    upstream.close();
    await rm(dir, { recursive: true, force: true });
    process.exit(0);
  });
}

/** The n-th request of the mixed load: [path, body]. */
function mixed(n: number): [string, unknown] {
  const repeat = n % 4 < 2;
  const text = repeat ? `repeated ${n % 100}` : `new ${n}`;
  return n % 2 === 0
    ? ['/v1/embeddings', { model: 'local-embed', input: text }]
    : [
        '/v1/chat/completions',
        { model: 'soak-chat', temperature: 0, messages: [{ role: 'user', content: text }] },
      ];
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { minutes: { type: 'string', default: '10' } } });
  const minutes = Number(values.minutes);
  if (!(minutes > 0)) throw new TypeError(`--minutes must be a positive number, got ${values.minutes}`);
  const child: ChildProcess = fork(new URL(import.meta.url).pathname, ['serve'], {
    execArgv: ['--expose-gc', '--import', 'tsx'],
    stdio: 'inherit',
  });
  const samples: Sample[] = [];
  let recording = false;
  const [first] = (await once(child, 'message')) as [{ port: number }];
  child.on('message', (m: { sample?: Sample }) => {
    if (recording && m.sample !== undefined) samples.push(m.sample);
  });
  const base = `http://127.0.0.1:${first.port}`;
  const agent = new Agent({ connections: 64 });
  let n = 0;
  let failed = 0;
  const send = async () => {
    const [path, body] = mixed(n++);
    const r = await request(`${base}${path}`, {
      method: 'POST',
      body: JSON.stringify(body),
      headers: { 'content-type': 'application/json' },
      dispatcher: agent,
    });
    await r.body.dump();
    if (r.statusCode !== 200) failed++;
  };

  const satStart = performance.now();
  let done = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (performance.now() - satStart < 5000) {
        await send();
        done++;
      }
    }),
  );
  const saturation = done / ((performance.now() - satStart) / 1000);
  const rate = saturation * 0.8;
  console.log(
    `saturation ${Math.round(saturation)} req/s; offering ${Math.round(rate)} req/s for ${minutes} min`,
  );

  recording = true;
  let inFlight = 0;
  let shed = 0;
  const tickMs = 10;
  const start = performance.now();
  let offered = 0;
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      const elapsed = performance.now() - start;
      if (elapsed >= minutes * 60_000) {
        clearInterval(timer);
        resolve();
        return;
      }
      const due = Math.floor((elapsed / 1000) * rate) - offered;
      for (let i = 0; i < due; i++) {
        offered++;
        // Past 1,000 outstanding requests the gateway is not keeping up; count instead of piling on.
        if (inFlight >= 1000) {
          shed++;
          continue;
        }
        inFlight++;
        send()
          .catch(() => {
            failed++;
          })
          .finally(() => {
            inFlight--;
          });
      }
    }, tickMs);
  });
  while (inFlight > 0) await new Promise((r) => setTimeout(r, 50));
  await agent.close();
  child.disconnect();
  await once(child, 'exit');

  console.log(`\noffered ${offered}, failed ${failed}, not sent (over 1,000 outstanding) ${shed}\n`);
  console.log(
    '| t (s) | heap after GC (MiB) | RSS (MiB) | event-loop delay p50 (ms) | p99 (ms) | max (ms) | L1 entries | disk entries |',
  );
  console.log('|---:|---:|---:|---:|---:|---:|---:|---:|');
  samples.forEach((s, i) => {
    console.log(
      `| ${(i + 1) * (SAMPLE_MS / 1000)} | ${s.heapMiB.toFixed(1)} | ${s.rssMiB.toFixed(1)} | ${s.eldP50Ms.toFixed(2)} | ${s.eldP99Ms.toFixed(2)} | ${s.eldMaxMs.toFixed(1)} | ${s.l1Entries} | ${s.diskEntries} |`,
    );
  });
  if (samples.length < 3) {
    console.log('\ntoo few samples to judge flatness (run longer)');
    return;
  }
  const third = Math.floor(samples.length / 3);
  const mean = (xs: Sample[], f: (s: Sample) => number) => xs.reduce((a, s) => a + f(s), 0) / xs.length;
  const middle = samples.slice(third, 2 * third);
  const tail = samples.slice(-third);
  const heapGrowth = mean(tail, (s) => s.heapMiB) / mean(middle, (s) => s.heapMiB);
  const eldGrowth = mean(tail, (s) => s.eldP99Ms) / mean(middle, (s) => s.eldP99Ms);
  console.log(
    `\nafter the fill phase (first third): heap, last third / middle third = ${heapGrowth.toFixed(2)} (${heapGrowth <= 1.1 ? 'flat' : 'GROWING'}); ` +
      `event-loop p99: ${eldGrowth.toFixed(2)} (${eldGrowth <= 2 ? 'flat' : 'GROWING'})`,
  );
}

if (process.argv[2] === 'serve') await serve();
else await main();
