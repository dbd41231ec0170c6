/**
 * mergeSnapshots: the dashboard of several processes serving one port is the merge of their snapshots,
 * which are plain JSON (they cross process boundaries as messages).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { mergeSnapshots } from '../../src/gateway/dashboard.ts';
import type {
  DashboardPoint,
  DashboardSnapshot,
  DeploymentRow,
  UsageRow,
} from '../../src/gateway/dashboard-snapshot.ts';

const ZERO: Omit<DashboardPoint, 't'> = {
  reqChat: 0,
  reqEmbeddings: 0,
  reqMessages: 0,
  reqResponses: 0,
  reqOther: 0,
  cacheHit: 0,
  cacheMiss: 0,
  cacheCoalesced: 0,
  cacheBypass: 0,
  overheadP50Ms: 0,
  overheadP99Ms: 0,
  upstreamP50Ms: 0,
  upstreamP99Ms: 0,
  tokensIn: 0,
  tokensOut: 0,
  upstreamCalls: 0,
  savedByCache: 0,
  savedByCoalescing: 0,
  tokensSavedByCache: 0,
  tokensSavedByCoalescing: 0,
  limiterRejections: 0,
  queueDepth: 0,
  eventLoopP99Ms: 0,
  heapUsedMb: 0,
  spend: 0,
};

const point = (t: number, p: Partial<DashboardPoint>): DashboardPoint => ({ ...ZERO, t, ...p });

const row = (tenant: string, model: string, r: Partial<UsageRow>): UsageRow => ({
  tenant,
  model,
  requests: 0,
  hits: 0,
  misses: 0,
  coalesced: 0,
  bypass: 0,
  other: 0,
  rateLimited: 0,
  errors: 0,
  tokensIn: 0,
  tokensOut: 0,
  tokensSavedByCache: 0,
  tokensSavedByCoalescing: 0,
  promptRead: 0,
  promptWrite: 0,
  promptUncached: 0,
  promptBreaks: 0,
  spend: 0,
  savedByCache: 0,
  savedByCoalescing: 0,
  savedByPromptCache: 0,
  ...r,
});

const deployment = (d: Partial<DeploymentRow>): DeploymentRow => ({
  name: 'east',
  api: 'openai',
  circuit: 'closed',
  inFlight: 0,
  concurrencyLimit: 10,
  pacingRequests: -1,
  pacingTokens: -1,
  pacingQueued: 0,
  latencyMs: 0,
  calls: 0,
  failures: {},
  ...d,
});

const snapshot = (s: Partial<DashboardSnapshot>): DashboardSnapshot => ({
  points: [],
  usage: [],
  minute: [],
  deployments: [],
  limits: { rpm: 60 },
  priced: true,
  processes: 1,
  ...s,
});

describe('mergeSnapshots', () => {
  const a = snapshot({
    points: [
      point(100, { reqChat: 5, overheadP99Ms: 2, heapUsedMb: 50 }),
      point(101, { reqChat: 6, overheadP99Ms: 9, queueDepth: 1 }),
    ],
    usage: [row('team-a', 'm', { requests: 10, hits: 4, tokensIn: 100, spend: 0.5 })],
    minute: [{ tenant: 'team-a', requests: 10, tokens: 100 }],
    deployments: [deployment({ calls: 7, pacingRequests: 40, failures: { timeout: 1 }, latencyMs: 80 })],
  });
  const b = snapshot({
    points: [
      point(101, { reqChat: 4, overheadP99Ms: 3, queueDepth: 2 }),
      point(102, { reqChat: 1, heapUsedMb: 60 }),
    ],
    usage: [
      row('team-a', 'm', { requests: 5, misses: 5, tokensIn: 50, spend: 0.25 }),
      row('team-b', 'm', { requests: 1, rateLimited: 1 }),
    ],
    minute: [
      { tenant: 'team-a', requests: 5, tokens: 50 },
      { tenant: 'team-b', requests: 0, tokens: 0 },
    ],
    deployments: [
      deployment({
        circuit: 'open',
        calls: 3,
        pacingRequests: 35,
        failures: { timeout: 2, server_error: 1 },
        latencyMs: 120,
      }),
    ],
  });
  const merged = mergeSnapshots([a, b]);

  it('adds the rates of one second and takes the larger percentile', () => {
    assert.deepEqual(
      merged.points.map((p) => [p.t, p.reqChat, p.overheadP99Ms, p.queueDepth, p.heapUsedMb]),
      [
        [100, 5, 2, 0, 50],
        [101, 10, 9, 3, 0],
        [102, 1, 0, 0, 60],
      ],
    );
  });

  it("adds each tenant's counts per model and its last minute", () => {
    const teamA = merged.usage.find((r) => r.tenant === 'team-a')!;
    assert.deepEqual(
      [teamA.requests, teamA.hits, teamA.misses, teamA.tokensIn, teamA.spend],
      [15, 4, 5, 150, 0.75],
    );
    assert.equal(merged.usage.find((r) => r.tenant === 'team-b')!.rateLimited, 1);
    assert.deepEqual(merged.minute, [
      { tenant: 'team-a', requests: 15, tokens: 150 },
      { tenant: 'team-b', requests: 0, tokens: 0 },
    ]);
  });

  it('shows a circuit open in any process, the smallest shared pacing budget, and adds calls and failures', () => {
    assert.deepEqual(merged.deployments, [
      deployment({
        circuit: 'open',
        calls: 10,
        concurrencyLimit: 20,
        pacingRequests: 35,
        failures: { timeout: 3, server_error: 1 },
        latencyMs: 120,
      }),
    ]);
    assert.equal(merged.processes, 2);
  });

  it('leaves its inputs unchanged and survives a JSON round trip', () => {
    assert.equal(a.points[1]!.reqChat, 6);
    assert.equal(a.usage[0]!.requests, 10);
    assert.deepEqual(a.deployments[0]!.failures, { timeout: 1 });
    const again = mergeSnapshots([JSON.parse(JSON.stringify(a)), JSON.parse(JSON.stringify(b))]);
    assert.deepEqual(again, merged);
  });
});
