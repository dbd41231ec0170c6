/**
 * `npm run bench adaptive-concurrency`: a deployment's own concurrency limit, `maxConcurrency: 'adaptive'`
 * (untuned, the default) against fixed limits, in front of an upstream that slows down past a knee.
 *
 * - Upstream: a FAKE OpenAI-compatible upstream (no real provider runs here), a bare node:http server in a
 *   process of its own. A call arriving while `n - 1` others are being answered (`n` counting itself) takes
 *   BASE_MS up to the knee K, then BASE_MS x (1 + 2 (n - K) / K): each call beyond the knee adds 2 BASE_MS / K,
 *   so past the knee the upstream answers fewer calls a second, not just later ones (an overloaded server
 *   thrashes). A call arriving with more than REFUSE_FACTOR x K being answered gets 503 at once. It counts
 *   what it answered and refused; the knee can be moved over IPC.
 * - Gateway: `createGateway` alone in a second process, one deployment per contender (`fixed-4` ...
 *   `fixed-256`, `adaptive`, and a fresh `adaptive-shift` for the second experiment), all on the same fake,
 *   each serving its own model name; `cacheDir: false`, the gateway's global `maxConcurrency` 1024 (so each
 *   deployment's own limit is what binds), 1024 upstream connections per deployment, `maxQueueSize` 4096 and
 *   `queueTimeoutMs` 30 s (the default), so the load waits in the deployment's queue rather than being
 *   refused; retries, circuit breaker and every other setting are the defaults.
 * - Load: this process, CLIENTS closed-loop clients over an undici `Pool` of as many connections, each
 *   sending its next non-streamed `/v1/chat/completions` (with `x-clawperf-cache: bypass`) as soon as the
 *   previous one is answered. A client whose request fails pauses ERROR_PAUSE_MS before its next one (an
 *   SDK's first backoff), so a contender failing fast does not turn the loop into a busy loop on 2 cores.
 *
 * Experiment 1: the contenders in interleaved rounds (the order rotating each round), after an untimed
 * warm-up round each. Per round, answers in the first SETTLE_MS are not counted (all clients start at once);
 * goodput is the 200 answers completed in the rest of the round per second, latency the client's (request
 * sent to body read) of those answers, error rate the share of non-200 answers. Each round checks that the
 * fake answered exactly as many calls as the client got 200s, and that each came from the contender's
 * deployment (`x-clawperf-deployment`). Figures are medians over the rounds; the fake's mean latency and its
 * 503s are totals over them. The limits are read from `/metrics` every SWEEP_SAMPLE_MS in every round.
 *
 * Experiment 2: a fresh adaptive deployment under the same load; the knee moves during the run (SHIFT_PHASES:
 * halved, back, quartered, back). Its limit is read from `/metrics` every SHIFT_SAMPLE_MS.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHistogram, type RecordableHistogram } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Pool } from 'undici';
import { ask, CPU_PROBE, cpuOf } from './fixtures/processes.ts';

/** The fake's latency at or below the knee, ms. */
const BASE_MS = 20;
/** The knee of experiment 1. */
const KNEE = 16;
/** Calls being answered, as a multiple of the knee, above which the fake answers 503 at once. */
const REFUSE_FACTOR = 4;
/** Closed-loop clients. */
const CLIENTS = 256;
const FIXED = [4, 8, 16, 32, 64, 128, 256];
const ROUNDS = 5;
const ROUND_MS = 4_000;
const SETTLE_MS = 1_000;
const WARMUP_MS = 2_000;
const ERROR_PAUSE_MS = 500;
/** How often the limits are read from `/metrics`: in every round of experiment 1, and in experiment 2. */
const SWEEP_SAMPLE_MS = 500;
const SHIFT_SAMPLE_MS = 250;
/** Experiment 2: the knee from each time (ms) on; the run ends at SHIFT_RUN_MS. */
const SHIFT_PHASES: { at: number; knee: number }[] = [
  { at: 0, knee: KNEE },
  { at: 8_000, knee: KNEE / 2 },
  { at: 18_000, knee: KNEE },
  { at: 26_000, knee: KNEE / 4 },
  { at: 38_000, knee: KNEE },
];
const SHIFT_RUN_MS = 46_000;

