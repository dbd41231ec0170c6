/**
 * Provider pacing shared by every node that calls a provider with one key: the budget the provider's
 * headers report (and any configured limit) lives in Redis, and each decision is one script run there
 * (see pacing-lua.ts), so N gateway nodes sharing a key never send more than the provider allows. Callers
 * of one process wait in a local FIFO whose head alone asks Redis again: at the reset the budget's clock
 * gives, or after a short poll while only answers (of any node) can free budget.
 *
 * Redis is a dependency, not a single point of failure: while it cannot answer, the process paces with
 * its own {@link OutboundLimiter} from the same headers.
 *
 * @example
 * const pacer = new SharedOutboundLimiter({ redis: 'redis://127.0.0.1:6379', key: 'openai-a/key-1' });
 * const permit = await pacer.acquire({ tokens: 1200 });
 * permit.done({ status: res.statusCode, headers: res.headers });
 */
import { createHash, randomBytes } from 'node:crypto';
import { ClosedError, RateLimitedError } from '../errors.ts';
import * as check from '../internal/options.ts';
import {
  hashTag,
  type OwnedRedis,
  REDIS_FIRST_CONNECTION_WAIT_MS,
  type RedisInput,
  RedisScript,
  releaseRedis,
  toRedis,
  whenConnected,
} from '../internal/redis.ts';
import { Ring } from '../internal/ring.ts';
import {
  cooldownMs,
  endWait,
  type OutboundWaiter,
  outboundWaiter,
  runUnderPermit,
} from './outbound-waiter.ts';
import {
  DEFAULT_OUTBOUND_COOLDOWN_JITTER_RATIO,
  DEFAULT_OUTBOUND_MAX_QUEUE,
  DEFAULT_OUTBOUND_MAX_WAIT_MS,
  DEFAULT_OUTBOUND_RESET_MS,
  type HeadersLike,
  type OutboundAcquireOptions,
  OutboundLimiter,
  type OutboundLimiterOptions,
  type OutboundPermit,
  type ProviderLimits,
  type ProviderQuota,
  parseRateLimitHeaders,
} from './provider-limits.ts';
import { PACING_LUA } from './stores/pacing-lua.ts';

const script = new RedisScript(PACING_LUA);
/** This process's lease ids: unique across the nodes sharing a key, and the limiters of one process. */
const LEASE_PREFIX = `${randomBytes(6).toString('hex')}-`;
let leases = 0;

/** Longest a call's budget is held for a node that never reports how it ended, ms. @default 120000 */
export const DEFAULT_PACING_LEASE_MS = 120_000;
/** How often the first waiting caller asks again while only answers can free budget, ms. @default 25 */
export const DEFAULT_PACING_POLL_MS = 25;
/** How long calls to a provider that reports no quota go without asking Redis, ms (then one asks again). */
const UNREPORTED_REFRESH_MS = 1_000;

export interface SharedOutboundLimiterOptions extends OutboundLimiterOptions {
  /** The Redis shared by the nodes: a client (left open) or a `redis://` URL (closed by `close()`). */
  redis: RedisInput;
  /**
   * What the nodes call the provider key (the same on every node; hashed, so a secret may be given).
   */
  key: string;
  /** @default 'clawperf:pace' */
  keyPrefix?: string;
  /** Longest a call's budget is held for a node that never reports how it ended, ms. @default 120000 */
  leaseMs?: number;
  /** How often the first waiting caller asks again while only answers can free budget, ms. @default 25 */
  pollMs?: number;
}

/** What a permit's `done` is told: the call's answer, or nothing for a call that failed without one. */
type Answer = Parameters<OutboundPermit['done']>[0];

/** A decision of the script: a lease of budget, or how long to wait (0: until an answer frees some). */
interface Decision {
  lease: string | undefined;
  waitMs: number;
}

/** A reported quota as the script's three arguments ('' where not reported). */
function quotaArgs(q: ProviderQuota | undefined): (string | number)[] {
  return [q?.limit ?? '', q?.remaining ?? '', q?.resetMs === undefined ? '' : Math.ceil(q.resetMs)];
}

