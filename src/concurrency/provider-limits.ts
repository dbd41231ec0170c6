/**
 * The client side of rate limits: read what a provider says about its limits (OpenAI's
 * `x-ratelimit-*` headers, Anthropic's `anthropic-ratelimit-*`, `Retry-After`) and pace outbound calls
 * with it, so a gateway slows down before the provider answers 429.
 *
 * @example
 * const outbound = new OutboundLimiter({ maxWaitMs: 30_000 });
 * const res = await outbound.run(() => fetch(url, init), { tokens: estimate, signal });
 */
import { ClosedError, RateLimitedError } from '../errors.ts';
import { type Clock, systemClock } from '../internal/clock.ts';
import * as check from '../internal/options.ts';
import { Ring } from '../internal/ring.ts';
import {
  cooldownMs,
  endWait,
  type OutboundWaiter,
  outboundWaiter,
  runUnderPermit,
} from './outbound-waiter.ts';

/** Headers as fetch (`Headers`), node:http / undici (a record) or anything with `get(name)` give them. */
export type HeadersLike =
  | { get(name: string): string | null | undefined }
  | Record<string, string | string[] | number | undefined>;

/** One quota as a provider reported it. */
export interface ProviderQuota {
  limit?: number;
  remaining?: number;
  /** Ms until the quota is fully back. */
  resetMs?: number;
}

export interface ProviderLimits {
  requests?: ProviderQuota;
  tokens?: ProviderQuota;
  /** From `retry-after-ms` or `Retry-After` (seconds or an HTTP date). */
  retryAfterMs?: number;
}

const UNIT_MS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  ms: 1,
  s: 1e3,
  m: 6e4,
  h: 3.6e6,
  d: 8.64e7,
};

/**
 * Parses a Go-style duration as OpenAI sends it (`12ms`, `1s`, `1.5s`, `6m0s`, `1h30m`) into ms. A bare
 * number is seconds. Returns `undefined` for anything else (never NaN or a negative number).
 */
export function parseDuration(text: string | undefined | null): number | undefined {
  if (typeof text !== 'string') return undefined;
  const s = text.trim();
  if (s.length === 0) return undefined;
  if (/^\d+(\.\d+)?$/.test(s)) return Number(s) * 1000;
  const re = /(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s|d)/gy;
  let total = 0;
  let end = 0;
  for (let m = re.exec(s); m !== null; m = re.exec(s)) {
    total += Number(m[1]) * UNIT_MS[m[2]!]!;
    end = re.lastIndex;
  }
  return end === s.length && end > 0 ? total : undefined;
}

/** Parses `Retry-After`: delay seconds or an HTTP date (relative to `nowMs`, epoch). */
export function parseRetryAfter(value: string | undefined | null, nowMs = Date.now()): number | undefined {
  if (typeof value !== 'string' || value.trim().length === 0) return undefined;
  const v = value.trim();
  if (/^\d+(\.\d+)?$/.test(v)) return Number(v) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - nowMs);
}

/** A lookup of header values by lowercase name over `headers` (a `Headers` or a plain record). */
function headerReader(headers: HeadersLike): (name: string) => string | undefined {
  if (typeof (headers as { get?: unknown }).get === 'function') {
    const h = headers as { get(name: string): string | null | undefined };
    return (name) => h.get(name) ?? undefined;
  }
  let record = headers as Record<string, string | string[] | number | undefined>;
  // Node and undici give lowercase names; only a record with other names is copied, once per call.
  for (const k in record) {
    if (k !== k.toLowerCase()) {
      const lower: typeof record = {};
      for (const key in record) {
        const l = key.toLowerCase();
        if (key === l || !(l in lower)) lower[l] = record[key];
      }
      record = lower;
      break;
    }
  }
  return (name) => {
    let v = record[name];
    if (Array.isArray(v)) v = v[0];
    return v === undefined ? undefined : String(v);
  };
}

