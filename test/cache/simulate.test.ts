import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  DEFAULT_TRACE,
  generateTrace,
  nodesTable,
  POLICIES,
  type PolicyResult,
  runNodes,
  runPolicy,
  simulate,
  svg,
  type Trace,
  table,
} from '../../bench/simulate.ts';
import { runTraceNodes, traceNodesTable } from '../../bench/simulate-nodes.ts';
import { type RedisServer, startRedis } from '../helpers/redis.ts';

/** One key read every second for 10 s; its origin value changes once, at 3.5 s. */
function tinyTrace(): Trace {
  const times = Float64Array.from({ length: 10 }, (_, i) => i * 1_000);
  return {
    keys: 1,
    requestKeys: new Int32Array(10),
    requestTimes: times,
    changes() {
      const schedule = [3_500];
      let next = 0;
      return () => schedule[next++] ?? Number.POSITIVE_INFINITY;
    },
  };
}

const small = { ...DEFAULT_TRACE, keys: 2_000, requests: 20_000, rate: 10 };

function withoutMachineFigures(results: PolicyResult[]) {
  return results.map(({ heapBytes: _heap, wallMs: _wall, ...rest }) => rest);
}

describe('stale reads are counted against the origin at the moment of each read', () => {
  it('a TTL longer than the trace serves every read after the change stale', async () => {
    const result = await runPolicy(tinyTrace(), { name: 'fixed 100 s', options: { policy: () => 100_000 } });
    assert.equal(result.originCalls, 1);
    assert.equal(result.hits, 9);
    // Reads at 4..9 s serve version 0 after the change at 3.5 s: 0.5 + 1.5 + ... + 5.5 stale seconds.
    assert.equal(result.staleReads, 6);
    assert.equal(result.staleSeconds, 18);
  });

  it('a 5 s TTL serves the reads at 4 s and 5 s stale, then refetches at 6 s', async () => {
    const result = await runPolicy(tinyTrace(), { name: 'fixed 5 s', options: { policy: () => 5_000 } });
    assert.equal(result.originCalls, 2);
    assert.equal(result.staleReads, 2);
    assert.equal(result.staleSeconds, 2);
  });
});

describe('stale-while-revalidate in the replay', () => {
  it('turns the refetch at 6 s into a hit served stale, and the refresh still costs an origin call', async () => {
    const result = await runPolicy(tinyTrace(), {
      name: 'fixed 5 s, stale-while-revalidate',
      options: { policy: () => 5_000, staleWhileRevalidateMs: 600_000 },
    });
    assert.equal(result.originCalls, 2);
    assert.equal(result.hits, 9, 'the read at 6 s is a hit');
    // Reads at 4, 5 and 6 s serve version 0; the refresh behind the read at 6 s brings version 1.
    assert.equal(result.staleReads, 3);
    assert.equal(result.staleSeconds, 0.5 + 1.5 + 2.5);
  });
});

describe('the simulation is deterministic', () => {
  it('the same seed gives identical results', async () => {
    const first = await simulate(generateTrace(small));
    const second = await simulate(generateTrace(small));
    assert.deepEqual(withoutMachineFigures(first), withoutMachineFigures(second));
  });

  it('another seed gives another trace', () => {
    const a = generateTrace(small);
    const b = generateTrace({ ...small, seed: small.seed + 1 });
    assert.notDeepEqual(a.requestKeys, b.requestKeys);
  });

  it('the trace has Zipf popularity: the most popular key is read far more than the median one', () => {
    const trace = generateTrace(small);
    const counts = new Int32Array(small.keys);
    for (const k of trace.requestKeys) counts[k]!++;
    assert.ok(counts[0]! > 50 * Math.max(1, counts[small.keys / 2]!));
  });
});

describe('change-aware TTL beats the hit-rate policy on staleness', () => {
  it('serves fewer stale reads on the small seeded trace', async () => {
    const results = await simulate(generateTrace(small));
    const hitRate = results.find((r) => r.policy === 'hit-rate (seed)')!;
    const changeAware = results.find((r) => r.policy === 'change-aware')!;
    assert.ok(
      changeAware.staleReads * 2 < hitRate.staleReads,
      `change-aware ${changeAware.staleReads} vs hit-rate ${hitRate.staleReads} stale reads`,
    );
    assert.equal(results.length, POLICIES.length);
    const markdown = table(results);
    for (const policy of POLICIES) assert.ok(markdown.includes(`| ${policy.name} |`));
    assert.match(svg(results, 'test'), /^<svg[^>]*>[\s\S]*<\/svg>\n$/);
  });
});

describe('three nodes sharing one Redis', () => {
  let redis: RedisServer;
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await redis.stop();
  });

  it('every write becomes visible on the other nodes, and the run reports each measure', async () => {
    const result = await runNodes(redis.url, 3, 20);
    assert.equal(result.busLatencyMs.length, 20);
    assert.equal(result.staleAfterWriteMs.length, 20);
    assert.equal(result.visibleAfterMs.length, 20);
    assert.ok(result.staleAfterWriteMs.every((ms) => ms >= 0));
    assert.match(nodesTable(result), /\| bus latency/);
  });
});

describe('the trace replayed across nodes sharing one L2', () => {
  const changeAware = POLICIES.find((p) => p.name === 'change-aware')!;
  const run = (nodes: number, assign: 'round-robin' | 'random' = 'round-robin') =>
    runTraceNodes(generateTrace(small), changeAware, { nodes, assign, busDelayMs: 2, seed: small.seed });

  it('one node gives the figures of the one-node replay', async () => {
    const one = await runPolicy(generateTrace(small), changeAware);
    const { total, busDeliveries } = await run(1);
    assert.equal(total.l1Hits, one.hits);
    assert.equal(total.sourceLoads, one.originCalls);
    assert.equal(total.staleReads, one.staleReads);
    assert.equal(total.l2Hits, 0);
    assert.equal(busDeliveries, total.sourceLoads + total.deletes);
  });

  it('every L1 miss is answered by L2 or the source, and each write reaches every node', async () => {
    const result = await run(3);
    const { total } = result;
    assert.equal(total.requests, small.requests);
    assert.equal(total.redisReads, total.requests - total.l1Hits);
    assert.equal(total.redisReads, total.l2Hits + total.sourceLoads);
    assert.ok(total.l2Hits > 0);
    assert.equal(result.busDeliveries, 3 * (total.sourceLoads + total.deletes));
    assert.equal(total.invalidations, 2 * (total.sourceLoads + total.deletes));
    assert.deepEqual(
      result.perNode.map((c) => c.requests),
      [6_667, 6_667, 6_666],
    );
    assert.match(traceNodesTable(result), /\| \*\*all\*\* \| 20,000 \|/);
  });

  it('a random assignment is deterministic by seed and spreads the requests', async () => {
    const [a, b] = [await run(3, 'random'), await run(3, 'random')];
    assert.deepEqual(a.perNode, b.perNode);
    for (const c of a.perNode) assert.ok(Math.abs(c.requests - small.requests / 3) < 500, `${c.requests}`);
  });
});