const CHAT_ANSWER = JSON.stringify({
  id: 'chatcmpl-fake',
  object: 'chat.completion',
  created: 0,
  model: 'fake-chat',
  choices: [{ index: 0, message: { role: 'assistant', content: 'a short answer' }, finish_reason: 'stop' }],
  usage: { prompt_tokens: 5, completion_tokens: 4, total_tokens: 9 },
});
const OVERLOADED = JSON.stringify({
  error: { message: 'the fake upstream is overloaded', type: 'server_error', param: null, code: null },
});

/** The fake's latency for a call arriving as the `n`-th being answered, with knee `knee`. */
const latencyMs = (n: number, knee: number) =>
  n <= knee ? BASE_MS : BASE_MS * (1 + (2 * (n - knee)) / knee);

/**
 * `fake`: the FAKE OpenAI-compatible upstream. Over IPC: `'counts'` answers `{ counts: { ok, refused,
 * latencyMs } }` (latencyMs: the sum of the latencies it gave its answers), `'knee <n>'` moves the knee (for
 * calls arriving from then on).
 */
async function fake(): Promise<void> {
  let knee = KNEE;
  let answering = 0;
  let ok = 0;
  let refused = 0;
  let latencyTotal = 0;
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      if (req.method !== 'POST' || req.url !== '/v1/chat/completions') {
        res.writeHead(404, { 'content-type': 'application/json' });
        res.end(OVERLOADED);
        return;
      }
      const n = answering + 1;
      if (n > REFUSE_FACTOR * knee) {
        refused++;
        res.writeHead(503, { 'content-type': 'application/json' });
        res.end(OVERLOADED);
        return;
      }
      answering = n;
      const wait = latencyMs(n, knee);
      latencyTotal += wait;
      setTimeout(() => {
        answering--;
        ok++;
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(CHAT_ANSWER);
      }, wait);
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', 4096, r));
  process.on('message', (message: unknown) => {
    if (message === 'counts') process.send?.({ counts: { ok, refused, latencyMs: latencyTotal } });
    else if (typeof message === 'string' && message.startsWith('knee ')) {
      knee = Number(message.slice(5));
      process.send?.({ knee });
    }
  });
  process.send?.((server.address() as AddressInfo).port);
  process.once('disconnect', () => process.exit(0));
}

const CONTENDERS: { name: string; maxConcurrency: number | 'adaptive' }[] = [
  ...FIXED.map((n) => ({ name: `fixed-${n}`, maxConcurrency: n })),
  { name: 'adaptive', maxConcurrency: 'adaptive' as const },
];
const SHIFT_NAME = 'adaptive-shift';

/** `gateway <fake port>`: the gateway alone in its process, one deployment per contender. */
async function gateway(): Promise<void> {
  const { createGateway, LISTEN_BACKLOG } = await import('../src/gateway/server.ts');
  const baseUrl = `http://127.0.0.1:${Number(process.argv[3])}/v1`;
  const g = await createGateway({
    cacheDir: false,
    maxConcurrency: 1024,
    maxQueueSize: 4096,
    queueTimeoutMs: 30_000,
    upstreamConnections: 1024,
    deployments: [...CONTENDERS, { name: SHIFT_NAME, maxConcurrency: 'adaptive' as const }].map(
      ({ name, maxConcurrency }) => ({
        name,
        api: 'openai',
        baseUrl,
        models: { [name]: 'fake-chat' },
        maxConcurrency,
      }),
    ) as never,
  });
  const address = await g.app.listen({ port: 0, host: '127.0.0.1', backlog: LISTEN_BACKLOG });
  process.send?.(Number(new URL(address).port));
  process.once('disconnect', () => {
    void g.close().then(() => process.exit(0));
  });
}