function count(value: string | undefined): number | undefined {
  if (value === undefined || !/^\s*\d+(\.\d+)?\s*$/.test(value)) return undefined;
  return Number(value);
}

function quota(limit: number | undefined, remaining: number | undefined, resetMs: number | undefined) {
  if (limit === undefined && remaining === undefined && resetMs === undefined) return undefined;
  const q: ProviderQuota = {};
  if (limit !== undefined) q.limit = limit;
  if (remaining !== undefined) q.remaining = remaining;
  if (resetMs !== undefined) q.resetMs = resetMs;
  return q;
}

/** The header names of one quota, built once: a proxied answer reads them all. */
interface QuotaNames {
  limit: string;
  remaining: string;
  reset: string;
}
const OPENAI_QUOTAS = {
  requests: {
    limit: 'x-ratelimit-limit-requests',
    remaining: 'x-ratelimit-remaining-requests',
    reset: 'x-ratelimit-reset-requests',
  },
  tokens: {
    limit: 'x-ratelimit-limit-tokens',
    remaining: 'x-ratelimit-remaining-tokens',
    reset: 'x-ratelimit-reset-tokens',
  },
} satisfies Record<'requests' | 'tokens', QuotaNames>;
const anthropicNames = (name: string): QuotaNames => ({
  limit: `anthropic-ratelimit-${name}-limit`,
  remaining: `anthropic-ratelimit-${name}-remaining`,
  reset: `anthropic-ratelimit-${name}-reset`,
});
/** Anthropic's quotas per dimension; for tokens all three, since a call spends from each. */
const ANTHROPIC_QUOTAS = {
  requests: [anthropicNames('requests')],
  tokens: ['tokens', 'input-tokens', 'output-tokens'].map(anthropicNames),
} satisfies Record<'requests' | 'tokens', QuotaNames[]>;

/** One of Anthropic's quotas: `anthropic-ratelimit-<name>-{limit,remaining,reset}` (an RFC 3339 reset). */
function anthropicQuota(
  header: (name: string) => string | undefined,
  names: QuotaNames,
  nowMs: number,
): ProviderQuota | undefined {
  const reset = header(names.reset);
  const at = reset === undefined ? Number.NaN : Date.parse(reset);
  return quota(
    count(header(names.limit)),
    count(header(names.remaining)),
    Number.isNaN(at) ? undefined : Math.max(0, at - nowMs),
  );
}

/** The quota with the fewer remaining (the first reported when neither says). */
function tighter(best: ProviderQuota | undefined, q: ProviderQuota | undefined): ProviderQuota | undefined {
  if (q === undefined) return best;
  if (best === undefined) return q;
  return (q.remaining ?? Number.POSITIVE_INFINITY) < (best.remaining ?? Number.POSITIVE_INFINITY) ? q : best;
}

/** Reads a provider's rate-limit headers. Missing or malformed headers are left out, never guessed. */
export function parseRateLimitHeaders(headers: HeadersLike, nowMs = Date.now()): ProviderLimits {
  const out: ProviderLimits = {};
  const header = headerReader(headers);
  for (const dim of ['requests', 'tokens'] as const) {
    // OpenAI: x-ratelimit-limit-requests, x-ratelimit-remaining-requests, x-ratelimit-reset-requests (duration).
    const names = OPENAI_QUOTAS[dim];
    let q = quota(
      count(header(names.limit)),
      count(header(names.remaining)),
      parseDuration(header(names.reset)),
    );
    // Anthropic: anthropic-ratelimit-requests-limit / -remaining / -reset (RFC 3339 time); for tokens the
    // tightest of its tokens, input-tokens and output-tokens quotas.
    if (q === undefined) {
      for (const anthropic of ANTHROPIC_QUOTAS[dim]) q = tighter(q, anthropicQuota(header, anthropic, nowMs));
    }
    if (q !== undefined) out[dim] = q;
  }
  const ms = count(header('retry-after-ms'));
  const retry = ms ?? parseRetryAfter(header('retry-after'), nowMs);
  if (retry !== undefined) out.retryAfterMs = retry;
  return out;
}

