/**
 * `npm run bench shared-pacing`: a provider key's pacing shared by three gateway processes on one Redis
 * (`--redis`), beside the same three processes pacing alone from the provider's headers, and one gateway
 * process alone (the floor: one process sees every call it sends).
 *
 * - Provider: a FAKE OpenAI-compatible provider (no real one runs here), a bare node:http server in a
 *   process of its own. Per key (the `authorization` header) it allows LIMIT chat completions per fixed
 *   WINDOW_MS window (the windows on a grid from the key's first call), says so in OpenAI's
 *   `x-ratelimit-*-requests` headers, answers an accepted call after PROVIDER_LATENCY_MS and refuses one
 *   beyond the limit at once with 429 and `retry-after-ms` (the time to the window's end).
 * - Gateways: `clawperf gateway` (`src/gateway/main.ts`), each in a process of its own, `--cache-dir off`,
 *   `--queue-timeout-ms` QUEUE_TIMEOUT_MS (the longest wait for the gateway's admission, for a deployment
 *   slot, and for the key's budget: a longer wait for budget is a 429 with Retry-After), `--log-level warn`,
 *   every other setting the default (2 retries, Redis command timeout 100 ms unless
 *   BENCH_REDIS_COMMAND_TIMEOUT_MS says otherwise); one deployment per round on the fake, each with a key
 *   of its own and `maxConcurrency` CONCURRENCY. The shared contender's three processes get their own
 *   redis-server.
 * - Load: this process, open loop: OFFERED_PER_S requests a second (3x what the key allows) for LOAD_MS,
 *   sent in turn to the contender's gateways, each a non-streamed `/v1/chat/completions` with
 *   `x-clawperf-cache: bypass`; a client does not retry. Every answer is awaited before the next round.
 *
 * Contenders run in ROUNDS interleaved rounds (the order rotating), each round on a fresh provider key, so
 * every round starts with nothing learned, as a new key would; an untimed warm-up on a key of its own comes
 * first. Figures are over the rounds together: the most calls the fake saw (accepted and refused), and
 * accepted, in one window; the 429s it had to send; the share of its allowance used (accepted in the
 * load's LOAD_MS / WINDOW_MS windows, over LIMIT per window); the client's latency of its 200s and of its
 * other answers; how each request ended (and what the first of each kind said). Every 200 a client read
 * must be a call the fake accepted. For the shared contender, from its server's `INFO commandstats` before
 * and after each round (a script's own commands are counted too): EVALSHA per upstream call (the fake's
 * accepted and refused calls), leases granted and never given back (ZADD less ZREM), and calls sent
 * without a lease (calls beyond the leases given back: paced by a process alone after a Redis failure).
 * Each round also prints what the gateways' `/metrics` say: attempts on the round's deployment, its failed
 * attempts by kind, and requests refused by the gateway's admission queue.
 */
import { type ChildProcess, fork, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { loadavg } from 'node:os';
import { createHistogram, type RecordableHistogram } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Pool } from 'undici';
import { type RedisServer, startRedis } from '../test/helpers/redis.ts';
import { freePort, waitFor } from '../test/helpers/servers.ts';
import { ask } from './fixtures/processes.ts';

/** Calls the fake allows per key and window. */
const LIMIT = 100;
const WINDOW_MS = 2_000;
const PROVIDER_LATENCY_MS = 100;
/** The offered load: 3x the key's allowance. */
const OFFERED_PER_S = (3 * LIMIT * 1_000) / WINDOW_MS;
const LOAD_MS = 10_000;
const ROUNDS = 2;
const WARMUP_REQUESTS = 30;
/** Each deployment's `maxConcurrency`: also what it sends at once before the key's first answer. */
const CONCURRENCY = 16;
const QUEUE_TIMEOUT_MS = 1_000;
const GATEWAY_START_TIMEOUT_MS = 90_000;
/** `--redis-command-timeout-ms` of the shared contender's gateways; unset: the gateway's default. */
const REDIS_COMMAND_TIMEOUT_MS = process.env.BENCH_REDIS_COMMAND_TIMEOUT_MS;

const root = fileURLToPath(new URL('..', import.meta.url));

const ANSWER = JSON.stringify({
  id: 'chatcmpl-fake',
  object: 'chat.completion',
  created: 0,
  model: 'fake-chat',
  choices: [{ index: 0, message: { role: 'assistant', content: 'ok' }, finish_reason: 'stop' }],
  usage: { prompt_tokens: 5, completion_tokens: 1, total_tokens: 6 },
});
const REFUSAL = JSON.stringify({
  error: { message: 'rate limited', type: 'requests', param: null, code: 'rate_limit_exceeded' },
});

