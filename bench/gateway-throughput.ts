/**
 * Sustained throughput of a gateway against a 20 ms upstream, per CPU core the gateway uses:
 * `npm run bench gateway-throughput`.
 *
 * An OpenAI-shaped upstream answering every chat completion after 20 ms (fixtures/processes.ts `upstream`)
 * runs in its own process; in front of it, each in its own process too: the clawperf gateway, the Portkey
 * open-source gateway (`@portkey-ai/gateway`, `--headless`) and, as the reference, the floor (the thinnest
 * node:http + undici proxy, fixtures/processes.ts `proxy`). This process is the client.
 *
 * - Requests: distinct deterministic chat completions (`temperature: 0`, a question never asked before), so
 *   every one is a clawperf cache miss that goes upstream (each answer must carry `x-clawperf-cache: miss`);
 *   Portkey and the floor get the same bodies. Each window also checks that the upstream answered at least
 *   as many requests as the client got answers for.
 * - Gateway: one `createGateway` alone in its process (`serve`), limits off, no Redis, no disk cache, memory
 *   L1 on, as bench/gateway.ts builds it, with `maxConcurrency` raised from its default 64 to
 *   GATEWAY_MAX_CONCURRENCY and `upstreamConnections` from 64 to UPSTREAM_CONNECTIONS: at 64 upstream calls
 *   at once a 20 ms upstream caps any gateway at 3,200 req/s, which would measure the setting, not the
 *   gateway. The floor's pool to the upstream gets the same UPSTREAM_CONNECTIONS.
 * - Load: open loop. Requests are launched on a schedule at a constant arrival rate (the i-th at start +
 *   i / rate, whatever the earlier ones are doing) through an undici Pool of CLIENT_CONNECTIONS keep-alive
 *   connections, and each latency runs from the request's scheduled time, so a stalled gateway shows in the
 *   percentiles instead of slowing the client down (no coordinated omission).
 * - Search: each contender first gets a closed-loop probe (PROBE_CONNECTIONS loops, 1 s untimed, then
 *   PROBE_MS timed), which warms it up and gives its rough saturation S. Then windows of WINDOW_MS at the
 *   offered rates STEPS x S, upward, until one fails; then one more window halfway between the last rate
 *   that held and the first that did not (if every step holds, the rate keeps rising by a quarter); at most
 *   MAX_WINDOWS windows per contender in all, and when none failed for good the rate found is a lower bound
 *   (printed with ≥). A rate whose window fails is tried RETRIES more times (1) before it counts as failed,
 *   and counts as held if any of its windows held. A window holds when p99 < 1 s and fewer than 0.1 % of
 *   its requests failed (a status other than 200, a missing miss header, a timeout after
 *   REQUEST_TIMEOUT_MS, or not sent because more than BACKLOG_S seconds of requests were outstanding). If
 *   the first step fails, the rate is halved up to twice. The contenders take their windows in rounds (clawperf, Portkey, floor, then again),
 *   so a noisy moment on a shared machine falls on all of them.
 * - CPU: each contender process reads its own `process.cpuUsage()` (fixtures/cpu-probe.mjs, loaded with
 *   `--import`) before and after a window; CPU cores used = its user + system CPU seconds / the window's wall
 *   seconds (start to last answer), and req/s per core = the sustained rate / those cores.
 *
 * Environment: BENCH_THROUGHPUT_WINDOW_MS (10000), BENCH_THROUGHPUT_STEPS (fractions of the probe,
 * `0.6,0.8,1,1.2`), BENCH_THROUGHPUT_RATES (absolute req/s steps for every contender instead),
 * BENCH_THROUGHPUT_PROBE_MS (3000), BENCH_THROUGHPUT_CONNECTIONS (client connections, 1024),
 * BENCH_THROUGHPUT_RETRIES (1), BENCH_THROUGHPUT_MAX_WINDOWS (8), BENCH_THROUGHPUT_ONLY
 * (`clawperf,portkey,floor`: the contenders to run). One run takes 4-6 minutes.
 * Each window's line also gives the longest event-loop stall of the client and of the gateway over it, so
 * a failed window shows whose stall it was.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { once } from 'node:events';
import { cpus, loadavg } from 'node:os';
import { createHistogram, monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Pool } from 'undici';
import { startPortkey } from './fixtures/portkey.ts';
import { ask, type BenchProcess, CPU_PROBE, cpuOf, startProcess } from './fixtures/processes.ts';
import { serveToParent } from './fixtures/serve-to-parent.ts';
import { machine } from './harness.ts';

/** How long the upstream takes to answer a chat completion, ms. */
const UPSTREAM_MS = 20;
const numberEnv = (name: string, fallback: number, zero = false) => {
  const raw = process.env[name];
  const value = raw === undefined || raw === '' ? fallback : Number(raw);
  if (!Number.isFinite(value) || value < 0 || (value === 0 && !zero))
    throw new Error(`${name} must be a ${zero ? 'non-negative' : 'positive'} number, got ${raw}`);
  return value;
};
const listEnv = (name: string, fallback: string) =>
  (process.env[name] ?? fallback)
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
const WINDOW_MS = numberEnv('BENCH_THROUGHPUT_WINDOW_MS', 10_000);
const PROBE_MS = numberEnv('BENCH_THROUGHPUT_PROBE_MS', 3_000);
const CLIENT_CONNECTIONS = numberEnv('BENCH_THROUGHPUT_CONNECTIONS', 1_024);
const STEPS = listEnv('BENCH_THROUGHPUT_STEPS', '0.6,0.8,1,1.2').map(Number);
const RATES = listEnv('BENCH_THROUGHPUT_RATES', '').map(Number);
const ONLY = listEnv('BENCH_THROUGHPUT_ONLY', 'clawperf,portkey,floor');
/** Closed-loop callers of the probe: enough to keep thousands of 20 ms requests a second in flight. */
const PROBE_CONNECTIONS = 256;
/** The criteria a window must meet to count as sustained. */
const P99_LIMIT_MS = 1_000;
const ERROR_LIMIT = 0.001;
/** A request not answered in this long counts as failed. */
const REQUEST_TIMEOUT_MS = 5_000;
/** More outstanding requests than this many seconds of the offered rate: the window has failed; stop sending. */
const BACKLOG_S = 2;
/** Upstream calls the gateway may run at once (default 64), and its and the floor's upstream connections. */
const GATEWAY_MAX_CONCURRENCY = 4_096;
const UPSTREAM_CONNECTIONS = 1_024;
/**
 * Windows a failed rate is tried again before it counts as failed: on a shared machine one stall of another
 * process (the client's own event loop stopped for over a second in test runs) fails a 10 s window at any rate.
 */
