/**
 * The router over a model's deployments, itself an {@link Upstream}. A call goes to the lowest priority
 * that has a usable deployment (its circuit lets calls through); among those, two are drawn by weight and
 * the second is taken only when its expected latency (its latency average times its calls in flight plus
 * one) is clearly lower (under 80 % of the first's, and by 2 ms or more), so equally fast deployments share the traffic by weight
 * and a slow or busy one gets less.
 *
 * Before the first byte of an answer, a failure moves the call on: a 429 to the deployment's next key,
 * anything retryable (a 429, a 5xx, a connection error, a timeout, an open circuit, a full queue) to
 * another deployment of the same priority, then to the next priority, within an attempt budget. When every
 * deployment was tried and budget is left, the best is tried again after a backoff (or the upstream's
 * `Retry-After`, up to 10 s). A stream's failure after its first byte is the tap's: never replayed. A call
 * pinned to a deployment and key (a stored response's) goes there alone.
 *
 * @module
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import {
  CircuitOpenError,
  OverloadedError,
  QueueTimeoutError,
  RateLimitedError,
  TimeoutError,
  UpstreamError,
} from '../errors.ts';
import { delay } from './delay.ts';
import type { Deployment } from './deployment.ts';
import type {
  Api,
  CallOptions,
  Upstream,
  UpstreamIdentity,
  UpstreamReply,
  UpstreamRequest,
} from './upstream-interface.ts';

/** First backoff before trying a tried deployment again, ms (doubled each round, with jitter). */
const RETRY_BASE_MS = 100;
/** How much lower a deployment's expected latency must be to win over the first one drawn. */
const CLEARLY_FASTER = 0.8;
/** ...and by at least this much, ms: below it, differences are noise. */
const CLEARLY_FASTER_MS = 2;
/** Longest wait for a `Retry-After` before giving up, ms. */
const MAX_RETRY_AFTER_MS = 10_000;

/** What kind of failure moves a call on; undefined for one that does not (a 4xx answer, an abort). */
export function failureKind(error: unknown): string | undefined {
  if (error instanceof UpstreamError) {
    if (error.status === 429) return 'rate_limited';
    if (error.status === undefined) return 'unreachable';
    return error.status >= 500 ? 'server_error' : undefined;
  }
  // The key's budget is spent (its pacer would wait too long): the next key or deployment may have room.
  if (error instanceof RateLimitedError) return 'rate_limited';
  if (error instanceof TimeoutError) return 'timeout';
  if (error instanceof CircuitOpenError) return 'circuit_open';
  if (error instanceof OverloadedError || error instanceof QueueTimeoutError) return 'overloaded';
  return undefined;
}

/** Options of {@link DeploymentRouter}. */
export interface DeploymentRouterOptions {
  /**
   * Attempts a call may make beyond one per deployment and key serving it. A model served by one single
   * upstream (which retries by itself) gets one attempt.
   */
  retries: number;
  registry: Registry;
  /** Random numbers in [0, 1), for the weighted draws. @default Math.random */
  random?: () => number;
}

export class DeploymentRouter implements Upstream {
  readonly deployments: readonly Deployment[];
  readonly #retries: number;
  readonly #random: () => number;
  readonly #requests: Counter;
  readonly #failures: Counter;
  readonly #fallbacks: Counter;
  readonly #duration: Histogram;

