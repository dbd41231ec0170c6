/**
 * The dashboard's feed on an injected clock: each point's rates are over the interval it measured, from the
 * feed's start (no first point that lumps everything before it), the history keeps the last five minutes,
 * a tenant's minute is its last sixty points, and spend is priced per tenant and model.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { Registry } from 'prom-client';
import { type GatewayCounts, noCounts } from '../../src/gateway/context.ts';
import { DASHBOARD_HISTORY, DashboardFeed, mergeSnapshots } from '../../src/gateway/dashboard.ts';

const counts = noCounts;

const feeds: DashboardFeed[] = [];
after(() => {
  for (const f of feeds) f.close();
});

function setup(before: Partial<GatewayCounts> = {}) {
  let now = 1_800_000_000_000;
  const c = { ...counts(), ...before };
  const feed = new DashboardFeed({
    counts: c,
    backpressure: { stats: () => ({ queued: 2 }) },
    batcherStats: () => ({ queued: 1 }),
    deployments: [],
    registry: new Registry(),
    limits: { rpm: 60 },
    prices: { m: { input: 1, cachedInput: 0.5, output: 2 } },
    // The timer never fires in a test: points are taken by tick().
    intervalMs: 3_600_000,
    clock: { now: () => now },
  });
  feeds.push(feed);
  /** One finished chat completion of `tenant`. */
  const record = (tenant: string, cache: 'hit' | 'miss', status = 200) => {
    if (cache === 'miss' && status < 400) c.upstreamCalls++;
    feed.record(
      {
        clawperf: {
          tenant,
          cache,
          recorded: status < 400,
          upstreamMs: cache === 'miss' ? 20 : 0,
          overheadMs: 1,
          answer: { usage: { prompt_tokens: 3, completion_tokens: 5 } },
          streamed: undefined,
        },
        routeOptions: { url: '/v1/chat/completions' },
        body: { model: 'm' },
      } as never,
      { statusCode: status } as never,
    );
  };
  const advance = (ms: number) => {
    now += ms;
  };
  return { feed, record, advance, counts: c };
}

describe('the dashboard feed', () => {
  it("takes its first point over the time since it started, not the gateway's whole past", async () => {
    const { feed, record, advance } = setup({ upstreamCalls: 500, rateLimited: 40 });
    for (let i = 0; i < 10; i++) record('team-a', 'miss');
    advance(2_000);
    await feed.tick();
    const [p] = feed.snapshot().points;
    assert.deepEqual(
      [
        p!.reqChat,
        p!.cacheMiss,
        p!.upstreamCalls,
        p!.limiterRejections,
        p!.tokensIn,
        p!.tokensOut,
        p!.queueDepth,
      ],
      [5, 5, 5, 0, 15, 25, 3],
    );
    // The histogram keeps three significant digits.
    assert.equal(Math.round(p!.upstreamP50Ms), 20);
    assert.ok(Math.abs(p!.spend - (10 * (3 * 1 + 5 * 2)) / 1e6 / 2) < 1e-12, String(p!.spend));
  });

  it('measures each rate over the interval it really covered', async () => {
    const { feed, record, advance } = setup();
    advance(1_000);
    await feed.tick();
    record('team-a', 'hit');
    advance(500);
    await feed.tick();
    const p = feed.snapshot().points.at(-1)!;
    assert.deepEqual([p.reqChat, p.cacheHit, p.savedByCache, p.tokensSavedByCache], [2, 2, 2, 16]);
  });

  it('keeps the last five minutes of points', async () => {
    const { feed, advance } = setup();
    for (let i = 0; i < DASHBOARD_HISTORY + 10; i++) {
      advance(1_000);
      await feed.tick();
    }
    const points = feed.snapshot().points;
    assert.equal(points.length, DASHBOARD_HISTORY);
    assert.ok(points.every((p, i) => i === 0 || p.t === points[i - 1]!.t + 1));
  });

  it("counts a tenant's last minute for its share of the limits, refusals left out", async () => {
    const { feed, record, advance } = setup();
    for (let i = 0; i < 5; i++) record('team-a', 'miss');
    record('team-a', 'miss', 429);
    advance(1_000);
    await feed.tick();
    assert.deepEqual(feed.snapshot().minute, [{ tenant: 'team-a', requests: 5, tokens: 40 }]);
    for (let i = 0; i < 70; i++) {
      advance(1_000);
      await feed.tick();
    }
    record('team-a', 'miss');
    advance(1_000);
    await feed.tick();
    assert.deepEqual(feed.snapshot().minute, [{ tenant: 'team-a', requests: 1, tokens: 8 }]);
    const row = feed.snapshot().usage[0]!;
    assert.deepEqual([row.requests, row.misses, row.rateLimited], [7, 6, 1]);
  });

  it('gives a snapshot that is plain JSON, and the merge of one snapshot is itself', async () => {
    const { feed, record, advance } = setup();
    record('team-a', 'miss');
    advance(1_000);
    await feed.tick();
    const snapshot = feed.snapshot();
    assert.deepEqual(JSON.parse(JSON.stringify(snapshot)), snapshot);
    assert.deepEqual(mergeSnapshots([snapshot]), snapshot);
  });

  it("shows the whole gateway's snapshot when given one: several processes' merged", async () => {
    const a = setup();
    const b = setup();
    a.record('team-a', 'miss');
    b.record('team-b', 'hit');
    a.advance(1_000);
    b.advance(1_000);
    await a.feed.tick();
    await b.feed.tick();
    const whole = new DashboardFeed({
      counts: counts(),
      backpressure: { stats: () => ({}) },
      batcherStats: () => ({}),
      deployments: [],
      registry: new Registry(),
      limits: undefined,
      prices: undefined,
      intervalMs: 3_600_000,
      gateway: async () => mergeSnapshots([a.feed.snapshot(), b.feed.snapshot()]),
    });
    feeds.push(whole);
    const snapshot = await whole.gatewaySnapshot();
    assert.equal(snapshot.processes, 2);
    assert.deepEqual(snapshot.usage.map((r) => r.tenant).sort(), ['team-a', 'team-b']);
    assert.equal(snapshot.points.at(-1)!.reqChat, 2);
  });
});