const RETRIES = numberEnv('BENCH_THROUGHPUT_RETRIES', 1, true);
/** Windows one contender may take in all (steps, retries and the halfway one), which bounds the run time. */
const MAX_WINDOWS = numberEnv('BENCH_THROUGHPUT_MAX_WINDOWS', 8);
/** Pause between windows, so one window's tail does not fall into the next. */
const SETTLE_MS = 500;

/**
 * `serve <upstream port>`: one gateway alone in its process, as bench/gateway.ts's `serve-cpu` builds it
 * (limits off, no Redis, no disk cache, memory L1), with the upstream concurrency raised.
 */
async function serve(): Promise<void> {
  const { createGateway, LISTEN_BACKLOG } = await import('../src/gateway/server.ts');
  const g = await createGateway({
    cacheDir: false,
    limits: undefined,
    redisUrl: undefined,
    localChatLatencyMs: 0,
    maxConcurrency: GATEWAY_MAX_CONCURRENCY,
    upstreamConnections: UPSTREAM_CONNECTIONS,
    upstreamUrl: `http://127.0.0.1:${Number(process.argv[3])}/v1`,
  });
  // The longest event-loop stall since the last question: whether a slow tail was this process's own.
  const eld = monitorEventLoopDelay({ resolution: 10 });
  eld.enable();
  process.on('message', (message) => {
    if (message !== 'stall') return;
    process.send?.({ stall: eld.max / 1e6 });
    eld.reset();
  });
  await serveToParent(g, LISTEN_BACKLOG);
}

interface Contender {
  key: string;
  name: string;
  url: string;
  headers: Record<string, string>;
  cpu(): Promise<NodeJS.CpuUsage>;
  /** The process's longest event-loop stall since the last call, ms (the clawperf gateway only). */
  stall?(): Promise<number>;
  /** Whether an answer's headers prove it took the path measured. */
  check(headers: Record<string, string | string[] | undefined>): boolean;
  stop(): Promise<void>;
}

/** Portkey (fixtures/portkey.ts) as a contender. */
async function startPortkeyContender(upstream: string): Promise<Contender> {
  const portkey = await startPortkey(upstream);
  return { key: 'portkey', name: 'Portkey gateway 1.15.2 (`--headless`)', check: () => true, ...portkey };
}

