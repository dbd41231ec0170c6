/**
 * `npm run simulate`: a seeded, deterministic, trace-driven simulation of TTL policies. One workload (Zipf
 * popularity, keys that change at exponential intervals) is replayed through real MultiLevelCache +
 * SmartCache instances on a ManualClock, once per policy, and each read is checked against the origin's
 * value at that simulated moment.
 *
 *   node --expose-gc --import tsx bench/simulate.ts [--requests 1000000] [--keys 100000] [--seed 42]
 *        [--rate 500] [--no-write]
 *
 * Prints a Markdown table; unless --no-write, also writes docs/simulation.md and docs/simulation.svg.
 *
 * `--trace-nodes N` replays the same trace across N simulated nodes sharing one L2 (`simulate-nodes.ts`).
 * `--nodes N` instead measures cross-node staleness after writes with N caches on a real Redis (`--redis URL`,
 * or one started for the run); it replays no trace, so it refuses the trace options.
 */
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Redis } from 'ioredis';
import { MultiLevelCache, RedisBus } from '../src/cache/index.ts';
import { SmartCache, type SmartCacheOptions } from '../src/cache/smart-cache.ts';
import { ManualClock } from '../src/internal/clock.ts';
import { startRedis } from '../test/helpers/redis.ts';
import { machine } from './harness.ts';

/** A workload: which key each request reads and when, and when each key's origin value changes. */
export interface Trace {
  readonly keys: number;
  readonly requestKeys: Int32Array;
  /** Request times, ms, non-decreasing. */
  readonly requestTimes: Float64Array;
  /**
   * A fresh change schedule: each call of the returned function gives key `k`'s next change time (ms,
   * increasing; `Infinity` when it never changes again).
   */
  changes(): (k: number) => number;
  /** Each key's mean time between changes, ms, when the generator knows it (for the bounds in `simulate-bounds.ts`). */
  readonly changeMeanMs?: Float64Array;
}

export interface TraceOptions {
  keys: number;
  requests: number;
  seed: number;
  /** Requests per simulated second. */
  rate: number;
  /** Zipf exponent of popularity. */
  zipfS: number;
  /** Share of keys (chosen at random, independent of popularity) that change often. */
  fastShare: number;
  /** Mean time between changes of the fast keys, ms. */
  fastMeanMs: number;
  /** Mean time between changes of the other keys, ms. */
  slowMeanMs: number;
}

export const DEFAULT_TRACE: TraceOptions = {
  keys: 100_000,
  requests: 1_000_000,
  seed: 42,
  rate: 500,
  zipfS: 1,
  fastShare: 0.1,
  fastMeanMs: 10 * 60_000,
  slowMeanMs: 24 * 3_600_000,
};

/** mulberry32: a small, fast 32-bit PRNG; plenty for a workload generator. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    return step(a) / 4294967296;
  };
}

function step(a: number): number {
  let t = Math.imul(a ^ (a >>> 15), a | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return (t ^ (t >>> 14)) >>> 0;
}

/** The generated workload: Zipf-popular reads at a fixed rate, exponential change intervals per key. */
export function generateTrace(options: TraceOptions): Trace {
  const { keys, requests, seed, rate, zipfS, fastShare, fastMeanMs, slowMeanMs } = options;
  const random = mulberry32(seed);
  const cdf = new Float64Array(keys);
  let sum = 0;
  for (let i = 0; i < keys; i++) {
    sum += 1 / (i + 1) ** zipfS;
    cdf[i] = sum;
  }
  for (let i = 0; i < keys; i++) cdf[i]! /= sum;
  const requestKeys = new Int32Array(requests);
  const requestTimes = new Float64Array(requests);
  const gap = 1000 / rate;
  for (let i = 0; i < requests; i++) {
    const u = random();
    let lo = 0;
    let hi = keys - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (cdf[mid]! < u) lo = mid + 1;
      else hi = mid;
    }
    requestKeys[i] = lo;
    requestTimes[i] = i * gap;
  }
  // The fast-changing keys: a random subset of exact size, chosen by a partial Fisher-Yates shuffle.
  const order = new Int32Array(keys);
  for (let i = 0; i < keys; i++) order[i] = i;
  const fastCount = Math.round(keys * fastShare);
  const mean = new Float64Array(keys).fill(slowMeanMs);
  for (let i = 0; i < fastCount; i++) {
    const j = i + Math.floor(random() * (keys - i));
    const picked = order[j]!;
    order[j] = order[i]!;
    order[i] = picked;
    mean[picked] = fastMeanMs;
  }
  const keySeed = Math.floor(random() * 4294967296);
  return {
    keys,
    requestKeys,
    requestTimes,
    changeMeanMs: mean,
    changes() {
      // One PRNG stream per key, so the schedule does not depend on the order keys are asked about.
      const state = new Uint32Array(keys);
      const last = new Float64Array(keys);
      for (let k = 0; k < keys; k++) state[k] = step((keySeed ^ Math.imul(k + 1, 0x9e3779b1)) >>> 0);
      return (k) => {
        const s = (state[k]! + 0x6d2b79f5) >>> 0;
        state[k] = s;
        const u = step(s) / 4294967296;
        last[k]! += -Math.log(1 - u) * mean[k]!;
        return last[k]!;
      };
    },
  };
}