/** A configured quota, when given: a whole number of at least 1. */
function optionalCount(name: string, value: number | undefined): number | undefined {
  return value === undefined ? undefined : check.integer(name, value, 1);
}

/** @default 60000 */
export const DEFAULT_OUTBOUND_MAX_WAIT_MS = 60_000;
/** Assumed time to the next reset when a provider gives none, ms. @default 1000 */
export const DEFAULT_OUTBOUND_RESET_MS = 1_000;
/** Share of a 429's stated wait added at random to it. @default 0.1 */
export const DEFAULT_OUTBOUND_COOLDOWN_JITTER_RATIO = 0.1;
/** Waiting callers accepted before new ones are refused at once. @default 10000 */
export const DEFAULT_OUTBOUND_MAX_QUEUE = 10_000;

export interface OutboundLimiterOptions {
  /** Longest a caller waits for budget before rejecting with `RateLimitedError`, ms. @default 60000 */
  maxWaitMs?: number;
  /** Time to assume until a quota resets when the provider does not say, ms. @default 1000 */
  defaultResetMs?: number;
  /** Bound on waiting callers. @default 10000 */
  maxQueue?: number;
  /** Monotonic time source for deadlines and resets. @default systemClock */
  clock?: Clock;
  /**
   * A 429 holds calls until the provider's stated time plus up to this share of it, at random: limiters
   * (keys, nodes) told the same time do not all call again at the same instant. @default 0.1
   */
  cooldownJitterRatio?: number;
  /** Source of that jitter, a number in [0, 1). @default Math.random */
  random?: () => number;
  /**
   * Calls sent at once before the provider's first answer says what it allows (after each reset it is
   * one). A function is read at each decision (an adaptive concurrency limit). @default 1
   */
  learningConcurrency?: number | (() => number);
  /**
   * What the provider allows, when known beforehand: requests and tokens per window. A configured quota
   * is paced from the start, by its own window until the provider's headers report it; then the tighter
   * of the two limits holds.
   */
  limits?: ConfiguredLimits;
}

/** Quotas known beforehand (a deployment's `providerLimits`). */
export interface ConfiguredLimits {
  requests?: number;
  tokens?: number;
  /** The quotas' window, ms. @default 60000 */
  windowMs?: number;
}

export interface OutboundAcquireOptions {
  /** Tokens the call will use (estimate), checked against the tokens quota. @default 0 */
  tokens?: number;
  signal?: AbortSignal;
}

/** Held budget for one call; report how it went with `done`. */
export interface OutboundPermit {
  /** Learns from the response (its headers, and a 429) and releases the budget. Idempotent. */
  done(response?: { status?: number; headers?: HeadersLike }): void;
}

/**
 * What the limiter believes about one quota (requests or tokens), in units.
 *
 * Until the provider first reports the quota, at most the learning concurrency of calls go at once (the
 * first answer gives its figures). Then calls go while the reported remaining, less the units in flight,
 * covers them. At the reported reset the whole limit is assumed back, less the units still in flight
 * (each is charged to the new window when it ends) and less the calls already over that the provider may
 * have counted in the new window: those answered after the earliest moment its reset can have come (a
 * call sent at `t` whose answer says "resets in r" puts the reset at `t + r` or later). The window's next
 * answer says when it resets. A quota configured beforehand starts known and restarts by its own window
 * until the provider's headers report it.
 */