async function startClawperf(upstreamPort: number): Promise<Contender> {
  const child: ChildProcess = fork(fileURLToPath(import.meta.url), ['serve', String(upstreamPort)], {
    execArgv: ['--import', 'tsx', ...CPU_PROBE],
    stdio: 'inherit',
  });
  const [port] = (await once(child, 'message')) as [number];
  return {
    key: 'clawperf',
    name:
      `clawperf gateway: limits off, no Redis, no disk cache, memory L1, maxConcurrency ` +
      `${GATEWAY_MAX_CONCURRENCY.toLocaleString('en')}, ${UPSTREAM_CONNECTIONS.toLocaleString('en')} upstream connections`,
    url: `http://127.0.0.1:${port}`,
    headers: {},
    cpu: () => cpuOf(child),
    stall: () => ask<number>(child, 'stall', 'stall'),
    check: (h) => h['x-clawperf-cache'] === 'miss',
    stop: async () => {
      if (child.exitCode !== null) return;
      child.disconnect();
      await once(child, 'exit');
    },
  };
}

async function startFloor(upstreamPort: number): Promise<Contender> {
  const floor = await startProcess('proxy', upstreamPort, UPSTREAM_CONNECTIONS);
  return {
    key: 'floor',
    name: `floor: thinnest proxy process (node:http + undici Pool, ${UPSTREAM_CONNECTIONS.toLocaleString('en')} upstream connections)`,
    url: `http://127.0.0.1:${floor.port}`,
    headers: {},
    cpu: floor.cpu,
    check: () => true,
    stop: floor.stop,
  };
}

let asked = 0;
/** A chat completion never asked before: a cache miss for the gateway. */
const missBody = () =>
  JSON.stringify({
    model: 'bench-chat',
    temperature: 0,
    messages: [{ role: 'user', content: `throughput question ${asked++}` }],
  });

const cpuSeconds = (a: NodeJS.CpuUsage, b: NodeJS.CpuUsage) => (b.user - a.user + b.system - a.system) / 1e6;

/** One request to `c` through `pool`; resolves true when it was answered 200 on the path measured. */
async function send(c: Contender, pool: Pool): Promise<boolean> {
  try {
    const r = await pool.request({
      path: '/v1/chat/completions',
      method: 'POST',
      headers: { 'content-type': 'application/json', ...c.headers },
      body: missBody(),
    });
    await r.body.dump();
    return r.statusCode === 200 && c.check(r.headers);
  } catch {
    return false;
  }
}

/** Closed loop, PROBE_CONNECTIONS callers: 1 s untimed (warm-up), then PROBE_MS timed; answered req/s. */
async function probe(c: Contender, pool: Pool): Promise<number> {
  const run = async (ms: number) => {
    let answered = 0;
    let failed = 0;
    const end = performance.now() + ms;
    const loop = async () => {
      while (performance.now() < end) {
        if (await send(c, pool)) answered++;
        else failed++;
      }
    };
    const t0 = performance.now();
    await Promise.all(Array.from({ length: PROBE_CONNECTIONS }, loop));
    return { rps: (answered * 1000) / (performance.now() - t0), failed };
  };
  await run(1_000);
  const { rps, failed } = await run(PROBE_MS);
  if (failed > 0) console.log(`  (probe of ${c.key}: ${failed} requests failed)`);
  return rps;
}

interface Window {
  rate: number;
  sent: number;
  answered: number;
  failed: number;
  /** Requests never sent because the backlog passed BACKLOG_S. */
  notSent: number;
  p50Ms: number;
  p99Ms: number;
  /** The contender's CPU cores used over the window: its CPU seconds / wall seconds. */
  cores: number;
  clientCores: number;
  upstreamCores: number;
  /** Answers / wall seconds, start to last answer. */
  achieved: number;
  upstreamServed: number;
  /** Longest event-loop stalls over the window, ms: the client's, and the contender's where it reports one. */
  clientStallMs: number;
  stallMs: number | undefined;
  ok: boolean;
}

/** The client's own event-loop delay: a stall here delays every request it schedules. */
const clientEld = monitorEventLoopDelay({ resolution: 10 });
clientEld.enable();