/** A value as the origin serves it: its version and when the origin moves past it. */
export interface OriginValue {
  version: number;
  /** Time of the next change after this value was fetched; a read at or after it is stale. */
  until: number;
}

export interface PolicyUnderTest {
  name: string;
  options: SmartCacheOptions;
}

export interface PolicyResult {
  policy: string;
  requests: number;
  hits: number;
  hitRate: number;
  originCalls: number;
  staleReads: number;
  staleSeconds: number;
  heapBytes: number;
  wallMs: number;
}

const SEED_SWR = 'hit-rate (seed) + stale-while-revalidate';
const AWARE_SWR = 'change-aware + stale-while-revalidate, staleReadCost 10';

/**
 * The policies the table compares. The stale-while-revalidate rows serve an expired entry while it is
 * refreshed only while the key's estimated chance of having changed is under 2 % (SmartCache's
 * `maxStaleChance`); the refresh still costs an origin call, so they turn misses into hits, not calls saved.
 */
export const POLICIES: readonly PolicyUnderTest[] = [
  { name: 'fixed 1 h', options: { policy: () => 3_600_000 } },
  { name: 'hit-rate (seed)', options: { policy: 'hit-rate' } },
  { name: 'change-aware', options: { policy: 'change-aware' } },
  {
    name: SEED_SWR,
    options: { policy: 'hit-rate', staleWhileRevalidateMs: 3_600_000 },
  },
  {
    name: AWARE_SWR,
    options: { policy: 'change-aware', staleReadCost: 10, staleWhileRevalidateMs: 3_600_000 },
  },
];

/**
 * Replays `trace` through a fresh L1-only MultiLevelCache + SmartCache on a ManualClock. Caches are sized
 * to hold every key, so only the TTL policy decides what is served.
 */
export async function runPolicy(trace: Trace, policy: PolicyUnderTest): Promise<PolicyResult> {
  const started = performance.now();
  const clock = new ManualClock();
  const cache = new MultiLevelCache<OriginValue>({
    l1: { maxEntries: trace.keys + 1, maxBytes: 1024 * 1024 * 1024 },
    disk: false,
    clock,
  });
  const smart = new SmartCache<OriginValue>(cache, { maxKeys: trace.keys, ...policy.options, clock });
  const next = trace.changes();
  const version = new Int32Array(trace.keys);
  const upcoming = new Float64Array(trace.keys).fill(Number.NaN);
  const names = Array.from({ length: trace.keys }, (_, k) => `key:${k}`);
  let originCalls = 0;
  let staleReads = 0;
  let staleMs = 0;
  let now = 0;
  let key = 0;
  const fetcher = (): OriginValue => {
    originCalls++;
    return { version: version[key]!, until: upcoming[key]! };
  };
  const { requestKeys, requestTimes } = trace;
  for (let i = 0; i < requestKeys.length; i++) {
    const t = requestTimes[i]!;
    if (t > now) {
      await clock.advance(t - now);
      now = t;
    }
    key = requestKeys[i]!;
    let u = upcoming[key]!;
    if (Number.isNaN(u)) u = next(key);
    while (u <= t) {
      version[key]!++;
      u = next(key);
    }
    upcoming[key] = u;
    const value = await smart.getWithAdaptiveTTL(names[key]!, fetcher);
    if (value.version !== version[key]) {
      staleReads++;
      staleMs += t - value.until;
    }
  }
  const heapBytes = heapUsed();
  const stats = smart.stats();
  await cache.close();
  return {
    policy: policy.name,
    requests: stats.requests,
    hits: stats.hits,
    hitRate: stats.hits / stats.requests,
    originCalls,
    staleReads,
    staleSeconds: staleMs / 1000,
    heapBytes,
    wallMs: performance.now() - started,
  };
}