/** What the fake did in one window of a key. */
interface Window {
  accepted: number;
  refused: number;
}

/**
 * `provider`: the FAKE provider. Over IPC, `'windows <key>'` answers `{ windows: Window[] }`, the key's
 * windows from its first call on.
 */
async function provider(): Promise<void> {
  const keys = new Map<string, { first: number; windows: Window[] }>();
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const now = Date.now();
      const id = (req.headers.authorization ?? '').replace(/^Bearer /, '');
      let key = keys.get(id);
      if (key === undefined) {
        key = { first: now, windows: [] };
        keys.set(id, key);
      }
      const k = key;
      const windowOf = (t: number) => {
        const i = Math.floor((t - k.first) / WINDOW_MS);
        for (let j = k.windows.length; j <= i; j++) k.windows.push({ accepted: 0, refused: 0 });
        return { w: k.windows[i]!, leftMs: k.first + (i + 1) * WINDOW_MS - t };
      };
      const { w, leftMs } = windowOf(now);
      if (w.accepted >= LIMIT) {
        w.refused++;
        res.writeHead(429, {
          'content-type': 'application/json',
          'x-ratelimit-limit-requests': String(LIMIT),
          'x-ratelimit-remaining-requests': '0',
          'x-ratelimit-reset-requests': `${leftMs}ms`,
          'retry-after-ms': String(leftMs),
        });
        res.end(REFUSAL);
        return;
      }
      w.accepted++;
      setTimeout(() => {
        // The headers say what is left when the answer leaves, as a provider counting its calls would.
        const at = windowOf(Date.now());
        res.writeHead(200, {
          'content-type': 'application/json',
          'x-ratelimit-limit-requests': String(LIMIT),
          'x-ratelimit-remaining-requests': String(Math.max(0, LIMIT - at.w.accepted)),
          'x-ratelimit-reset-requests': `${at.leftMs}ms`,
        });
        res.end(ANSWER);
      }, PROVIDER_LATENCY_MS);
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', 4096, r));
  process.on('message', (message: unknown) => {
    if (typeof message === 'string' && message.startsWith('windows ')) {
      process.send?.({ windows: keys.get(message.slice(8))?.windows ?? [] });
    }
  });
  process.send?.((server.address() as AddressInfo).port);
  process.once('disconnect', () => process.exit(0));
}

interface Contender {
  name: string;
  processes: number;
  redis: boolean;
}

const CONTENDERS: Contender[] = [
  { name: '3 gateway processes sharing Redis (`--redis`)', processes: 3, redis: true },
  { name: '3 gateway processes, each pacing alone', processes: 3, redis: false },
  { name: '1 gateway process (the floor)', processes: 1, redis: false },
];
const ROUND_NAMES = ['warm', ...Array.from({ length: ROUNDS }, (_, r) => `r${r + 1}`)];
const keyOf = (c: number, round: string) => `sk-fake-c${c}-${round}`;

/** Starts one `clawperf gateway` process with a deployment per round; resolves once it is ready. */
async function startGateway(
  c: number,
  providerUrl: string,
  redis: RedisServer | undefined,
): Promise<{ child: ChildProcess; base: string }> {
  const port = await freePort();
  const deployments = ROUND_NAMES.map((round) => ({
    name: `paced-${round}`,
    api: 'openai',
    baseUrl: providerUrl,
    apiKeys: [keyOf(c, round)],
    models: { [`chat-${round}`]: 'fake-chat' },
    maxConcurrency: CONCURRENCY,
  }));
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      'src/gateway/main.ts',
      '--port',
      String(port),
      '--host',
      '127.0.0.1',
      '--cache-dir',
      'off',
      '--queue-timeout-ms',
      String(QUEUE_TIMEOUT_MS),
      '--log-level',
      'warn',
      ...(redis === undefined ? [] : ['--redis', redis.url]),
      ...(redis === undefined || REDIS_COMMAND_TIMEOUT_MS === undefined
        ? []
        : ['--redis-command-timeout-ms', REDIS_COMMAND_TIMEOUT_MS]),
      '--deployments',
      JSON.stringify(deployments),
    ],
    { cwd: root, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  // Its banner and shutdown lines are kept back; the last of its stderr is shown if it fails.
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-4_000);
  });
  child.once('exit', (code, signal) => {
    if (code !== 0 && signal !== 'SIGTERM')
      console.error(`gateway on port ${port} exited (${code ?? signal}):\n${stderr}`);
  });
  const base = `http://127.0.0.1:${port}`;
  const probe = new Pool(base, { connections: 1 });
  try {
    await waitFor(
      async () => {
        if (child.exitCode !== null) throw new Error(`the gateway on port ${port} exited`);
        const res = await probe.request({ path: '/readyz', method: 'GET' });
        await res.body.dump();
        return res.statusCode === 200;
      },
      { timeoutMs: GATEWAY_START_TIMEOUT_MS, intervalMs: 200, what: `the gateway on port ${port}` },
    );
  } finally {
    await probe.close();
  }
  return { child, base };
}