class Budget {
  /** `undefined` until the first answer; `false` when the provider does not report this quota. */
  tracked: boolean | undefined = undefined;
  limit = 0;
  remaining = 0;
  /** When the window resets, at the latest; `Infinity` from a reset until the new window's first answer. */
  resetAt = 0;
  /** The earliest the provider's reset can come: calls sent since may count in its next window. */
  resetFrom = 0;
  gen = 0;
  /** Before the provider's first figures. */
  learning = true;
  /** Calls in flight while learning. */
  learners = 0;
  inFlight = 0;
  /** Calls of this window answered at or after `resetFrom`: [answered at, units]. */
  tail: [number, number][] = [];
  /** Whether the provider's headers ever reported this quota. */
  heard = false;
  readonly configured: number;
  readonly windowMs: number;

  constructor(configured: number | undefined, windowMs: number, now: number) {
    this.configured = configured ?? 0;
    this.windowMs = windowMs;
    if (this.configured > 0) {
      this.tracked = true;
      this.limit = this.remaining = this.configured;
      this.resetAt = now + windowMs;
      this.learning = false;
    }
  }

  roll(now: number): void {
    if (this.tracked === true && !this.learning && now >= this.resetAt) {
      this.gen++;
      let late = 0;
      for (const [at, units] of this.tail) if (at >= this.resetFrom) late += units;
      this.tail = [];
      this.remaining = this.limit - late;
      this.resetAt = this.heard ? Number.POSITIVE_INFINITY : now + this.windowMs;
      this.resetFrom = now;
    }
  }

  fits(units: number, learning: number): boolean {
    if (this.tracked === false) return true;
    if (this.learning) return this.learners < learning;
    return this.remaining - this.inFlight >= Math.min(units, this.limit);
  }

  /**
   * After a reset the new window's first answer says when it resets; with no call of it in flight, no
   * answer will, so it is assumed to reset `fallbackMs` from now (else a window used up by answers of the
   * old one would hold every caller until its wait ran out).
   */
  expectReset(now: number, fallbackMs: number): void {
    if (this.resetAt === Number.POSITIVE_INFINITY && this.inFlight === 0) this.resetAt = now + fallbackMs;
  }

  /** When the clock alone can make room (`now` when only an answer can). */
  waitUntil(now: number, units: number): number {
    if (
      this.tracked !== true ||
      this.learning ||
      this.resetAt === Number.POSITIVE_INFINITY ||
      this.remaining - this.inFlight >= Math.min(units, this.limit)
    ) {
      return now;
    }
    return this.resetAt;
  }

  /** Holds `units`; returns the window's generation, negative for a call sent while learning. */
  take(units: number): number {
    this.inFlight += units;
    if (this.learning && this.tracked !== false) {
      this.learners++;
      return -1 - this.gen;
    }
    return this.gen;
  }

  /**
   * Learns from an answer (`q`: its figures for this quota), or from a call that ended without one;
   * `sentAt` is when the call was sent.
   */
  done(
    units: number,
    taken: number,
    sentAt: number,
    q: ProviderQuota | undefined,
    answered: boolean,
    now: number,
    fallbackMs: number,
  ): void {
    this.inFlight -= units;
    if (taken < 0) this.learners = Math.max(0, this.learners - 1);
    const gen = taken < 0 ? -1 - taken : taken;
    if (gen !== this.gen) {
      // A call of an earlier window: the provider may have counted it in this one.
      if (!this.learning) this.remaining -= units;
      return;
    }
    if (q === undefined) {
      // An answer without figures: the provider does not report this quota. A call that failed says nothing.
      if (answered && this.tracked === undefined) this.tracked = false;
      if (!this.learning) {
        // No figures: the provider may still have counted the call.
        this.remaining -= units;
        if (this.resetAt === Number.POSITIVE_INFINITY) this.resetAt = now + fallbackMs;
        this.#over(now, units);
      }
      return;
    }
    this.tracked = true;
    this.heard = true;
    if (q.limit !== undefined) this.limit = q.limit;
    if (this.configured > 0 && (this.limit === 0 || this.configured < this.limit))
      this.limit = this.configured;
    const resetMs = q.resetMs ?? fallbackMs;
    if (q.resetMs !== undefined) this.resetFrom = Math.max(this.resetFrom, sentAt + q.resetMs);
    if (this.learning) {
      this.learning = false;
      this.remaining = Math.min(q.remaining ?? this.limit, this.limit);
      this.resetAt = now + resetMs;
      this.#over(now, units);
      return;
    }
    if (q.remaining !== undefined) this.remaining = Math.min(this.remaining, q.remaining);
    // The window's first answer says when it resets; answers of one window name the same reset, and the
    // latest-arriving is the safest estimate.
    if (this.resetAt === Number.POSITIVE_INFINITY) this.resetAt = now + resetMs;
    else if (q.resetMs !== undefined) this.resetAt = Math.max(this.resetAt, now + q.resetMs);
    this.#over(now, units);
  }