function heapUsed(): number {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc !== undefined) gc();
  return process.memoryUsage().heapUsed;
}

export async function simulate(
  trace: Trace,
  policies: readonly PolicyUnderTest[] = POLICIES,
): Promise<PolicyResult[]> {
  const results: PolicyResult[] = [];
  for (const policy of policies) results.push(await runPolicy(trace, policy));
  return results;
}

const fmt = (n: number, digits = 0) =>
  n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

export function table(results: readonly PolicyResult[]): string {
  const lines = [
    '| policy | hit rate | origin calls | stale reads | stale reads % | stale-seconds | heap (MB) | wall (s) |',
    '|---|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of results) {
    lines.push(
      `| ${r.policy} | ${fmt(r.hitRate * 100, 2)} % | ${fmt(r.originCalls)} | ${fmt(r.staleReads)} | ${fmt((r.staleReads / r.requests) * 100, 2)} % | ${fmt(r.staleSeconds)} | ${fmt(r.heapBytes / 1048576, 1)} | ${fmt(r.wallMs / 1000, 1)} |`,
    );
  }
  return lines.join('\n');
}

function verdict(results: readonly PolicyResult[]): string {
  const find = (name: string) => results.find((r) => r.policy === name);
  const seed = find('hit-rate (seed)');
  const lines: string[] = [];
  const compare = (a: PolicyResult | undefined, b: PolicyResult | undefined) => {
    if (a === undefined || b === undefined) return;
    const factor = a.staleReads === 0 ? Number.POSITIVE_INFINITY : b.staleReads / a.staleReads;
    const delta = (a.hitRate - b.hitRate) * 100;
    const calls = (a.originCalls / b.originCalls - 1) * 100;
    lines.push(
      `- ${a.policy} vs ${b.policy}: ${Number.isFinite(factor) ? `${fmt(factor, 2)}x` : 'infinitely'} fewer stale reads, hit rate ${signed(delta, 2)} points, origin calls ${signed(calls, 1)} %.`,
    );
  };
  compare(find('change-aware'), seed);
  compare(find(AWARE_SWR), seed);
  compare(find(AWARE_SWR), find(SEED_SWR));
  return lines.join('\n');
}

const signed = (n: number, digits: number) => `${n >= 0 ? '+' : ''}${fmt(n, digits)}`;