/** What the clients of one contender saw, over the rounds. */
interface Tally {
  /** Answers by status, error code and whether they carried a Retry-After. */
  ended: Map<string, number>;
  /** The first error message of each kind of answer but a 200. */
  said: Map<string, string>;
  /** Client latency (request sent to body read) of the 200 answers and of the others, µs. */
  ok: RecordableHistogram;
  failed: RecordableHistogram;
  /** Retry-After of the answers but 200, seconds. */
  retryAfter: RecordableHistogram;
}

const newTally = (): Tally => ({
  ended: new Map(),
  said: new Map(),
  ok: createHistogram(),
  failed: createHistogram(),
  retryAfter: createHistogram(),
});

/** What one round of one contender measured. */
interface RoundFigures {
  windows: Window[];
  /** EVALSHA and EVAL run by the contender's Redis in the round. */
  redisEvals: number;
  /** Leases the script granted and never saw given back (ZADD less ZREM). */
  leasesKept: number;
  /** Calls the fake saw beyond the leases given back: sent without a lease from Redis. */
  unleased: number;
}

/** The figures a contender's gateways give in `/metrics`, summed over its processes. */
interface GatewayFigures {
  /** Requests refused by the gateway's own admission queue (`clawperf_backpressure_timed_out_total`). */
  admissionTimeouts: number;
  /** Calls to the round's deployment, and its failed calls by kind. */
  attempts: number;
  failures: Map<string, number>;
}

async function gatewayFigures(pools: Pool[], deployment: string): Promise<GatewayFigures> {
  const out: GatewayFigures = { admissionTimeouts: 0, attempts: 0, failures: new Map() };
  for (const pool of pools) {
    const res = await pool.request({ path: '/metrics', method: 'GET' });
    const text = await res.body.text();
    out.admissionTimeouts += Number(/^clawperf_backpressure_timed_out_total (\S+)$/m.exec(text)?.[1] ?? 0);
    for (const m of text.matchAll(
      /^clawperf_gateway_deployment_(requests|failures)_total\{([^}]*)\} (\S+)$/gm,
    )) {
      if (!m[2]!.includes(`deployment="${deployment}"`)) continue;
      const kind = /kind="([^"]+)"/.exec(m[2]!)?.[1];
      if (m[1] === 'requests') out.attempts += Number(m[3]);
      else if (kind !== undefined) out.failures.set(kind, (out.failures.get(kind) ?? 0) + Number(m[3]));
    }
  }
  return out;
}

/** `INFO commandstats` as calls per command, `info` itself left out. */
function commandStats(redis: RedisServer): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of redis.cli('INFO', 'commandstats').matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
    if (m[1] !== 'info') out.set(m[1]!, Number(m[2]));
  }
  return out;
}