/** WINDOW_MS of requests offered to `c` at `rate` a second on a fixed schedule. */
async function openLoop(c: Contender, pool: Pool, upstream: BenchProcess, rate: number): Promise<Window> {
  const histogram = createHistogram();
  const planned = Math.max(1, Math.round((rate * WINDOW_MS) / 1000));
  let total = planned;
  let launched = 0;
  let outstanding = 0;
  let answered = 0;
  let failed = 0;
  const served0 = await upstream.served();
  const upstreamCpu0 = await upstream.cpu();
  await c.stall?.();
  const cpu0 = await c.cpu();
  clientEld.reset();
  const clientCpu0 = process.cpuUsage();
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    const fire = (scheduled: number) => {
      outstanding++;
      void send(c, pool).then((ok) => {
        histogram.record(Math.max(1, Math.round((performance.now() - scheduled) * 1000)));
        if (ok) answered++;
        else failed++;
        outstanding--;
        if (launched === total && outstanding === 0) resolve();
      });
    };
    const tick = () => {
      const due = Math.min(total, Math.floor(((performance.now() - t0) * rate) / 1000) + 1);
      while (launched < due) {
        const scheduled = t0 + (launched * 1000) / rate;
        launched++;
        fire(scheduled);
      }
      if (launched < total && outstanding > rate * BACKLOG_S) total = launched;
      if (launched < total) setTimeout(tick, 1);
      else if (outstanding === 0) resolve();
    };
    tick();
  });
  const wallS = (performance.now() - t0) / 1000;
  const clientStallMs = clientEld.max / 1e6;
  const cpu1 = await c.cpu();
  const stallMs = await c.stall?.();
  const clientCpu1 = process.cpuUsage();
  const upstreamCpu1 = await upstream.cpu();
  const upstreamServed = (await upstream.served()) - served0;
  const notSent = planned - launched;
  const p99Ms = histogram.percentile(99) / 1000;
  const errorRate = (failed + notSent) / planned;
  return {
    rate,
    sent: launched,
    answered,
    failed,
    notSent,
    p50Ms: histogram.percentile(50) / 1000,
    p99Ms,
    cores: cpuSeconds(cpu0, cpu1) / wallS,
    clientCores: cpuSeconds(clientCpu0, clientCpu1) / wallS,
    upstreamCores: cpuSeconds(upstreamCpu0, upstreamCpu1) / wallS,
    achieved: answered / wallS,
    upstreamServed,
    clientStallMs,
    stallMs,
    ok: p99Ms < P99_LIMIT_MS && errorRate < ERROR_LIMIT && upstreamServed >= answered,
  };
}

/** The rates tried on one contender: steps upward until one fails, then once halfway back (or halving). */
class Search {
  readonly windows: Window[] = [];
  private step = 0;
  private halvings = 0;
  private bisected = false;
  constructor(private readonly base: number) {}

  get best(): Window | undefined {
    let best: Window | undefined;
    for (const w of this.windows) if (w.ok && (best === undefined || w.rate > best.rate)) best = w;
    return best;
  }

  private held(rate: number): boolean {
    return this.windows.some((w) => w.rate === rate && w.ok);
  }

  /** Whether no window failed: the sustained rate is then at least the best, not found. */
  get unbounded(): boolean {
    return this.windows.every((w) => w.ok || this.held(w.rate));
  }

  next(): number | undefined {
    if (this.windows.length >= MAX_WINDOWS) return undefined;
    const last = this.windows.at(-1);
    if (last !== undefined && !last.ok && this.windows.filter((w) => w.rate === last.rate).length <= RETRIES)
      return last.rate;
    const fails = this.windows.filter((w) => !w.ok && !this.held(w.rate)).map((w) => w.rate);
    const best = this.best;
    if (fails.length === 0) {
      const rates = RATES.length > 0 ? RATES : STEPS.map((s) => s * this.base);
      if (this.step < rates.length) return Math.round(rates[this.step++]!);
      // Every step held (the probe fell on a slow moment): keep climbing, a quarter higher each time.
      return Math.round(this.windows.at(-1)!.rate * 1.25);
    }
    const lowestFail = Math.min(...fails);
    if (best === undefined) return this.halvings++ < 2 ? Math.round(lowestFail / 2) : undefined;
    if (this.bisected) return undefined;
    this.bisected = true;
    const mid = Math.round((best.rate + lowestFail) / 2);
    return mid > best.rate && mid < lowestFail ? mid : undefined;
  }
}

const fmt = (n: number, digits = 0) =>
  n.toLocaleString('en', { minimumFractionDigits: digits, maximumFractionDigits: digits });

