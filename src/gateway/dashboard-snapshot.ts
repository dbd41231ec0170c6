/**
 * What the dashboard shows, as plain JSON: the recent history of points (one a second) and the tables (per
 * tenant and model, per tenant's last minute, per deployment). Several processes serving one port each
 * make a snapshot of their own; {@link mergeSnapshots} makes the gateway's from them, so the page reads the
 * same shape from one process or many.
 *
 * @module
 */

/** One second of the gateway, a point of every chart. Rates are per second over the real interval. */
export interface DashboardPoint {
  /** Unix seconds at the end of the interval. */
  t: number;
  reqChat: number;
  reqEmbeddings: number;
  reqMessages: number;
  reqResponses: number;
  reqOther: number;
  cacheHit: number;
  cacheMiss: number;
  cacheCoalesced: number;
  cacheBypass: number;
  /** The gateway's own time of the requests finished in the interval, ms. */
  overheadP50Ms: number;
  overheadP99Ms: number;
  /** Time waiting for the upstream, of the requests that waited for it, ms. */
  upstreamP50Ms: number;
  upstreamP99Ms: number;
  tokensIn: number;
  tokensOut: number;
  upstreamCalls: number;
  /** Upstream calls a request did not make: answered from the cache, or by another request's call. */
  savedByCache: number;
  savedByCoalescing: number;
  tokensSavedByCache: number;
  tokensSavedByCoalescing: number;
  limiterRejections: number;
  /** Calls waiting for an upstream slot or an embedding batch, at the end of the interval. */
  queueDepth: number;
  eventLoopP99Ms: number;
  heapUsedMb: number;
  /** Spend per second at the configured prices; 0 without prices. */
  spend: number;
}

/** Fields of a point that merge by taking the largest (a percentile is not a sum); the rest add up. */
export const MAX_FIELDS: ReadonlySet<keyof DashboardPoint> = new Set([
  'overheadP50Ms',
  'overheadP99Ms',
  'upstreamP50Ms',
  'upstreamP99Ms',
  'eventLoopP99Ms',
]);

/** Counts since start of one tenant on one model. */
export interface UsageRow {
  tenant: string;
  model: string;
  requests: number;
  hits: number;
  misses: number;
  coalesced: number;
  bypass: number;
  /** Successful answers of routes that do not use the cache (token counting, model lists). */
  other: number;
  /** Answers of status 429, the gateway's limits' and the upstream's. */
  rateLimited: number;
  /** Other answers of status 400 and above. */
  errors: number;
  /** Tokens of answers the provider produced for this tenant (a cached answer costs none). */
  tokensIn: number;
  tokensOut: number;
  tokensSavedByCache: number;
  tokensSavedByCoalescing: number;
  /** Input tokens the provider read from its prompt cache, wrote to it, and did not cache. */
  promptRead: number;
  promptWrite: number;
  promptUncached: number;
  /** Sessions whose prompt prefix changed (`clawperf_gateway_prompt_cache_breaks_total`). */
  promptBreaks: number;
  /** At the configured prices; 0 without them. */
  spend: number;
  savedByCache: number;
  savedByCoalescing: number;
  savedByPromptCache: number;
}

/** The numeric fields of a usage row. */
export type UsageCounts = Omit<UsageRow, 'tenant' | 'model'>;

/** What a tenant used of its limits in the last minute. */
export interface TenantMinute {
  tenant: string;
  requests: number;
  tokens: number;
}

/** One deployment now. */
export interface DeploymentRow {
  name: string;
  api: string;
  /** `closed` (healthy), `half-open` (probing) or `open` (refusing calls). */
  circuit: string;
  inFlight: number;
  concurrencyLimit: number;
  /** The smallest of its keys' remaining request and token budgets; -1 while unknown. */
  pacingRequests: number;
  pacingTokens: number;
  pacingQueued: number;
  /** Moving average of its answers' latency, ms. */
  latencyMs: number;
  calls: number;
  /** Failed calls by kind (`rate_limited`, `server_error`, `timeout`, ...). */
  failures: Record<string, number>;
}