/** One provider key's pacing, shared on Redis by every node that uses the key. */
export class SharedOutboundLimiter {
  readonly statsCounters: readonly string[] = [
    'dispatched',
    'waited',
    'rejected',
    'limitedResponses',
    'redisFailures',
  ];
  readonly #redis: OwnedRedis;
  readonly #keys: [string, string, string, string];
  readonly #local: OutboundLimiter;
  readonly #maxWaitMs: number;
  readonly #defaultResetMs: number;
  readonly #maxQueue: number;
  readonly #jitterRatio: number;
  readonly #random: () => number;
  readonly #learning: () => number;
  readonly #requestsLimit: number;
  readonly #tokensLimit: number;
  readonly #windowMs: number;
  readonly #leaseMs: number;
  readonly #pollMs: number;
  readonly #queue = new Ring<OutboundWaiter>();
  #waiting = 0;
  #pumping = false;
  #connecting: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  #closed = false;
  #inFlight = 0;
  #lastWaitMs = 0;
  /** Until when (performance.now()) calls go without asking Redis: the provider reports no quota. */
  #unreportedUntil = 0;
  /** Until when (performance.now()) the last refusal said to wait. */
  #waitUntil = 0;
  #remainingRequests = -1;
  #remainingTokens = -1;
  #dispatched = 0;
  #waited = 0;
  #rejected = 0;
  #limitedResponses = 0;
  #redisFailures = 0;