async function main(): Promise<void> {
  const load = () =>
    loadavg()
      .map((l) => l.toFixed(2))
      .join(' ');
  console.log(
    `${machine()}, CPU ${cpus()[0]?.model ?? '?'}; load average at start ${load()}; upstream answering after ` +
      `${UPSTREAM_MS} ms; windows of ${WINDOW_MS / 1000} s; client connections ${CLIENT_CONNECTIONS}`,
  );
  const upstream = await startProcess('upstream', UPSTREAM_MS);
  const starters: Record<string, () => Promise<Contender>> = {
    clawperf: () => startClawperf(upstream.port),
    portkey: () => startPortkeyContender(`http://127.0.0.1:${upstream.port}`),
    floor: () => startFloor(upstream.port),
  };
  const contenders: Contender[] = [];
  for (const key of ONLY) {
    const start = starters[key];
    if (start === undefined) throw new Error(`BENCH_THROUGHPUT_ONLY: unknown contender ${key}`);
    contenders.push(await start());
  }
  const pools = contenders.map(
    (c) =>
      new Pool(c.url, {
        connections: CLIENT_CONNECTIONS,
        headersTimeout: REQUEST_TIMEOUT_MS,
        bodyTimeout: REQUEST_TIMEOUT_MS,
      }),
  );
  const searches: Search[] = [];
  const probes: number[] = [];
  for (let i = 0; i < contenders.length; i++) {
    const rps = await probe(contenders[i]!, pools[i]!);
    probes.push(rps);
    searches.push(new Search(rps));
    console.log(
      `probe, closed loop at ${PROBE_CONNECTIONS} connections: ${contenders[i]!.key} ${fmt(rps)} req/s`,
    );
  }
  console.log(
    '\nWindows (offered req/s: achieved, p50/p99 ms, failed + not sent, cores: contender/client/upstream):',
  );
  for (let round = 1; ; round++) {
    let ran = false;
    for (let i = 0; i < contenders.length; i++) {
      const rate = searches[i]!.next();
      if (rate === undefined) continue;
      ran = true;
      await new Promise((r) => setTimeout(r, SETTLE_MS));
      const w = await openLoop(contenders[i]!, pools[i]!, upstream, rate);
      searches[i]!.windows.push(w);
      console.log(
        `- round ${round} ${contenders[i]!.key} ${fmt(rate)}: ${fmt(w.achieved)} req/s, ` +
          `${fmt(w.p50Ms, 1)}/${fmt(w.p99Ms, 1)} ms, ${w.failed}+${w.notSent} of ${w.sent + w.notSent}, ` +
          `cores ${w.cores.toFixed(2)}/${w.clientCores.toFixed(2)}/${w.upstreamCores.toFixed(2)}, ` +
          `upstream served ${w.upstreamServed}, longest stall ms client ${fmt(w.clientStallMs)}` +
          `${w.stallMs === undefined ? '' : ` gateway ${fmt(w.stallMs)}`}: ${w.ok ? 'held' : 'FAILED'} (load ${load()})`,
      );
    }
    if (!ran) break;
  }
  console.log(
    `\n### Sustained throughput, 20 ms upstream, open loop, ${WINDOW_MS / 1000} s windows, p99 < 1 s and ` +
      `< 0.1 % errors; distinct deterministic chat completions (cache misses)\n`,
  );
  console.log(
    '| gateway, in its own process | sustained req/s | p50 / p99 ms | errors % | gateway CPU cores used | req/s per core | closed-loop probe req/s |',
  );
  console.log('|---|---:|---:|---:|---:|---:|---:|');
  const perCore: Record<string, number> = {};
  contenders.forEach((c, i) => {
    const best = searches[i]!.best;
    if (best === undefined) {
      console.log(`| ${c.name} | none held | | | | | ${fmt(probes[i]!)} |`);
      return;
    }
    perCore[c.key] = best.rate / best.cores;
    const errors = ((best.failed + best.notSent) / (best.sent + best.notSent)) * 100;
    console.log(
      `| ${c.name} | ${searches[i]!.unbounded ? '≥ ' : ''}${fmt(best.rate)} | ${fmt(best.p50Ms, 1)} / ${fmt(best.p99Ms, 1)} | ` +
        `${errors.toFixed(2)} | ${best.cores.toFixed(2)} | ${fmt(best.rate / best.cores)} | ${fmt(probes[i]!)} |`,
    );
  });
  if (perCore.clawperf !== undefined && perCore.portkey !== undefined)
    console.log(`\nreq/s per core, clawperf ÷ Portkey: ${(perCore.clawperf / perCore.portkey).toFixed(2)}x`);
  if (perCore.clawperf !== undefined && perCore.floor !== undefined)
    console.log(`req/s per core, clawperf ÷ floor: ${(perCore.clawperf / perCore.floor).toFixed(2)}x`);
  console.log(`load average at end ${load()}`);
  await Promise.all(pools.map((p) => p.close()));
  for (const c of contenders) await c.stop();
  await upstream.stop();
}

if (process.argv[2] === 'serve') await serve();
else await main();
