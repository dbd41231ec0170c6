/**
 * The trace of `simulate.ts` replayed across N nodes that share one L2, for capacity planning. Each request
 * goes to one node (round-robin, or at random by seed); each node has its own L1 (a real MultiLevelCache +
 * SmartCache, as in the one-node replay) on one shared ManualClock. L2 and the invalidation bus are
 * in-memory models, so no Redis server is needed:
 *
 * - an L1 miss is one Redis read (`GET`); L2 answers while the entry some node wrote is within its TTL,
 *   and the node then holds it in L1 for the rest of that TTL, as MultiLevelCache does with an L2 hit;
 * - otherwise the node loads from the source and writes L2 (one Redis write: the write script and its
 *   `PUBLISH`); after the bus delay every other node drops the key from L1. Redis delivers each message
 *   to every subscribed node, the writer included (which ignores it), so deliveries are writes × N.
 *
 * Each read is checked against the origin's value at that simulated moment, as in the one-node replay.
 *
 *   node --expose-gc --import tsx bench/simulate.ts --trace-nodes 3 [--assign round-robin|random]
 *        [--bus-delay-ms 2] [--requests 1000000] [--keys 100000] [--seed 42] [--rate 500]
 */
import { MultiLevelCache } from '../src/cache/index.ts';
import { SmartCache } from '../src/cache/smart-cache.ts';
import { ManualClock } from '../src/internal/clock.ts';
import { machine } from './harness.ts';
import {
  describeTrace,
  generateTrace,
  mulberry32,
  type OriginValue,
  POLICIES,
  type PolicyUnderTest,
  type Trace,
  type TraceOptions,
} from './simulate.ts';

export type Assignment = 'round-robin' | 'random';

export interface TraceNodesOptions {
  nodes: number;
  assign: Assignment;
  /** From a source load's write until the other nodes drop the key, simulated ms. */
  busDelayMs: number;
  /** Seeds the random assignment. */
  seed: number;
}

/**
 * The bus delay when none is given, ms: the p99 of `PUBLISH` until another client receives it, measured
 * with real Redis on loopback by `--nodes` (2.07 ms at 3 nodes, 2.16 ms at 10).
 * @default 2
 */
export const DEFAULT_BUS_DELAY_MS = 2;

/** What one node did; the cluster's total has the same fields. */
export interface NodeCounts {
  requests: number;
  l1Hits: number;
  /** Redis reads: one `GET` per L1 miss. A refresh of a value still in L1 goes to the source. */
  redisReads: number;
  l2Hits: number;
  /** Source loads, each one Redis write (script + `PUBLISH`). */
  sourceLoads: number;
  /**
   * Early expiries SmartCache's review made: each drops the key from L2 too and tells the other nodes, one
   * Redis write (script + `PUBLISH`) like a source load's.
   */
  deletes: number;
  staleReads: number;
  /** Keys this node dropped from L1 on another node's message. */
  invalidations: number;
}

export interface TraceNodesResult {
  policy: string;
  nodes: number;
  perNode: NodeCounts[];
  total: NodeCounts;
  /** Messages Redis delivered: each write's `PUBLISH` reaches all N subscribed nodes. */
  busDeliveries: number;
  wallMs: number;
}

interface L2Entry {
  value: OriginValue;
  /** Fresh until, simulated ms. */
  expiresAt: number;
  staleWhileRevalidateMs: number;
}

const zero = (): NodeCounts => ({
  requests: 0,
  l1Hits: 0,
  redisReads: 0,
  l2Hits: 0,
  sourceLoads: 0,
  deletes: 0,
  staleReads: 0,
  invalidations: 0,
});