/** Starts this file as `mode` in a child process; resolves with the child and the port it listens on. */
async function child(mode: string, args: string[]): Promise<{ child: ChildProcess; port: number }> {
  const started = fork(fileURLToPath(import.meta.url), [mode, ...args], {
    execArgv: ['--import', 'tsx', ...CPU_PROBE],
    stdio: 'inherit',
  });
  const [port] = (await once(started, 'message')) as [number];
  return { child: started, port };
}

interface Counts {
  ok: number;
  refused: number;
  latencyMs: number;
}

/** What one client loop saw; answers are counted by completion time. */
interface Tally {
  /** 200 answers completed in the counted window, and their latency (µs). */
  ok: number;
  errors: number;
  latency: RecordableHistogram;
  /** Non-200 answers in the counted window, by status and error code. */
  kinds: Map<string, number>;
  /** Every 200 answer of the run, counted or not (to check against the fake). */
  okAll: number;
}

const newTally = (): Tally => ({ ok: 0, errors: 0, latency: createHistogram(), kinds: new Map(), okAll: 0 });

class Load {
  readonly #pool: Pool;
  readonly #base: string;

  constructor(port: number) {
    this.#base = `http://127.0.0.1:${port}`;
    this.#pool = new Pool(this.#base, { connections: CLIENTS + 8, keepAliveTimeout: 60_000 });
  }

  /** One request to `model`; resolves with its status and error code (`''` for a 200). */
  async #one(model: string): Promise<{ status: number; code: string }> {
    const res = await this.#pool.request({
      path: '/v1/chat/completions',
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-clawperf-cache': 'bypass' },
      body: JSON.stringify({
        model,
        temperature: 1,
        messages: [{ role: 'user', content: 'Say something short.' }],
      }),
    });
    const text = await res.body.text();
    if (res.statusCode === 200) {
      const deployment = res.headers['x-clawperf-deployment'];
      if (deployment !== model) throw new Error(`${model}: answered by deployment ${String(deployment)}`);
      return { status: 200, code: '' };
    }
    let code = '';
    try {
      code = String((JSON.parse(text) as { error?: { code?: unknown } }).error?.code ?? '');
    } catch {}
    return { status: res.statusCode, code };
  }

  /**
   * CLIENTS closed-loop clients on `model` for `ms`; answers completed in [`countFrom`, `ms`) are counted,
   * and (when given) `onAnswer` hears of every answer with the time since the start.
   */
  async run(
    model: string,
    ms: number,
    countFrom: number,
    onAnswer?: (at: number, ok: boolean) => void,
  ): Promise<Tally> {
    const tally = newTally();
    const start = performance.now();
    const end = start + ms;
    const worker = async () => {
      while (performance.now() < end) {
        const t0 = performance.now();
        const { status, code } = await this.#one(model);
        const t1 = performance.now();
        const counted = t1 - start >= countFrom && t1 < end;
        onAnswer?.(t1 - start, status === 200);
        if (status === 200) {
          tally.okAll++;
          if (counted) {
            tally.ok++;
            tally.latency.record(Math.max(1, Math.round((t1 - t0) * 1e3)));
          }
        } else {
          if (counted) {
            tally.errors++;
            const kind = `${status} ${code}`.trim();
            tally.kinds.set(kind, (tally.kinds.get(kind) ?? 0) + 1);
          }
          await new Promise((r) => setTimeout(r, Math.max(0, Math.min(ERROR_PAUSE_MS, end - t1))));
        }
      }
    };
    await Promise.all(Array.from({ length: CLIENTS }, worker));
    return tally;
  }

  /** Each deployment's concurrency limit now, from `/metrics`. */
  async limits(): Promise<Map<string, number>> {
    const res = await this.#pool.request({ path: '/metrics', method: 'GET' });
    const text = await res.body.text();
    const out = new Map<string, number>();
    for (const m of text.matchAll(
      /^clawperf_gateway_deployment_concurrency_limit\{deployment="([^"]+)"\} (\S+)$/gm,
    )) {
      out.set(m[1]!, Number(m[2]));
    }
    return out;
  }

  close(): Promise<void> {
    return this.#pool.close();
  }
}