/** A bar chart: hit rate and stale reads per policy, side by side. */
export function svg(results: readonly PolicyResult[], title: string): string {
  const width = 760;
  const height = 360;
  const colors = ['#8c8c8c', '#d9822b', '#2b7bd9', '#f2b880', '#1b4f8c'];
  const panel = (x0: number, label: string, values: number[], max: number, show: (v: number) => string) => {
    const w = 300;
    const h = 220;
    const top = 60;
    const bar = w / (values.length * 1.5 + 0.5);
    let out = `<text x="${x0 + w / 2}" y="${top - 12}" text-anchor="middle" font-weight="bold">${label}</text>`;
    out += `<line x1="${x0}" y1="${top + h}" x2="${x0 + w}" y2="${top + h}" stroke="#333"/>`;
    values.forEach((v, i) => {
      const bh = max === 0 ? 0 : (v / max) * (h - 20);
      const x = x0 + bar * 0.5 + i * bar * 1.5;
      out += `<rect x="${x.toFixed(1)}" y="${(top + h - bh).toFixed(1)}" width="${bar.toFixed(1)}" height="${bh.toFixed(1)}" fill="${colors[i % colors.length]}"/>`;
      out += `<text x="${(x + bar / 2).toFixed(1)}" y="${(top + h - bh - 5).toFixed(1)}" text-anchor="middle" font-size="12">${show(v)}</text>`;
    });
    return out;
  };
  const hit = results.map((r) => r.hitRate * 100);
  const stale = results.map((r) => r.staleReads);
  let body = panel(40, 'hit rate (%)', hit, 100, (v) => fmt(v, 1));
  body += panel(420, 'stale reads served', stale, Math.max(...stale), (v) => fmt(v));
  const legend = results
    .map(
      (r, i) =>
        `<rect x="${20 + (i % 3) * 250}" y="${height - 46 + Math.floor(i / 3) * 20}" width="12" height="12" fill="${colors[i % colors.length]}"/><text x="${38 + (i % 3) * 250}" y="${height - 36 + Math.floor(i / 3) * 20}" font-size="11">${escapeXml(r.policy)}</text>`,
    )
    .join('');
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="14">
<rect width="100%" height="100%" fill="#fff"/>
<text x="${width / 2}" y="24" text-anchor="middle" font-size="15">${escapeXml(title)}</text>
${body}
${legend}
</svg>
`;
}

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

interface Args {
  trace: TraceOptions;
  write: boolean;
  /** `--nodes`: cross-node staleness with real Redis; 1 when not given. */
  nodes: number;
  redis: string | undefined;
  /** `--trace-nodes`: the trace replayed across this many simulated nodes (`simulate-nodes.ts`). */
  traceNodes: number | undefined;
  assign: 'round-robin' | 'random';
  busDelayMs: number | undefined;
  /** Every option as given, for the report's command line (a `--redis` URL redacted: it may hold a password). */
  given: string[];
}

const USAGE =
  'usage: simulate [--requests N] [--keys N] [--seed N] [--rate N] [--no-write]' +
  ' | --trace-nodes N [--assign round-robin|random] [--bus-delay-ms MS] [trace options]' +
  ' | --nodes N [--redis URL] [--no-write]';

function parseArgs(argv: readonly string[]): Args {
  const trace = { ...DEFAULT_TRACE };
  const args: Args = {
    trace,
    write: true,
    nodes: 1,
    redis: undefined,
    traceNodes: undefined,
    assign: 'round-robin',
    busDelayMs: undefined,
    given: [],
  };
  const flags: Record<string, keyof TraceOptions> = {
    '--requests': 'requests',
    '--keys': 'keys',
    '--seed': 'seed',
    '--rate': 'rate',
  };
  const traceFlags: string[] = [];
  const integer = (arg: string, value: string | undefined, min: number) => {
    const n = Number(value);
    if (value === undefined || !Number.isInteger(n) || n < min) {
      throw new TypeError(`${arg} must be an integer >= ${min}, got ${value}; ${USAGE}`);
    }
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const value = argv[i + 1];
    if (arg === '--no-write') {
      args.write = false;
      args.given.push(arg);
      continue;
    }
    i++;
    if (arg === '--redis' && value !== undefined) {
      args.redis = value;
      args.given.push(arg, '<url>');
      continue;
    }
    args.given.push(arg, String(value));
    if (arg === '--nodes') args.nodes = integer(arg, value, 2);
    else if (arg === '--trace-nodes') args.traceNodes = integer(arg, value, 1);
    else if (arg === '--bus-delay-ms') args.busDelayMs = integer(arg, value, 0);
    else if (arg === '--assign') {
      if (value !== 'round-robin' && value !== 'random') {
        throw new TypeError(`--assign must be round-robin or random, got ${value}`);
      }
      args.assign = value;
    } else if (flags[arg] !== undefined) {
      trace[flags[arg]] = integer(arg, value, arg === '--seed' ? 0 : 1);
      traceFlags.push(arg);
    } else throw new TypeError(`unknown option ${arg} ${value ?? ''}; ${USAGE}`);
  }
  if (args.nodes > 1 && (args.traceNodes !== undefined || traceFlags.length > 0)) {
    throw new TypeError(
      `--nodes measures staleness after writes with real Redis and replays no trace, so it takes no ${[...traceFlags, ...(args.traceNodes === undefined ? [] : ['--trace-nodes'])].join(', ')}; to replay the trace across N nodes sharing one L2, use --trace-nodes N`,
    );
  }
  if (args.traceNodes === undefined && (args.busDelayMs !== undefined || argv.includes('--assign'))) {
    throw new TypeError(`--assign and --bus-delay-ms apply to --trace-nodes only; ${USAGE}`);
  }
  return args;
}

/** The command that reproduces this run: every option given, and the trace's values in the trace modes. */
function commandLine(args: Args, withTrace: boolean): string {
  const { requests, keys, seed, rate } = args.trace;
  const parts = ['node --expose-gc --import tsx bench/simulate.ts'];
  if (withTrace) parts.push(`--requests ${requests} --keys ${keys} --seed ${seed} --rate ${rate}`);
  const traceFlags = new Set(['--requests', '--keys', '--seed', '--rate']);
  for (let i = 0; i < args.given.length; i++) {
    const arg = args.given[i]!;
    if (arg === '--no-write') parts.push(arg);
    else if (withTrace && traceFlags.has(arg)) i++;
    else parts.push(arg, args.given[++i]!);
  }
  return parts.join(' ');
}

export interface NodesResult {
  nodes: number;
  writes: number;
  /** PUBLISH on one client until the message arrives on another's subscription, ms. */
  busLatencyMs: number[];
  /** From `set()` resolving on the writer until the last read on another node that returned the old value, ms. */
  staleAfterWriteMs: number[];
  /** From the start of `set()` until every other node reads the new value, ms. */
  visibleAfterMs: number[];
}

/**
 * Cross-node staleness with real Redis and real time: `nodes` caches share one Redis (L2 and bus). Each
 * write goes to one node after the others have the old value in L1; the others then read until they see
 * the new value. Compared with the bus latency measured on the same Redis.
 */
export async function runNodes(redisUrl: string, nodes: number, writes: number): Promise<NodesResult> {
  const namespace = `sim${process.pid}`;
  const caches = Array.from(
    { length: nodes },
    () => new MultiLevelCache<number>({ redis: redisUrl, namespace, disk: false }),
  );
  const clients = [new Redis(redisUrl), new Redis(redisUrl)];
  const sender = new RedisBus({ client: clients[0]!, channel: `${namespace}:latency` });
  const receiver = new RedisBus({ client: clients[1]!, channel: `${namespace}:latency` });
  try {
    await Promise.all(caches.map((c) => c.ready()));
    let arrived: (() => void) | undefined;
    const busLatencyMs: number[] = [];
    await receiver.subscribe({
      message: (message) => {
        if ('keys' in message) busLatencyMs.push(performance.now() - Number(message.keys[0]));
        arrived?.();
      },
      reconnected: () => undefined,
    });
    for (let i = 0; i < writes; i++) {
      const done = new Promise<void>((resolve) => {
        arrived = resolve;
      });
      await sender.publish({ keys: [String(performance.now())] });
      await done;
    }
    const staleAfterWriteMs: number[] = [];
    const visibleAfterMs: number[] = [];
    for (let i = 0; i < writes; i++) {
      const key = `w${i % 16}`;
      const writer = caches[i % nodes]!;
      const readers = caches.filter((c) => c !== writer);
      for (const reader of readers) await reader.get(key);
      const start = performance.now();
      await writer.set(key, i, { ttlMs: 3_600_000 });
      const written = performance.now();
      // The stale window ends with the last read that still returned the old value.
      let lastStale = written;
      let seen = 0;
      await Promise.all(
        readers.map(async (reader) => {
          for (;;) {
            const value = await reader.get(key);
            const at = performance.now();
            if (value === i) {
              seen = Math.max(seen, at);
              return;
            }
            lastStale = Math.max(lastStale, at);
            await new Promise((resolve) => setImmediate(resolve));
          }
        }),
      );
      staleAfterWriteMs.push(lastStale - written);
      visibleAfterMs.push(seen - start);
    }
    return { nodes, writes, busLatencyMs, staleAfterWriteMs, visibleAfterMs };
  } finally {
    await receiver.close();
    await sender.close();
    for (const client of clients) client.disconnect();
    await Promise.all(caches.map((c) => c.close()));
  }
}

function quantile(values: readonly number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
}

export function nodesTable(result: NodesResult): string {
  const row = (name: string, values: readonly number[]) =>
    `| ${name} | ${fmt(quantile(values, 0.5), 2)} | ${fmt(quantile(values, 0.99), 2)} | ${fmt(Math.max(...values), 2)} |`;
  return [
    '| measure (ms) | p50 | p99 | max |',
    '|---|---:|---:|---:|',
    row('bus latency: PUBLISH until another client receives it', result.busLatencyMs),
    row(
      `stale window: set() resolved until the last read of the old value on the other ${result.nodes - 1} nodes`,
      result.staleAfterWriteMs,
    ),
    row('set() started until every node reads the new value', result.visibleAfterMs),
  ].join('\n');
}

async function mainNodes(args: Args): Promise<void> {
  const server = args.redis === undefined ? await startRedis() : undefined;
  try {
    const writes = 500;
    const result = await runNodes(args.redis ?? server!.url, args.nodes, writes);
    const report = [
      '# Cross-node staleness after writes',
      '',
      `${args.nodes} MultiLevelCache nodes in one process, each with its own Redis connections, sharing one Redis (L2 and invalidation bus); ${writes} writes, each to one node after the others hold the old value in L1; the other nodes read until they see the new value. Real time, loopback Redis.`,
      '',
      nodesTable(result),
      '',
      `Command: \`${commandLine(args, false)}\` (${machine()}).`,
      '',
    ].join('\n');
    console.log(report);
    if (args.write) {
      const docs = join(dirname(fileURLToPath(import.meta.url)), '..', 'docs');
      writeFileSync(join(docs, 'simulation-nodes.md'), report);
    }
  } finally {
    await server?.stop();
  }
}