export async function runTraceNodes(
  trace: Trace,
  policy: PolicyUnderTest,
  options: TraceNodesOptions,
): Promise<TraceNodesResult> {
  const { nodes, assign, busDelayMs, seed } = options;
  const started = performance.now();
  const clock = new ManualClock();
  const l2 = new Map<string, L2Entry>();
  const counts = Array.from({ length: nodes }, zero);
  const caches: MultiLevelCache<OriginValue>[] = [];
  const smarts: SmartCache<OriginValue>[] = [];
  // Per node, the L2 entry a fetch of each key found (undefined: it loaded from the source); read by the
  // node's `set`, which SmartCache calls after the fetch with the TTL its policy picked.
  const found = Array.from({ length: nodes }, () => new Map<string, L2Entry | undefined>());
  // Per node and key, until when L1 holds the key (its TTL and stale window), simulated ms: a fetch while it
  // does is a refresh, which goes to the source, not to L2.
  const held = Array.from({ length: nodes }, () => new Float64Array(trace.keys));
  const index = (name: string) => Number(name.slice(4));
  // Bus messages in flight, in delivery order (one fixed delay keeps them sorted).
  const busAt: number[] = [];
  const busKey: string[] = [];
  const busFrom: number[] = [];
  let busHead = 0;
  let busDeliveries = 0;
  const publish = (key: string, from: number) => {
    busAt.push(clock.now() + busDelayMs);
    busKey.push(key);
    busFrom.push(from);
  };
  // Each node's own `del`, which a bus message calls: it drops L1 only.
  const dels: ((key: string) => Promise<void>)[] = [];
  for (let n = 0; n < nodes; n++) {
    const cache = new MultiLevelCache<OriginValue>({
      l1: { maxEntries: trace.keys + 1, maxBytes: 1024 * 1024 * 1024 },
      disk: false,
      clock,
    });
    const set = cache.set.bind(cache);
    cache.set = (key, value, setOptions = {}) => {
      const now = clock.now();
      const hit = found[n]!.get(key);
      found[n]!.delete(key);
      if (hit !== undefined) {
        const ttlMs = Math.max(1, hit.expiresAt - now);
        held[n]![index(key)] = now + ttlMs + hit.staleWhileRevalidateMs;
        return set(key, value, { ttlMs, staleWhileRevalidateMs: hit.staleWhileRevalidateMs });
      }
      const ttlMs = setOptions.ttlMs ?? 0;
      held[n]![index(key)] = now + ttlMs + (setOptions.staleWhileRevalidateMs ?? 0);
      if (ttlMs > 0) {
        l2.set(key, {
          value,
          expiresAt: now + ttlMs,
          staleWhileRevalidateMs: setOptions.staleWhileRevalidateMs ?? 0,
        });
      }
      publish(key, n);
      return set(key, value, setOptions);
    };
    const del = cache.del.bind(cache);
    dels.push(del);
    cache.del = (key) => {
      counts[n]!.deletes++;
      held[n]![index(key)] = 0;
      l2.delete(key);
      publish(key, n);
      return del(key);
    };
    caches.push(cache);
    smarts.push(new SmartCache<OriginValue>(cache, { maxKeys: trace.keys, ...policy.options, clock }));
  }
  const next = trace.changes();
  const version = new Int32Array(trace.keys);
  const upcoming = new Float64Array(trace.keys).fill(Number.NaN);
  const names = Array.from({ length: trace.keys }, (_, k) => `key:${k}`);
  const random = mulberry32(seed ^ 0x5bd1e995);
  let now = 0;
  let key = 0;
  let node = 0;
  const fetcher = (): OriginValue => {
    const c = counts[node]!;
    const name = names[key]!;
    if (held[node]![key]! <= clock.now()) {
      c.redisReads++;
      const entry = l2.get(name);
      if (entry !== undefined && entry.expiresAt > clock.now()) {
        c.l2Hits++;
        found[node]!.set(name, entry);
        return entry.value;
      }
    }
    c.sourceLoads++;
    found[node]!.set(name, undefined);
    return { version: version[key]!, until: upcoming[key]! };
  };
  const { requestKeys, requestTimes } = trace;
  for (let i = 0; i < requestKeys.length; i++) {
    const t = requestTimes[i]!;
    while (busHead < busAt.length && busAt[busHead]! <= t) {
      const at = busAt[busHead]!;
      if (at > now) {
        await clock.advance(at - now);
        now = at;
      }
      const name = busKey[busHead]!;
      const from = busFrom[busHead]!;
      busHead++;
      busDeliveries += nodes;
      for (let n = 0; n < nodes; n++) {
        if (n === from) continue;
        counts[n]!.invalidations++;
        held[n]![index(name)] = 0;
        await dels[n]!(name);
      }
    }
    if (busHead > 65_536) {
      busAt.splice(0, busHead);
      busKey.splice(0, busHead);
      busFrom.splice(0, busHead);
      busHead = 0;
    }
    if (t > now) {
      await clock.advance(t - now);
      now = t;
    }
    node = assign === 'random' ? Math.floor(random() * nodes) : i % nodes;
    key = requestKeys[i]!;
    let u = upcoming[key]!;
    if (Number.isNaN(u)) u = next(key);
    while (u <= t) {
      version[key]!++;
      u = next(key);
    }
    upcoming[key] = u;
    const c = counts[node]!;
    c.requests++;
    const value = await smarts[node]!.getWithAdaptiveTTL(names[key]!, fetcher);
    if (value.version !== version[key]) c.staleReads++;
  }
  for (let n = 0; n < nodes; n++) {
    counts[n]!.l1Hits = smarts[n]!.stats().hits;
    await caches[n]!.close();
  }
  const total = zero();
  for (const c of counts) {
    for (const field of Object.keys(total) as (keyof NodeCounts)[]) total[field] += c[field];
  }
  return {
    policy: policy.name,
    nodes,
    perNode: counts,
    total,
    busDeliveries,
    wallMs: performance.now() - started,
  };
}