/** Everything the dashboard page shows. */
export interface DashboardSnapshot {
  /** Oldest first, one a second, the last few minutes. */
  points: DashboardPoint[];
  usage: UsageRow[];
  minute: TenantMinute[];
  deployments: DeploymentRow[];
  /** The per-tenant limits, per minute. */
  limits: { rpm?: number; tpm?: number };
  /** Whether prices are configured (spend and savings are counted). */
  priced: boolean;
  /** Processes whose snapshots this is. */
  processes: number;
}

function addInto<T extends object>(into: T, from: T): void {
  const a = into as Record<string, unknown>;
  for (const [k, v] of Object.entries(from)) if (typeof v === 'number') a[k] = ((a[k] as number) ?? 0) + v;
}

/**
 * The whole gateway's snapshot from its processes' snapshots: points of the same second merged (rates,
 * counts, queues and heaps add up; percentiles take the largest), usage rows of the same tenant and model
 * added, tenants' minutes added, and each deployment's row merged across processes (calls, failures, calls
 * in flight, queues and concurrency limits add up; a circuit open in any process shows; the pacing budget,
 * shared on Redis, is the smallest seen; the latency the largest). Pure: the inputs are not changed.
 */
export function mergeSnapshots(snapshots: readonly DashboardSnapshot[]): DashboardSnapshot {
  const first = snapshots[0];
  if (snapshots.length === 1 && first !== undefined) return first;
  const points = new Map<number, DashboardPoint>();
  const usage = new Map<string, UsageRow>();
  const minute = new Map<string, TenantMinute>();
  const deployments = new Map<string, DeploymentRow>();
  let processes = 0;
  for (const s of snapshots) {
    processes += s.processes;
    for (const p of s.points) {
      const at = points.get(p.t);
      if (at === undefined) {
        points.set(p.t, { ...p });
        continue;
      }
      const merged = at as unknown as Record<string, number>;
      for (const [k, v] of Object.entries(p) as [keyof DashboardPoint, number][]) {
        if (k === 't') continue;
        merged[k] = MAX_FIELDS.has(k) ? Math.max(merged[k] ?? 0, v) : (merged[k] ?? 0) + v;
      }
    }
    for (const row of s.usage) {
      const id = `${row.tenant}\u0000${row.model}`;
      const at = usage.get(id);
      if (at === undefined) usage.set(id, { ...row });
      else addInto(at, row);
    }
    for (const m of s.minute) {
      const at = minute.get(m.tenant);
      if (at === undefined) minute.set(m.tenant, { ...m });
      else addInto(at, m);
    }
    for (const d of s.deployments) {
      const at = deployments.get(d.name);
      if (at === undefined) {
        deployments.set(d.name, { ...d, failures: { ...d.failures } });
        continue;
      }
      at.circuit =
        at.circuit === 'open' || d.circuit === 'open'
          ? 'open'
          : at.circuit === 'half-open'
            ? at.circuit
            : d.circuit;
      at.inFlight += d.inFlight;
      at.concurrencyLimit += d.concurrencyLimit;
      at.pacingRequests = smallestKnown(at.pacingRequests, d.pacingRequests);
      at.pacingTokens = smallestKnown(at.pacingTokens, d.pacingTokens);
      at.pacingQueued += d.pacingQueued;
      at.latencyMs = Math.max(at.latencyMs, d.latencyMs);
      at.calls += d.calls;
      for (const [kind, n] of Object.entries(d.failures)) at.failures[kind] = (at.failures[kind] ?? 0) + n;
    }
  }
  return {
    points: [...points.values()].sort((a, b) => a.t - b.t),
    usage: [...usage.values()],
    minute: [...minute.values()],
    deployments: [...deployments.values()],
    limits: first?.limits ?? {},
    priced: first?.priced ?? false,
    processes,
  };
}

/** The smaller of two budgets, where -1 means unknown. */
function smallestKnown(a: number, b: number): number {
  if (a < 0) return b;
  if (b < 0) return a;
  return Math.min(a, b);
}