/** The trace in words, for a report. */
export function describeTrace(options: TraceOptions): string {
  return `${fmt(options.keys)} keys (Zipf s = ${options.zipfS}), ${fmt(options.requests)} requests at ${options.rate}/s (${fmt(options.requests / options.rate / 60, 1)} simulated minutes), ${options.fastShare * 100} % of keys change every ${options.fastMeanMs / 60_000} min on average and the rest every ${options.slowMeanMs / 3_600_000} h, seed ${options.seed}`;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.nodes > 1) return mainNodes(args);
  if (args.traceNodes !== undefined) {
    const { mainTraceNodes } = await import('./simulate-nodes.ts');
    return mainTraceNodes(args.trace, {
      nodes: args.traceNodes,
      assign: args.assign,
      busDelayMs: args.busDelayMs,
      command: commandLine(args, true),
    });
  }
  const { trace: options, write } = args;
  const started = performance.now();
  const trace = generateTrace(options);
  const results = await simulate(trace);
  const wall = (performance.now() - started) / 1000;
  const describe = describeTrace(options);
  const command = commandLine(args, true);
  const report = [
    '# TTL policy simulation',
    '',
    `Trace: ${describe}.`,
    '',
    table(results),
    '',
    verdict(results),
    '',
    `Command: \`${command}\` (${machine()}); whole run ${fmt(wall, 1)} s wall, peak RSS ${fmt(process.resourceUsage().maxRSS / 1024, 0)} MB.`,
    '',
    "Heap is the simulator process after a GC at the end of each policy run, with that run's cache and per-key statistics still alive.",
    '',
    '![hit rate and stale reads per policy](simulation.svg)',
    '',
  ].join('\n');
  console.log(report);
  if (write) {
    const docs = join(dirname(fileURLToPath(import.meta.url)), '..', 'docs');
    writeFileSync(join(docs, 'simulation.md'), report);
    writeFileSync(
      join(docs, 'simulation.svg'),
      svg(
        results,
        `TTL policies, ${fmt(options.requests)} requests, ${fmt(options.keys)} keys, seed ${options.seed}`,
      ),
    );
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((error: unknown) => {
    console.error(error);
    process.exit(1);
  });
}