const fmt = (n: number, digits = 0) =>
  n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

/** One row per node and one for the cluster; counts per 1,000 of the row's requests. */
export function traceNodesTable(result: TraceNodesResult): string {
  const lines = [
    '| node | requests | L1 hit rate | L2 hits /1k | source loads /1k | stale reads /1k | Redis reads /1k | Redis writes /1k | bus /1k |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  const row = (name: string, c: NodeCounts, bus: number) => {
    const per = (n: number) => fmt((n / c.requests) * 1000, 1);
    const writes = c.sourceLoads + c.deletes;
    lines.push(
      `| ${name} | ${fmt(c.requests)} | ${fmt((c.l1Hits / c.requests) * 100, 2)} % | ${per(c.l2Hits)} | ${per(c.sourceLoads)} | ${per(c.staleReads)} | ${per(c.redisReads)} | ${per(writes)} | ${per(bus)} |`,
    );
  };
  result.perNode.forEach((c, n) => {
    row(String(n + 1), c, c.invalidations);
  });
  row('**all**', result.total, result.busDeliveries);
  return lines.join('\n');
}

export interface TraceNodesRun {
  nodes: number;
  assign: Assignment;
  busDelayMs: number | undefined;
  /** The command line printed with the figures. */
  command: string;
}

/** Prints one table per policy of `POLICIES`. Writes no file. */
export async function mainTraceNodes(options: TraceOptions, run: TraceNodesRun): Promise<void> {
  const started = performance.now();
  const trace = generateTrace(options);
  const busDelayMs = run.busDelayMs ?? DEFAULT_BUS_DELAY_MS;
  const sections: string[] = [];
  for (const policy of POLICIES) {
    const result = await runTraceNodes(trace, policy, {
      nodes: run.nodes,
      assign: run.assign,
      busDelayMs,
      seed: options.seed,
    });
    sections.push(
      `## ${policy.name}`,
      '',
      traceNodesTable(result),
      '',
      `${fmt(result.wallMs / 1000, 1)} s wall.`,
      '',
    );
  }
  const wall = (performance.now() - started) / 1000;
  console.log(
    [
      `# The trace across ${run.nodes === 1 ? 'one node' : `${run.nodes} nodes sharing one L2`}`,
      '',
      `Trace: ${describeTrace(options)}. Requests assigned ${run.assign === 'random' ? 'at random (seeded)' : 'round-robin'}; a source load's bus message reaches the other nodes ${busDelayMs} ms later. Per 1,000 of the row's requests; L1 hit rate and stale reads over its reads. Redis reads: one \`GET\` per L1 miss; Redis writes: one script and one \`PUBLISH\` per source load and per early expiry (which drops the key from L2 and every L1); bus: on a node's row, the messages of other nodes it applied, on the last row, the deliveries Redis makes (writes × ${run.nodes}, the writer's own included).`,
      '',
      ...sections,
      `Command: \`${run.command}\` (${machine()}); whole run ${fmt(wall, 1)} s wall, peak RSS ${fmt(process.resourceUsage().maxRSS / 1024, 0)} MB.`,
    ].join('\n'),
  );
}