  /**
   * Keeps a call answered at `at` while the provider may have counted it in its next window (it counted
   * the call between sending and answering it: an answer before the earliest reset was counted in this one).
   */
  #over(at: number, units: number): void {
    // A window of the configured limit alone is this limiter's own: nothing in it counts elsewhere.
    if (units === 0 || !this.heard || at < this.resetFrom) return;
    this.tail.push([at, units]);
    // Calls sent before the earliest reset count in this window: they no longer matter.
    if (this.tail.length > 64 && this.tail[0]![0] < this.resetFrom)
      this.tail = this.tail.filter(([at]) => at >= this.resetFrom);
  }
}

/**
 * Paces calls to a provider from the limits it reports. Until the first answer, at most the learning
 * concurrency of calls go at once; then calls go while the reported remaining quota, less what is already
 * in flight, covers them; when it does not, callers wait (FIFO, bounded by `maxWaitMs` and their `signal`)
 * until the reported reset, where the whole limit is back less the calls still in flight. A 429 stops
 * every call until its `Retry-After` (plus up to a tenth of it at random). Conservative by design: a call
 * in flight is counted against the budget even when the provider's figure may already include it.
 */
export class OutboundLimiter {
  readonly statsCounters: readonly string[] = ['dispatched', 'waited', 'rejected', 'limitedResponses'];
  readonly #maxWaitMs: number;
  readonly #defaultResetMs: number;
  readonly #maxQueue: number;
  readonly #clock: Clock;
  readonly #jitterRatio: number;
  readonly #random: () => number;
  readonly #learning: () => number;
  readonly #requests: Budget;
  readonly #tokens: Budget;
  /** Waiters, oldest first; one that stopped waiting stays until it reaches the front. */
  readonly #queue = new Ring<OutboundWaiter>();
  #waiting = 0;
  #blockedUntil = 0;
  #wake: NodeJS.Timeout | undefined;
  #wakeAt = Number.POSITIVE_INFINITY;
  #closed = false;
  #dispatched = 0;
  #waited = 0;
  #rejected = 0;
  #limitedResponses = 0;