  constructor(options: SharedOutboundLimiterOptions) {
    const o = check.object<SharedOutboundLimiterOptions>('options', options);
    this.#redis = toRedis('options.redis', o.redis);
    const id = check.string('options.key', o.key);
    const prefix =
      o.keyPrefix === undefined ? 'clawperf:pace' : check.string('options.keyPrefix', o.keyPrefix);
    const tag = hashTag(createHash('sha256').update(id).digest('hex').slice(0, 24));
    this.#keys = [
      `${prefix}:${tag}`,
      `${prefix}:${tag}:leases`,
      `${prefix}:${tag}:rtail`,
      `${prefix}:${tag}:ttail`,
    ];
    this.#local = new OutboundLimiter(o);
    this.#maxWaitMs = o.maxWaitMs ?? DEFAULT_OUTBOUND_MAX_WAIT_MS;
    this.#defaultResetMs = o.defaultResetMs ?? DEFAULT_OUTBOUND_RESET_MS;
    this.#maxQueue = o.maxQueue ?? DEFAULT_OUTBOUND_MAX_QUEUE;
    this.#jitterRatio = o.cooldownJitterRatio ?? DEFAULT_OUTBOUND_COOLDOWN_JITTER_RATIO;
    this.#random = o.random ?? Math.random;
    const learning = o.learningConcurrency ?? 1;
    this.#learning = typeof learning === 'function' ? learning : () => learning;
    this.#requestsLimit = o.limits?.requests ?? 0;
    this.#tokensLimit = o.limits?.tokens ?? 0;
    this.#windowMs = o.limits?.windowMs ?? 60_000;
    this.#leaseMs = check.integer('options.leaseMs', o.leaseMs ?? DEFAULT_PACING_LEASE_MS, 1);
    this.#pollMs = check.integer('options.pollMs', o.pollMs ?? DEFAULT_PACING_POLL_MS, 1);
  }

  /** Waits for budget (FIFO within the process), then holds it until the permit's `done`. */
  async acquire(options: OutboundAcquireOptions = {}): Promise<OutboundPermit> {
    if (this.#closed) throw new ClosedError('SharedOutboundLimiter');
    const tokens = options.tokens === undefined ? 0 : check.number('options.tokens', options.tokens);
    const signal = options.signal;
    signal?.throwIfAborted();
    if (this.#waiting === 0 && performance.now() < this.#unreportedUntil) return this.#unpaced();
    if (this.#waiting === 0) {
      let first: Decision | undefined;
      try {
        first = await this.#decide(tokens);
      } catch {
        this.#redisFailures++;
        // Down: this process paces alone. Slow: the caller waits for its turn like any other.
        if (!this.#connected()) return this.#local.acquire(options);
      }
      if (first?.lease !== undefined) {
        if (signal?.aborted) {
          this.#cancel(first.lease);
          throw signal.reason;
        }
        return this.#permit(first.lease);
      }
      if (first !== undefined && first.waitMs > this.#maxWaitMs) throw this.#refusal(first.waitMs);
    }
    if (this.#waiting >= this.#maxQueue) throw this.#refusal(this.#lastWaitMs);
    this.#waited++;
    return new Promise<OutboundPermit>((resolve, reject) => {
      const waiter = outboundWaiter(
        tokens,
        signal,
        this.#maxWaitMs,
        (w) => this.#cleanup(w),
        () => this.#refusal(this.#lastWaitMs),
        resolve,
        reject,
      );
      this.#queue.push(waiter);
      this.#waiting++;
      void this.#pump();
    });
  }

  /** Runs `call` under a permit and learns from its response, as {@link OutboundLimiter.run}. */
  run<R extends { status?: number; headers?: HeadersLike }>(
    call: () => Promise<R>,
    options: OutboundAcquireOptions = {},
  ): Promise<R> {
    return runUnderPermit(this.acquire(options), call);
  }

  /**
   * Whether a call acquired now would wait, as far as this process knows: callers wait here, or the last
   * decision Redis made for it said to wait and that time has not passed.
   */
  wouldWait(): boolean {
    return this.#waiting > 0 || performance.now() < this.#waitUntil || this.#local.wouldWait();
  }

  stats() {
    const local = this.#local.stats();
    return {
      dispatched: this.#dispatched + local.dispatched,
      waited: this.#waited + local.waited,
      rejected: this.#rejected + local.rejected,
      limitedResponses: this.#limitedResponses + local.limitedResponses,
      redisFailures: this.#redisFailures,
      queued: this.#waiting + local.queued,
      inFlight: this.#inFlight + local.inFlight,
      /** What Redis last said is left of the key's quotas (every node's), -1 while unknown. */
      remainingRequests: this.#remainingRequests,
      remainingTokens: this.#remainingTokens,
    };
  }

  /** Rejects every waiter with `ClosedError`; later acquires reject with it too. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (let w = this.#queue.shift(); w !== undefined; w = this.#queue.shift()) {
      if (w.done) continue;
      this.#cleanup(w);
      w.reject(new ClosedError('SharedOutboundLimiter'));
    }
    this.#wake?.();
    await this.#local.close();
    await releaseRedis(this.#redis);
  }

  #refusal(waitMs: number): RateLimitedError {
    this.#rejected++;
    return new RateLimitedError({
      key: 'outbound',
      limit: Math.max(0, this.#remainingRequests),
      retryAfterMs: Math.max(1, Math.ceil(waitMs || this.#pollMs)),
    });
  }

  /** One script run, once the client is connected (at most a short wait for its first connection). */
  async #run(args: (string | number)[]): Promise<number[]> {
    const { client } = this.#redis;
    if (client.status !== 'ready') {
      // One wait shared by the calls made meanwhile.
      this.#connecting ??= whenConnected(client, REDIS_FIRST_CONNECTION_WAIT_MS).finally(() => {
        this.#connecting = undefined;
      });
      await this.#connecting;
    }
    return (await script.run(client, this.#keys, args)) as number[];
  }

  /** Whether the client is connected (a failed command was then slow, not refused). */
  #connected(): boolean {
    return this.#redis.client.status === 'ready';
  }

  async #decide(tokens: number): Promise<Decision> {
    const lease = `${LEASE_PREFIX}${++leases}`;
    let reply: number[];
    try {
      reply = await this.#run([
        'a',
        Math.ceil(tokens),
        Math.max(1, Math.floor(this.#learning())),
        this.#requestsLimit,
        this.#tokensLimit,
        this.#windowMs,
        this.#leaseMs,
        this.#defaultResetMs,
        lease,
      ]);
    } catch (error) {
      // The script may have run and its reply been lost: a lease it granted goes back now, not at its end.
      this.#cancel(lease);
      throw error;
    }
    this.#remainingRequests = reply[3]!;
    this.#remainingTokens = reply[4]!;
    if (reply[0] === 1) {
      this.#waitUntil = 0;
      // A provider that reports neither quota (and no configured limit) leaves nothing to share but a 429's
      // cooldown: calls go without asking Redis, which is asked again now and then for that.
      const unreported =
        reply[5] === 0 && reply[6] === 0 && this.#requestsLimit === 0 && this.#tokensLimit === 0;
      this.#unreportedUntil = unreported ? performance.now() + UNREPORTED_REFRESH_MS : 0;
      return { lease, waitMs: 0 };
    }
    this.#lastWaitMs = reply[2]!;
    this.#waitUntil = performance.now() + Math.max(reply[2]!, this.#pollMs);
    return { lease: undefined, waitMs: reply[2]! };
  }

  /** A lease of Redis budget: its answer is reported to Redis. */
  #permit(lease: string): OutboundPermit {
    return this.#issue((response, limits) =>
      this.#report(lease, response === undefined ? 0 : 1, limits, this.#cooldown(response, limits)),
    );
  }

  /**
   * A permit taken without Redis while the provider reports no quota. An answer that reports one, or a 429,
   * sends the next call to Redis again; a 429's cooldown is shared at once.
   */
  #unpaced(): OutboundPermit {
    return this.#issue((response, limits) => {
      if (response?.status !== 429 && limits.requests === undefined && limits.tokens === undefined) return;
      this.#unreportedUntil = 0;
      const block = this.#cooldown(response, limits);
      if (block > 0) this.#report('', 1, limits, block);
    });
  }

  /** A permit whose first `done` calls `ended` with the answer and the limits it reports. */
  #issue(ended: (response: Answer, limits: ProviderLimits) => void): OutboundPermit {
    this.#dispatched++;
    this.#inFlight++;
    let open = true;
    return {
      done: (response) => {
        if (!open) return;
        open = false;
        this.#inFlight--;
        ended(response, response?.headers === undefined ? {} : parseRateLimitHeaders(response.headers));
      },
    };
  }

  /** A 429's cooldown, ms (0 for any other answer); this process holds its calls for it at once. */
  #cooldown(response: Answer, limits: ProviderLimits): number {
    if (response?.status !== 429) return 0;
    this.#limitedResponses++;
    const block = Math.ceil(cooldownMs(limits, this.#defaultResetMs, this.#jitterRatio, this.#random));
    this.#waitUntil = Math.max(this.#waitUntil, performance.now() + block);
    this.#unreportedUntil = 0;
    return block;
  }

  /** Gives back a lease never used. */
  #cancel(lease: string): void {
    this.#report(lease, -1, {}, 0);
  }

  #report(lease: string, ended: number, limits: ProviderLimits, block: number): void {
    this.#run([
      'd',
      lease,
      ended,
      ...quotaArgs(limits.requests),
      ...quotaArgs(limits.tokens),
      block,
      this.#requestsLimit,
      this.#tokensLimit,
      this.#defaultResetMs,
    ])
      .then(
        (r) => {
          this.#remainingRequests = r[3]!;
          this.#remainingTokens = r[4]!;
        },
        // The lease expires by itself; pacing goes on from what the other answers say.
        () => {
          this.#redisFailures++;
        },
      )
      .finally(() => this.#wake?.());
  }

  /** Serves the waiters in order: only the first asks Redis, again when it may have room. */
  async #pump(): Promise<void> {
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      for (let head = this.#head(); head !== undefined; head = this.#head()) {
        let d: Decision;
        try {
          d = await this.#decide(head.tokens);
        } catch {
          this.#redisFailures++;
          if (!this.#connected()) {
            this.#toLocal();
            return;
          }
          // Slow, not down: ask again shortly.
          d = { lease: undefined, waitMs: 0 };
        }
        if (head.done) {
          if (d.lease !== undefined) this.#cancel(d.lease);
          continue;
        }
        if (d.lease !== undefined) {
          this.#queue.shift();
          this.#cleanup(head);
          head.resolve(this.#permit(d.lease));
          continue;
        }
        await this.#sleep(d.waitMs > 0 ? d.waitMs : this.#pollMs * (0.5 + this.#random()));
      }
    } finally {
      this.#pumping = false;
    }
  }

  /** While Redis cannot answer, the waiters are paced by this process alone. */
  #toLocal(): void {
    for (let w = this.#queue.shift(); w !== undefined; w = this.#queue.shift()) {
      if (w.done) continue;
      const { resolve, reject, tokens, signal } = w;
      this.#cleanup(w);
      this.#local.acquire({ tokens, signal }).then(resolve, reject);
    }
  }

  /** Waits `ms`, or less when an answer of this process comes back or a waiter leaves. */
  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#wake = undefined;
        resolve();
      }, Math.ceil(ms));
      this.#wake = () => {
        clearTimeout(timer);
        this.#wake = undefined;
        resolve();
      };
    });
  }

  #head(): OutboundWaiter | undefined {
    if (this.#closed) return undefined;
    for (let head = this.#queue.peek(); head !== undefined; head = this.#queue.peek()) {
      if (!head.done) return head;
      this.#queue.shift();
    }
    return undefined;
  }

  #cleanup(waiter: OutboundWaiter): void {
    if (!endWait(waiter)) return;
    this.#waiting--;
    if (this.#waiting === 0) this.#wake?.();
  }
}