/** Sends `count` requests evenly over `ms` to `pools` in turn; resolves once every answer is in. */
async function offer(pools: Pool[], model: string, count: number, ms: number, tally: Tally): Promise<void> {
  const one = async (i: number) => {
    const t0 = performance.now();
    const res = await pools[i % pools.length]!.request({
      path: '/v1/chat/completions',
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-clawperf-cache': 'bypass' },
      body: JSON.stringify({ model, messages: [{ role: 'user', content: `question ${i}` }] }),
    });
    const text = await res.body.text();
    const us = Math.max(1, Math.round((performance.now() - t0) * 1e3));
    let kind = '200';
    if (res.statusCode === 200) tally.ok.record(us);
    else {
      let error: { code?: unknown; message?: unknown } | undefined;
      try {
        error = (JSON.parse(text) as { error?: { code?: unknown; message?: unknown } }).error;
      } catch {}
      kind = `${res.statusCode} ${String(error?.code ?? '')}`.trimEnd();
      tally.failed.record(us);
      const retryAfter = Number(res.headers['retry-after']);
      if (retryAfter > 0) {
        kind += ' with Retry-After';
        tally.retryAfter.record(Math.round(retryAfter));
      }
      if (!tally.said.has(kind)) tally.said.set(kind, String(error?.message ?? text.slice(0, 200)));
    }
    tally.ended.set(kind, (tally.ended.get(kind) ?? 0) + 1);
  };
  const pending: Promise<void>[] = [];
  const start = performance.now();
  let sent = 0;
  while (sent < count) {
    const due = Math.min(count, Math.floor(((performance.now() - start) * count) / ms) + 1);
    for (; sent < due; sent++) pending.push(one(sent));
    await new Promise((r) => setTimeout(r, 2));
  }
  await Promise.all(pending);
}

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const msOf = (h: RecordableHistogram, p: number) =>
  h.count === 0 ? '-' : (h.percentile(p) / 1e3).toFixed(0);
const sum = <T>(xs: T[], f: (x: T) => number) => xs.reduce((s, x) => s + f(x), 0);