  constructor(options: OutboundLimiterOptions = {}) {
    const o = check.object<OutboundLimiterOptions>('options', options);
    this.#maxWaitMs = check.integer('options.maxWaitMs', o.maxWaitMs ?? DEFAULT_OUTBOUND_MAX_WAIT_MS);
    this.#defaultResetMs = check.integer(
      'options.defaultResetMs',
      o.defaultResetMs ?? DEFAULT_OUTBOUND_RESET_MS,
      1,
    );
    this.#maxQueue = check.integer('options.maxQueue', o.maxQueue ?? DEFAULT_OUTBOUND_MAX_QUEUE);
    this.#clock = o.clock === undefined ? systemClock : check.clock<Clock>('options.clock', o.clock);
    this.#jitterRatio = check.ratio(
      'options.cooldownJitterRatio',
      o.cooldownJitterRatio ?? DEFAULT_OUTBOUND_COOLDOWN_JITTER_RATIO,
    );
    this.#random = o.random === undefined ? Math.random : check.fn<() => number>('options.random', o.random);
    const learning = o.learningConcurrency ?? 1;
    this.#learning =
      typeof learning === 'function'
        ? learning
        : (
            (n) => () =>
              n
          )(check.integer('options.learningConcurrency', learning, 1));
    const limits = o.limits === undefined ? {} : check.object<ConfiguredLimits>('options.limits', o.limits);
    const windowMs = check.integer('options.limits.windowMs', limits.windowMs ?? 60_000, 1);
    const now = this.#clock.now();
    this.#requests = new Budget(optionalCount('options.limits.requests', limits.requests), windowMs, now);
    this.#tokens = new Budget(optionalCount('options.limits.tokens', limits.tokens), windowMs, now);
  }

  /** Waits for budget (FIFO), then holds it until the permit's `done`. */
  acquire(options: OutboundAcquireOptions = {}): Promise<OutboundPermit> {
    if (this.#closed) return Promise.reject(new ClosedError('OutboundLimiter'));
    const tokens = options.tokens === undefined ? 0 : check.number('options.tokens', options.tokens);
    const signal = options.signal;
    if (signal?.aborted) return Promise.reject(signal.reason);
    const now = this.#clock.now();
    this.#roll(now);
    if (this.#waiting === 0 && this.#fits(tokens, now)) return Promise.resolve(this.#dispatch(tokens));
    const wait = this.#waitEstimate(now, tokens);
    if (wait > this.#maxWaitMs || this.#waiting >= this.#maxQueue) {
      this.#rejected++;
      return Promise.reject(
        new RateLimitedError({ key: 'outbound', limit: this.#requests.limit, retryAfterMs: Math.ceil(wait) }),
      );
    }
    this.#waited++;
    return new Promise<OutboundPermit>((resolve, reject) => {
      const waiter = outboundWaiter(
        tokens,
        signal,
        this.#maxWaitMs,
        (w) => this.#remove(w),
        () => {
          this.#rejected++;
          return new RateLimitedError({
            key: 'outbound',
            limit: this.#requests.limit,
            retryAfterMs: Math.ceil(this.#waitEstimate(this.#clock.now(), tokens)),
          });
        },
        resolve,
        reject,
      );
      this.#queue.push(waiter);
      this.#waiting++;
      this.#schedule(now);
    });
  }

  /**
   * Runs `call` under a permit and learns from its response (anything with `status` and `headers`, like a
   * fetch `Response`). A call that throws releases its budget and rethrows.
   */
  run<R extends { status?: number; headers?: HeadersLike }>(
    call: () => Promise<R>,
    options: OutboundAcquireOptions = {},
  ): Promise<R> {
    return runUnderPermit(this.acquire(options), call);
  }

  /** Whether a call acquired now would wait (others wait, a 429's cooldown, or no budget left). */
  wouldWait(tokens = 0): boolean {
    const now = this.#clock.now();
    this.#roll(now);
    return this.#waiting > 0 || !this.#fits(tokens, now);
  }

  stats() {
    return {
      dispatched: this.#dispatched,
      waited: this.#waited,
      rejected: this.#rejected,
      limitedResponses: this.#limitedResponses,
      queued: this.#waiting,
      inFlight: this.#requests.inFlight,
      remainingRequests: this.#requests.tracked && !this.#requests.learning ? this.#requests.remaining : -1,
      remainingTokens: this.#tokens.tracked && !this.#tokens.learning ? this.#tokens.remaining : -1,
    };
  }

  /** Rejects every waiter with `ClosedError`; later acquires reject with it too. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#wake !== undefined) clearTimeout(this.#wake);
    for (let w = this.#queue.shift(); w !== undefined; w = this.#queue.shift()) {
      if (w.done) continue;
      this.#cleanup(w);
      w.reject(new ClosedError('OutboundLimiter'));
    }
  }

  #roll(now: number): void {
    this.#requests.roll(now);
    this.#tokens.roll(now);
  }

  #fits(tokens: number, now: number): boolean {
    if (now < this.#blockedUntil) return false;
    const learning = Math.max(1, Math.floor(this.#learning()));
    return this.#requests.fits(1, learning) && this.#tokens.fits(tokens, learning);
  }

  /** Ms until budget for a call of `tokens` can come back by the clock (0: only an answer frees it). */
  #waitEstimate(now: number, tokens: number): number {
    return (
      Math.max(
        this.#blockedUntil,
        this.#requests.waitUntil(now, 1),
        this.#tokens.waitUntil(now, tokens),
        now,
      ) - now
    );
  }

  #dispatch(tokens: number): OutboundPermit {
    this.#dispatched++;
    const r = this.#requests;
    const t = this.#tokens;
    const rGen = r.take(1);
    const tGen = t.take(tokens);
    const sentAt = this.#clock.now();
    let open = true;
    return {
      done: (response) => {
        if (!open) return;
        open = false;
        const now = this.#clock.now();
        const limits = response?.headers === undefined ? {} : parseRateLimitHeaders(response.headers);
        const answered = response !== undefined;
        r.done(1, rGen, sentAt, limits.requests, answered, now, this.#defaultResetMs);
        t.done(tokens, tGen, sentAt, limits.tokens, answered, now, this.#defaultResetMs);
        if (response?.status === 429) {
          this.#limitedResponses++;
          const wait = cooldownMs(limits, this.#defaultResetMs, this.#jitterRatio, this.#random);
          this.#blockedUntil = Math.max(this.#blockedUntil, now + wait);
        }
        this.#pump();
      },
    };
  }

  #pump(): void {
    const now = this.#clock.now();
    this.#roll(now);
    for (let head = this.#head(); head !== undefined && this.#fits(head.tokens, now); head = this.#head()) {
      this.#queue.shift();
      this.#cleanup(head);
      head.resolve(this.#dispatch(head.tokens));
    }
    if (this.#waiting > 0) this.#schedule(now);
  }

  /** The oldest caller still waiting, left in the queue (those that stopped waiting before it are dropped). */
  #head(): OutboundWaiter | undefined {
    for (let head = this.#queue.peek(); head !== undefined; head = this.#queue.peek()) {
      if (!head.done) return head;
      this.#queue.shift();
    }
    return undefined;
  }

  /** One timer, at the earliest moment budget can come back. */
  #schedule(now: number): void {
    this.#requests.expectReset(now, this.#defaultResetMs);
    this.#tokens.expectReset(now, this.#defaultResetMs);
    const wait = this.#waitEstimate(now, this.#head()?.tokens ?? 0);
    // Nothing to wait for on the clock (budget is held by calls in flight): their `done` pumps.
    if (wait <= 0) return;
    const at = now + wait;
    if (this.#wake !== undefined && this.#wakeAt <= at) return;
    if (this.#wake !== undefined) clearTimeout(this.#wake);
    this.#wakeAt = at;
    // Not unref()ed: callers are awaiting this wake-up, and it is bounded by their maxWaitMs.
    this.#wake = setTimeout(() => {
      this.#wake = undefined;
      this.#wakeAt = Number.POSITIVE_INFINITY;
      this.#pump();
    }, Math.ceil(wait));
  }

  /** A caller stops waiting (timeout or abort); its entry leaves the ring when it reaches the front. */
  #remove(waiter: OutboundWaiter): void {
    this.#cleanup(waiter);
    if (this.#waiting > 0) return;
    while (this.#queue.shift() !== undefined);
    if (this.#wake !== undefined) {
      clearTimeout(this.#wake);
      this.#wake = undefined;
      this.#wakeAt = Number.POSITIVE_INFINITY;
    }
  }

  /** Ends a wait: it no longer counts as waiting, and its timer and abort listener go. */
  #cleanup(waiter: OutboundWaiter): void {
    if (endWait(waiter)) this.#waiting--;
  }
}