  constructor(deployments: readonly Deployment[], options: DeploymentRouterOptions) {
    this.deployments = deployments;
    this.#retries = options.retries;
    this.#random = options.random ?? Math.random;
    const registers = [options.registry];
    this.#requests = new Counter({
      name: 'clawperf_gateway_deployment_requests_total',
      help: 'Calls sent to each deployment',
      labelNames: ['deployment'],
      registers,
    });
    this.#failures = new Counter({
      name: 'clawperf_gateway_deployment_failures_total',
      help: 'Failed calls of each deployment, by kind',
      labelNames: ['deployment', 'kind'],
      registers,
    });
    this.#fallbacks = new Counter({
      name: 'clawperf_gateway_deployment_fallbacks_total',
      help: 'Calls moved on from each deployment after a failure',
      labelNames: ['deployment'],
      registers,
    });
    this.#duration = new Histogram({
      name: 'clawperf_gateway_deployment_duration_seconds',
      help: "Time to each deployment's answer (a stream: to its first byte)",
      labelNames: ['deployment'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
    const self = this;
    new Gauge({
      name: 'clawperf_gateway_deployment_in_flight',
      help: 'Calls in flight at each deployment',
      labelNames: ['deployment'],
      registers,
      collect() {
        for (const d of self.deployments) this.set({ deployment: d.name }, d.inFlight);
      },
    });
    new Gauge({
      name: 'clawperf_gateway_deployment_concurrency_limit',
      help: "Each deployment's concurrency limit now (it moves when adaptive)",
      labelNames: ['deployment'],
      registers,
      collect() {
        for (const d of self.deployments) this.set({ deployment: d.name }, d.limit.stats().limit);
      },
    });
    new Gauge({
      name: 'clawperf_gateway_deployment_pacing_remaining',
      help: "What the provider's headers (or providerLimits) leave of each key's quota; -1 while unknown",
      labelNames: ['deployment', 'key', 'quota'],
      registers,
      collect() {
        for (const d of self.deployments) {
          d.pacers.forEach((p, key) => {
            const s = p.stats?.();
            if (s === undefined) return;
            const labels = { deployment: d.name, key: String(key) };
            this.set({ ...labels, quota: 'requests' }, s.remainingRequests);
            this.set({ ...labels, quota: 'tokens' }, s.remainingTokens);
          });
        }
      },
    });
    new Gauge({
      name: 'clawperf_gateway_deployment_pacing_queued',
      help: "Calls waiting for budget of each deployment's keys",
      labelNames: ['deployment'],
      registers,
      collect() {
        for (const d of self.deployments) {
          let queued = 0;
          for (const p of d.pacers) queued += p.stats?.().queued ?? 0;
          this.set({ deployment: d.name }, queued);
        }
      },
    });
    new Gauge({
      name: 'clawperf_gateway_deployment_circuit_open',
      help: "1 while a deployment's circuit refuses calls",
      labelNames: ['deployment'],
      registers,
      collect() {
        for (const d of self.deployments) this.set({ deployment: d.name }, d.usable ? 0 : 1);
      },
    });
  }

  /** The deployments serving `model` in `api`. */
  servers(api: Api, model: string): Deployment[] {
    return this.deployments.filter((d) => d.serves(api, model));
  }

  /** Whether some deployment serves `model` in `api`. */
  serves(api: Api, model: string): boolean {
    return this.deployments.some((d) => d.serves(api, model));
  }

  identity(call: Pick<UpstreamRequest, 'api' | 'model'>): UpstreamIdentity {
    const d = this.deployments.find((x) => x.serves(call.api, call.model));
    return d?.identity() ?? { provider: call.api };
  }

  async call(request: UpstreamRequest, options: CallOptions = {}): Promise<UpstreamReply> {
    const { signal } = options;
    if (request.pin !== undefined) {
      const pinned = this.deployments.find((d) => d.name === request.pin!.deployment);
      if (pinned === undefined)
        throw new UpstreamError(`the deployment ${request.pin.deployment} is gone`, {});
      return this.#attempt(pinned, request.pin.key, request, signal);
    }
    const servers = this.servers(request.api, request.model);
    let attempts = this.#retries;
    for (const d of servers) attempts += d.keys;
    // A single upstream retries by itself.
    if (servers.length === 1 && servers[0]!.config.models === undefined) attempts = 1;
    const tried = new Set<Deployment>();
    const keysTried = new Map<Deployment, number>();
    let current: Deployment | undefined;
    let failure: unknown;
    for (let attempt = 0; attempt < attempts; attempt++) {
      signal?.throwIfAborted();
      let next = current;
      if (next === undefined) {
        // With every circuit open, the call goes to one of them anyway: its refusal says when to retry.
        next =
          this.#choose(servers, tried) ??
          (failure === undefined ? this.#choose(servers, tried, true) : undefined);
        if (next === undefined) {
          // Every deployment was tried: the best again, after a backoff or the upstream's Retry-After.
          // Every key's pacing budget is spent beyond the wait a call may take: the client hears when it
          // comes back (a 429 with Retry-After) instead of holding its place here.
          if (failure instanceof RateLimitedError) break;
          tried.clear();
          keysTried.clear();
          next = this.#choose(servers, tried);
          if (next === undefined) break;
          const retryAfter = (failure as { retryAfterMs?: number } | undefined)?.retryAfterMs;
          const wait = retryAfter ?? RETRY_BASE_MS * 2 ** Math.min(attempt, 6) * (0.5 + this.#random() / 2);
          if (wait > MAX_RETRY_AFTER_MS) break;
          await delay(wait, signal);
        }
      }
      current = undefined;
      const key = next.nextKey();
      try {
        const reply = await this.#attempt(next, key, request, signal);
        return reply;
      } catch (error) {
        const kind = failureKind(error);
        if (kind === undefined || signal?.aborted === true) throw error;
        failure = error;
        this.#failures.labels({ deployment: next.name, kind }).inc();
        this.#fallbacks.labels({ deployment: next.name }).inc();
        const keys = (keysTried.get(next) ?? 0) + 1;
        keysTried.set(next, keys);
        // A 429 is the key's: the deployment's next key may have room.
        if (kind === 'rate_limited' && keys < next.keys) current = next;
        else tried.add(next);
      }
    }
    throw failure ?? new UpstreamError(`no deployment serves ${request.model}`, {});
  }

  async #attempt(
    deployment: Deployment,
    key: number,
    request: UpstreamRequest,
    signal: AbortSignal | undefined,
  ): Promise<UpstreamReply> {
    this.#requests.labels({ deployment: deployment.name }).inc();
    const end = this.#duration.labels({ deployment: deployment.name }).startTimer();
    try {
      const reply = await deployment.call(request, key, signal);
      return { ...reply, deployment: deployment.name, key };
    } finally {
      end();
    }
  }

  /**
   * The deployment to try: of the lowest priority with an untried usable one, the better of two drawn by
   * weight (expected latency: its average times its calls in flight plus one).
   */
  #choose(
    servers: readonly Deployment[],
    tried: ReadonlySet<Deployment>,
    evenUnusable = false,
  ): Deployment | undefined {
    let best: Deployment[] = [];
    let priority = Number.POSITIVE_INFINITY;
    for (const d of servers) {
      if (tried.has(d) || !(d.usable || evenUnusable)) continue;
      if (d.config.priority < priority) {
        priority = d.config.priority;
        best = [d];
      } else if (d.config.priority === priority) best.push(d);
    }
    if (best.length <= 1) return best[0];
    const a = this.#draw(best);
    const b = this.#draw(best);
    const cost = (d: Deployment) => (d.latencyMs || 1) * (d.inFlight + 1);
    // Latencies within a fifth (or 2 ms) of each other are equal: the weighted draw decides, so noise (or
    // the warmer connections of the busier one) does not tilt the split.
    const [ca, cb] = [cost(a), cost(b)];
    return cb < ca * CLEARLY_FASTER && ca - cb > CLEARLY_FASTER_MS ? b : a;
  }

  #draw(group: readonly Deployment[]): Deployment {
    let total = 0;
    for (const d of group) total += d.config.weight;
    let r = this.#random() * total;
    for (const d of group) {
      r -= d.config.weight;
      if (r < 0) return d;
    }
    return group[group.length - 1]!;
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.deployments.map((d) => d.close()));
  }
}