async function main(): Promise<void> {
  console.log(
    `load average at the start: ${loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')}`,
  );
  const started = performance.now();
  const fake = fork(fileURLToPath(import.meta.url), ['provider'], {
    execArgv: ['--import', 'tsx'],
    stdio: 'inherit',
  });
  const [providerPort] = (await once(fake, 'message')) as [number];
  const providerUrl = `http://127.0.0.1:${providerPort}/v1`;
  const redis = await startRedis();
  const gateways = await Promise.all(
    CONTENDERS.map((c, i) =>
      Promise.all(
        Array.from({ length: c.processes }, () => startGateway(i, providerUrl, c.redis ? redis : undefined)),
      ),
    ),
  );
  const pools = gateways.map((g) => g.map(({ base }) => new Pool(base, { connections: 1024 })));
  console.log(
    `${gateways.flat().length} gateway processes ready in ${fmt((performance.now() - started) / 1e3)} s`,
  );
  const warm = newTally();
  await Promise.all(pools.map((p) => offer(p, 'chat-warm', WARMUP_REQUESTS, 1_000, warm)));
  if (warm.ended.get('200') !== WARMUP_REQUESTS * CONTENDERS.length) {
    throw new Error(`warm-up: ${JSON.stringify([...warm.ended])}`);
  }
  const tallies = CONTENDERS.map(newTally);
  const figures: RoundFigures[][] = CONTENDERS.map(() => []);
  const loadWindows = LOAD_MS / WINDOW_MS;
  const count = Math.round((OFFERED_PER_S * LOAD_MS) / 1_000);
  for (let r = 0; r < ROUNDS; r++) {
    const round = ROUND_NAMES[r + 1]!;
    for (let k = 0; k < CONTENDERS.length; k++) {
      const i = (k + r) % CONTENDERS.length;
      const c = CONTENDERS[i]!;
      const before = c.redis ? commandStats(redis) : undefined;
      const admitted = await gatewayFigures(pools[i]!, `paced-${round}`);
      const t0 = performance.now();
      await offer(pools[i]!, `chat-${round}`, count, LOAD_MS, tallies[i]!);
      const tookMs = performance.now() - t0;
      // A call's end is reported to Redis without waiting: give the last reports time to land.
      await new Promise((r) => setTimeout(r, 250));
      const windows = await ask<Window[]>(fake, `windows ${keyOf(i, round)}`, 'windows');
      const calls = sum(windows, (w) => w.accepted + w.refused);
      const g = await gatewayFigures(pools[i]!, `paced-${round}`);
      const failures = [...g.failures].map(([kind, n]) => `${kind} ${fmt(n)}`).join(', ') || 'none';
      const f: RoundFigures = { windows, redisEvals: 0, leasesKept: 0, unleased: 0 };
      let redisLine = '';
      if (before !== undefined) {
        const ran = new Map<string, number>();
        for (const [name, n] of commandStats(redis)) {
          const d = n - (before.get(name) ?? 0);
          if (d > 0) ran.set(name, d);
        }
        f.redisEvals = (ran.get('evalsha') ?? 0) + (ran.get('eval') ?? 0);
        const given = ran.get('zrem') ?? 0;
        f.leasesKept = (ran.get('zadd') ?? 0) - given;
        f.unleased = Math.max(0, calls - given);
        redisLine =
          `\n  Redis ran (the script's own commands included) ` +
          [...ran].map(([name, n]) => `${name} ${fmt(n)}`).join(', ') +
          `; leases never given back ${f.leasesKept}, calls sent without a lease at least ${f.unleased}`;
      }
      figures[i]!.push(f);
      console.log(
        `round ${r + 1} ${c.name}: fake per window accepted/refused ` +
          windows.map((w) => `${w.accepted}/${w.refused}`).join(' ') +
          ` (${fmt(calls)} calls); all ${fmt(count)} answered ${(tookMs / 1e3).toFixed(1)} s after the first ` +
          `request\n  gateways: ${fmt(g.attempts)} attempts on the deployment, failed: ${failures}; ` +
          `admission queue timeouts ${fmt(g.admissionTimeouts - admitted.admissionTimeouts)}${redisLine}`,
      );
    }
  }
  // Every 200 a client read is a call the fake accepted, and no call the fake accepted went unanswered.
  CONTENDERS.forEach((c, i) => {
    const accepted = sum(figures[i]!, (f) => sum(f.windows, (w) => w.accepted));
    const ok = tallies[i]!.ended.get('200') ?? 0;
    if (accepted !== ok)
      throw new Error(`${c.name}: the fake accepted ${accepted} calls, the clients read ${ok} 200s`);
  });

  console.log(
    `\nFake provider: ${LIMIT} requests per ${WINDOW_MS / 1e3} s window per key, answers in ` +
      `${PROVIDER_LATENCY_MS} ms. Offered: ${fmt(OFFERED_PER_S)} requests/s (3x) for ${LOAD_MS / 1e3} s ` +
      `(${loadWindows} windows) per round, ${ROUNDS} rounds, a fresh key each.\n`,
  );
  console.log(
    '| contender | fake: calls seen in a window, max | fake: accepted in a window, max | fake: 429s sent | ' +
      'allowance used | ÷ 1 process | client 200s: p50 / p99 ms | client, other answers: p50 / p99 ms | ' +
      'clients ended | Redis EVALSHA per upstream call | Redis leases never given back / calls sent without one |',
  );
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|');
  const used = figures.map(
    (rounds) =>
      sum(rounds, (f) => sum(f.windows.slice(0, loadWindows), (w) => w.accepted)) /
      (LIMIT * loadWindows * rounds.length),
  );
  const floor = CONTENDERS.length - 1;
  CONTENDERS.forEach((c, i) => {
    const rounds = figures[i]!;
    const all = rounds.flatMap((f) => f.windows);
    const calls = sum(all, (w) => w.accepted + w.refused);
    const t = tallies[i]!;
    const ended = [...t.ended]
      .sort((a, b) => b[1] - a[1])
      .map(([kind, n]) => `${kind}: ${fmt(n)}`)
      .join(', ');
    const retry = t.retryAfter.count === 0 ? '' : ` (Retry-After ${t.retryAfter.min}-${t.retryAfter.max} s)`;
    console.log(
      `| ${c.name} | ${Math.max(...all.map((w) => w.accepted + w.refused))} | ` +
        `${Math.max(...all.map((w) => w.accepted))} | ${fmt(sum(all, (w) => w.refused))} | ` +
        `${(used[i]! * 100).toFixed(1)} % | ${(used[i]! / used[floor]!).toFixed(2)} | ` +
        `${msOf(t.ok, 50)} / ${msOf(t.ok, 99)} | ${msOf(t.failed, 50)} / ${msOf(t.failed, 99)} | ` +
        `${ended}${retry} | ` +
        (c.redis
          ? `${(sum(rounds, (f) => f.redisEvals) / calls).toFixed(2)} | ` +
            `${sum(rounds, (f) => f.leasesKept)} / ${sum(rounds, (f) => f.unleased)} |`
          : '- | - |'),
    );
  });
  console.log('\nWhat the answers but 200 said (the first of each kind):');
  for (const [kind, message] of new Map(tallies.flatMap((t) => [...t.said])))
    console.log(`- ${kind}: ${message}`);
  console.log(`\nWhole bench: ${fmt((performance.now() - started) / 1e3)} s.`);

  await Promise.all(pools.flat().map((p) => p.close()));
  for (const { child } of gateways.flat()) {
    if (child.exitCode !== null) continue;
    child.kill('SIGTERM');
    await once(child, 'exit');
  }
  fake.disconnect();
  await once(fake, 'exit');
  await redis.stop();
}

if (process.argv[2] === 'provider') await provider();
else await main();
