import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DEFAULT_TRACE, generateTrace, runPolicy } from '../../bench/simulate.ts';
import { boundPolicies, expectedCostTtl } from '../../bench/simulate-bounds.ts';

describe('the bounds the change-aware policy is measured against', () => {
  it('a rarely read key with a known change rate keeps its value until it has changed with odds 1/cost', () => {
    const rate = 1 / 600_000;
    const ttl = expectedCostTtl([rate], [1], 1e-12, 7);
    assert.ok(Math.abs(-Math.expm1(-rate * ttl) - 1 / 7) < 1e-6, `${ttl} ms`);
  });

  it("a policy told every key's change rate serves fewer stale reads at a higher hit rate", async () => {
    const trace = generateTrace({ ...DEFAULT_TRACE, keys: 2_000, requests: 20_000, rate: 10 });
    const rows = boundPolicies(trace).map((row) => row());
    const shipped = await runPolicy(trace, rows.find((r) => r.name === 'change-aware')!);
    const oracle = await runPolicy(trace, rows.find((r) => r.name === 'oracle, staleReadCost 7')!);
    assert.ok(oracle.staleReads < shipped.staleReads, `${oracle.staleReads} < ${shipped.staleReads}`);
    assert.ok(oracle.hitRate > shipped.hitRate, `${oracle.hitRate} > ${shipped.hitRate}`);
  });
});