/** Reads `name`'s limit every `everyMs` until stopped; resolves with [ms since start, limit] pairs. */
function sampleLimit(load: Load, name: string, everyMs: number): { stop: () => Promise<[number, number][]> } {
  const samples: [number, number][] = [];
  const start = performance.now();
  let running = true;
  const loop = (async () => {
    while (running) {
      const at = performance.now() - start;
      const limit = (await load.limits()).get(name);
      if (limit !== undefined) samples.push([at, limit]);
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return samples;
    },
  };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const ms = (micros: number) => (micros / 1e3).toFixed(1);
const cpuUs = (a: NodeJS.CpuUsage, b: NodeJS.CpuUsage) => b.user - a.user + b.system - a.system;

interface Row {
  goodput: number[];
  p50: number[];
  p99: number[];
  ok: number;
  errors: number;
  kinds: Map<string, number>;
  /** CPU of the gateway process per second of round, as a share of one core. */
  gatewayCpu: number[];
  limits: number[];
  /** What the fake saw over the rounds: answers, the sum of their latencies (ms), 503s. */
  fakeOk: number;
  fakeLatencyMs: number;
  fakeRefused: number;
}

async function sweep(load: Load, fakeChild: ChildProcess, gatewayChild: ChildProcess): Promise<void> {
  const counts = () => ask<Counts>(fakeChild, 'counts', 'counts');
  console.log(
    `\n### Experiment 1: ${CLIENTS} closed-loop clients, fake knee K = ${KNEE} (${BASE_MS} ms up to K, ` +
      `+${((2 * BASE_MS) / KNEE).toFixed(1)} ms per call beyond, 503 above ${REFUSE_FACTOR * KNEE}); ` +
      `${ROUNDS} interleaved rounds of ${ROUND_MS / 1e3} s (first ${SETTLE_MS / 1e3} s not counted), medians over rounds`,
  );
  console.log('\nWhat the fake alone allows at L calls at once (answers/s, no gateway, no retries):');
  console.log(
    FIXED.map((n) => {
      const answered = Math.min(n, REFUSE_FACTOR * KNEE);
      return `L ${n}: ${fmt((answered / latencyMs(answered, KNEE)) * 1e3)}`;
    }).join(', '),
  );
  for (const c of CONTENDERS) await load.run(c.name, WARMUP_MS, 0);
  const rows: Row[] = CONTENDERS.map(() => ({
    goodput: [],
    p50: [],
    p99: [],
    ok: 0,
    errors: 0,
    kinds: new Map(),
    gatewayCpu: [],
    limits: [],
    fakeOk: 0,
    fakeLatencyMs: 0,
    fakeRefused: 0,
  }));
  for (let r = 0; r < ROUNDS; r++) {
    for (let k = 0; k < CONTENDERS.length; k++) {
      const i = (r + k) % CONTENDERS.length;
      const c = CONTENDERS[i]!;
      (globalThis as { gc?: () => void }).gc?.();
      const before = await counts();
      const cpu0 = await cpuOf(gatewayChild);
      // Every contender's rounds read /metrics alike, so the scrapes cost each the same.
      const sampler = sampleLimit(load, c.name, SWEEP_SAMPLE_MS);
      const tally = await load.run(c.name, ROUND_MS, SETTLE_MS);
      const cpu1 = await cpuOf(gatewayChild);
      const samples = await sampler.stop();
      const after = await counts();
      if (after.ok - before.ok !== tally.okAll) {
        throw new Error(
          `${c.name}: ${tally.okAll} answers read, ${after.ok - before.ok} answered by the fake`,
        );
      }
      const row = rows[i]!;
      const windowS = (ROUND_MS - SETTLE_MS) / 1e3;
      row.goodput.push(tally.ok / windowS);
      row.p50.push(tally.ok > 0 ? tally.latency.percentile(50) : Number.NaN);
      row.p99.push(tally.ok > 0 ? tally.latency.percentile(99) : Number.NaN);
      row.ok += tally.ok;
      row.errors += tally.errors;
      for (const [kind, n] of tally.kinds) row.kinds.set(kind, (row.kinds.get(kind) ?? 0) + n);
      row.gatewayCpu.push(cpuUs(cpu0, cpu1) / (ROUND_MS * 1e3));
      for (const [at, limit] of samples) if (at >= SETTLE_MS) row.limits.push(limit);
      row.fakeOk += after.ok - before.ok;
      row.fakeLatencyMs += after.latencyMs - before.latencyMs;
      row.fakeRefused += after.refused - before.refused;
      console.log(
        `round ${r + 1} ${c.name}: ${fmt(tally.ok / windowS)}/s, p50 ${ms(tally.latency.percentile(50))} ms, ` +
          `p99 ${ms(tally.latency.percentile(99))} ms, ${tally.errors} errors, fake refused ` +
          `${after.refused - before.refused}` +
          (c.maxConcurrency === 'adaptive' ? `, limit ${samples.map((s) => s[1]).join(' ')}` : ''),
      );
    }
  }
  const goodputs = rows.map((row) => median(row.goodput));
  const best = FIXED.reduce((b, _, i) => (goodputs[i]! > goodputs[b]! ? i : b), 0);
  console.log(
    `\n| contender | goodput (answers/s) | ÷ best fixed (fixed-${FIXED[best]}) | p50 ms | p99 ms | error rate | ` +
      'errors by kind | fake: mean latency ms | fake: 503s | gateway CPU (cores) |',
  );
  console.log('|---|---:|---:|---:|---:|---:|---|---:|---:|---:|');
  CONTENDERS.forEach((c, i) => {
    const row = rows[i]!;
    const kinds = [...row.kinds]
      .sort((a, b) => b[1] - a[1])
      .map(([k, n]) => `${k}: ${fmt(n)}`)
      .join(', ');
    const rate = row.ok + row.errors === 0 ? 0 : row.errors / (row.ok + row.errors);
    const limit =
      c.maxConcurrency !== 'adaptive' || row.limits.length === 0
        ? ''
        : ` (limit: median ${median(row.limits)}, ${Math.min(...row.limits)}-${Math.max(...row.limits)})`;
    console.log(
      `| ${c.name}${limit} | ${fmt(goodputs[i]!)} | ${(goodputs[i]! / goodputs[best]!).toFixed(2)} | ` +
        `${ms(median(row.p50))} | ${ms(median(row.p99))} | ${(rate * 100).toFixed(1)} % | ${kinds || '-'} | ` +
        `${(row.fakeLatencyMs / Math.max(1, row.fakeOk)).toFixed(1)} | ${fmt(row.fakeRefused)} | ` +
        `${median(row.gatewayCpu).toFixed(2)} |`,
    );
  });
  const a = CONTENDERS.length - 1;
  const f64 = FIXED.indexOf(64);
  const share = goodputs[a]! / goodputs[best]!;
  const p99 = (i: number) => median(rows[i]!.p99);
  console.log(
    `\nTargets: adaptive goodput >= 90 % of the best fixed limit's: ${(share * 100).toFixed(0)} % ` +
      `(${share >= 0.9 ? 'met' : 'NOT met'}); adaptive p99 no worse than fixed-${FIXED[best]}'s: ` +
      `${ms(p99(a))} vs ${ms(p99(best))} ms (${p99(a) <= p99(best) ? 'met' : 'NOT met'}); p99 against ` +
      `fixed-64's: ${ms(p99(f64))} ms, ${(p99(f64) / p99(a)).toFixed(2)}x the adaptive's.`,
  );
}

async function shift(load: Load, fakeChild: ChildProcess): Promise<void> {
  const kneeAt = (t: number) => SHIFT_PHASES.filter((p) => p.at <= t).at(-1)!.knee;
  await ask(fakeChild, `knee ${kneeAt(0)}`, 'knee');
  const perSecond = new Map<number, { ok: number; errors: number }>();
  const sampler = sampleLimit(load, SHIFT_NAME, SHIFT_SAMPLE_MS);
  const moves = (async () => {
    const start = performance.now();
    for (const phase of SHIFT_PHASES.slice(1)) {
      await new Promise((r) => setTimeout(r, Math.max(0, phase.at - (performance.now() - start))));
      await ask(fakeChild, `knee ${phase.knee}`, 'knee');
    }
  })();
  await load.run(SHIFT_NAME, SHIFT_RUN_MS, 0, (at, ok) => {
    const s = Math.floor(at / 1e3);
    const slot = perSecond.get(s) ?? { ok: 0, errors: 0 };
    if (ok) slot.ok++;
    else slot.errors++;
    perSecond.set(s, slot);
  });
  await moves;
  const samples = await sampler.stop();
  await ask(fakeChild, `knee ${KNEE}`, 'knee');
  console.log(
    `\n### Experiment 2: a fresh adaptive deployment, ${CLIENTS} clients; the knee moves: ` +
      SHIFT_PHASES.map((p) => `${p.knee} at ${p.at / 1e3} s`).join(', '),
  );
  console.log(`\n| t (s) | knee | limit (every ${SHIFT_SAMPLE_MS / 1e3} s) | 200 answers | errors |`);
  console.log('|---:|---:|---|---:|---:|');
  for (let s = 0; s * 1e3 < SHIFT_RUN_MS; s++) {
    const limits = samples.filter(([at]) => at >= s * 1e3 && at < (s + 1) * 1e3).map(([, l]) => l);
    const slot = perSecond.get(s) ?? { ok: 0, errors: 0 };
    console.log(`| ${s} | ${kneeAt(s * 1e3)} | ${limits.join(' ')} | ${slot.ok} | ${slot.errors} |`);
  }
  console.log(
    '\n| phase | limit before | settled limit (median of the last 3 s) | first within 20 % of the settled limit, s | within 20 % of it from then on, s | 200 answers/s, last 3 s |',
  );
  console.log('|---|---:|---:|---:|---:|---:|');
  SHIFT_PHASES.forEach((p, i) => {
    const to = SHIFT_PHASES[i + 1]?.at ?? SHIFT_RUN_MS;
    const phase = samples.filter(([at]) => at >= p.at && at < to);
    const before = samples.filter(([at]) => at < p.at).at(-1)?.[1];
    const settled = median(phase.filter(([at]) => at >= to - 3_000).map(([, l]) => l));
    const within = (l: number) => Math.abs(l - settled) <= 0.2 * settled;
    let stays = phase.length;
    while (stays > 0 && within(phase[stays - 1]![1])) stays--;
    const first = phase.find(([, l]) => within(l));
    const secs = (x: [number, number] | undefined) =>
      x === undefined ? 'never' : ((x[0] - p.at) / 1e3).toFixed(2);
    let ok = 0;
    for (let s = Math.ceil((to - 3_000) / 1e3); s < to / 1e3; s++) ok += perSecond.get(s)?.ok ?? 0;
    console.log(
      `| ${i === 0 ? 'fresh start' : `${SHIFT_PHASES[i - 1]!.knee} -> ${p.knee}`} (knee ${p.knee}, at ${p.at / 1e3} s) | ` +
        `${before ?? '-'} | ${settled} | ${secs(first)} | ${secs(phase[stays])} | ${fmt(ok / 3)} |`,
    );
  });
}

async function main(): Promise<void> {
  const upstream = await child('fake', []);
  const gw = await child('gateway', [String(upstream.port)]);
  const load = new Load(gw.port);
  console.log(
    `\nFake OpenAI-compatible upstream and gateway each in a process of their own, ${CLIENTS} clients in this one.`,
  );
  const started = performance.now();
  await sweep(load, upstream.child, gw.child);
  await shift(load, upstream.child);
  console.log(`\nWhole bench: ${fmt((performance.now() - started) / 1e3)} s.`);
  await load.close();
  for (const c of [gw.child, upstream.child]) {
    c.disconnect();
    await once(c, 'exit');
  }
}

if (process.argv[2] === 'fake') await fake();
else if (process.argv[2] === 'gateway') await gateway();
else await main();
