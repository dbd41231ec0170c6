/**
 * The in-process rate-limit store. Each key holds a small `Float64Array` of state (three slots per
 * policy) plus, for sliding-log policies, a log of (time, cost) pairs pruned to the window. Keys whose
 * state has gone back to "fresh" are deleted: checks sweep the map in small slices twice per state
 * lifetime (lazy sweep), and an `unref()`ed timer sweeps it when traffic stops, so memory follows the
 * keys active in the last windows, not every client ever seen.
 */
import type { Clock } from '../../internal/clock.ts';
import * as check from '../../internal/options.ts';
import {
  type ChargeRef,
  type CheckResult,
  type CompiledPolicy,
  OUT_STRIDE,
  type RateLimitStore,
} from './store.ts';

/** @default 60000 */
export const DEFAULT_SWEEP_INTERVAL_MS = 60_000;
/** Entries a check examines while a lazy sweep is under way. */
const SWEEP_SLICE = 256;

export interface MemoryRateLimitStoreOptions {
  policies: readonly CompiledPolicy[];
  clock: Clock;
  /** Full sweep period of the `unref()`ed timer, ms; 0 turns the timer off. @default 60000 */
  sweepIntervalMs?: number;
}

/** A sliding log: parallel arrays from `head`, compacted when half is dead. */
class Log {
  t: number[] = [];
  c: number[] = [];
  head = 0;
  /** Entries dropped by compaction before index 0, so ids stay stable. */
  base = 0;
  sum = 0;

  prune(cutoff: number): void {
    const t = this.t;
    while (this.head < t.length && t[this.head]! <= cutoff) {
      this.sum -= this.c[this.head]!;
      this.head++;
    }
    if (this.head === t.length) {
      this.base += this.head;
      this.head = 0;
      t.length = 0;
      this.c.length = 0;
      this.sum = 0;
    } else if (this.head > 64 && this.head * 2 > t.length) {
      this.base += this.head;
      this.t = t.slice(this.head);
      this.c = this.c.slice(this.head);
      this.head = 0;
    }
  }

  /**
   * Appends an entry and returns its id (never 0). A clock that stepped back writes at the newest entry's
   * time instead: pruning stops at the first entry still inside the window, so the log must stay sorted.
   */
  push(at: number, cost: number): number {
    const t = this.t;
    const last = t.length > this.head ? t[t.length - 1]! : at;
    t.push(at < last ? last : at);
    this.c.push(cost);
    this.sum += cost;
    return this.base + this.t.length;
  }
}

class Entry {
  readonly s: Float64Array;
  readonly logs: (Log | undefined)[] | undefined;
  expiresAt = 0;

  constructor(policies: readonly CompiledPolicy[], hasLog: boolean) {
    this.s = new Float64Array(policies.length * 3);
    this.logs = hasLog ? policies.map((p) => (p.code === 2 ? new Log() : undefined)) : undefined;
  }
}

/**
 * Memory store for {@link RateLimiter}. The `CheckResult` it returns (and its `out` array) is reused by
 * the next check: read it before checking again.
 */
export class MemoryRateLimitStore implements RateLimitStore {
  readonly #policies: readonly CompiledPolicy[];
  readonly #n: number;
  readonly #clock: Clock;
  readonly #hasLog: boolean;
  /** One policy and no sliding log: checks take {@link #checkOne}. */
  readonly #single: boolean;
  /** State older than this (since the last write) equals fresh state for every policy. */
  readonly #ttlMs: number;
  readonly #map = new Map<string, Entry>();
  readonly #result: { allowed: boolean; out: Float64Array };
  #sweeper: MapIterator<[string, Entry]> | undefined;
  #sweepDue = Number.NEGATIVE_INFINITY;
  #timer: NodeJS.Timeout | undefined;
  #pruned = 0;

  constructor(options: MemoryRateLimitStoreOptions) {
    this.#policies = options.policies;
    this.#n = options.policies.length;
    this.#clock = options.clock;
    this.#hasLog = options.policies.some((p) => p.code === 2);
    this.#single = this.#n === 1 && !this.#hasLog;
    this.#ttlMs = 2 * Math.max(...options.policies.map((p) => p.windowMs));
    this.#result = { allowed: false, out: new Float64Array(this.#n * (OUT_STRIDE + 1) + 1) };
    const interval = check.integer(
      'options.sweepIntervalMs',
      options.sweepIntervalMs ?? DEFAULT_SWEEP_INTERVAL_MS,
    );
    if (interval > 0) {
      this.#timer = setInterval(() => this.sweep(), interval);
      this.#timer.unref();
    }
  }

  /** Keys held now. */
  get size(): number {
    return this.#map.size;
  }

  /** Sliding-log entries held across all keys (each is inside its window). */
  get logEntries(): number {
    if (!this.#hasLog) return 0;
    let total = 0;
    for (const entry of this.#map.values()) {
      for (const log of entry.logs!) if (log !== undefined) total += log.t.length - log.head;
    }
    return total;
  }

  /** Keys deleted because their state had expired. */
  get pruned(): number {
    return this.#pruned;
  }

  check(key: string, charges: readonly number[]): CheckResult {
    // Kept small enough for the optimizer to inline into the limiter's check; the loops live apart.
    return this.#single ? this.#checkOne(key, charges[0]!) : this.#checkMany(key, charges);
  }

  #checkMany(key: string, charges: readonly number[]): CheckResult {
    const now = this.#clock.now();
    const policies = this.#policies;
    const n = this.#n;
    const result = this.#result;
    const out = result.out;
    let entry = this.#map.get(key);
    if (entry === undefined) {
      entry = new Entry(policies, this.#hasLog);
      this.#map.set(key, entry);
    }
    const s = entry.s;
    let allowed = true;
    for (let i = 0; i < n; i++) {
      const p = policies[i]!;
      if (!decide(p, s, i * 3, entry.logs?.[i], charges[i]!, now, out, i * OUT_STRIDE)) allowed = false;
    }
    const ids = n * OUT_STRIDE + 1;
    for (let i = 0; i < n; i++) {
      const p = policies[i]!;
      const c = charges[i]!;
      const o = i * OUT_STRIDE;
      out[ids + i] = 0;
      if (allowed && c > 0) {
        const log = entry.logs?.[i];
        if (log !== undefined) out[ids + i] = log.push(now, c);
        else commit(p, s, i * 3, c, now);
        out[o]! -= c;
      }
      out[o + 1] = resetOf(p, s, i * 3, entry.logs?.[i], now);
    }
    out[n * OUT_STRIDE] = now;
    if (allowed) entry.expiresAt = now + this.#ttlMs;
    else if (entry.expiresAt === 0) entry.expiresAt = now + this.#ttlMs;
    result.allowed = allowed;
    if (now >= this.#sweepDue) this.#sweepSome(now);
    return result;
  }

  /**
   * {@link check} for the common single-policy limiter, without the loops. The default algorithm, the fixed
   * window, is written out: no call is left on its path to box `now` (a double) for, and no division while
   * the window holds. With `check` and `readResult` small enough to inline, an awaited admitted `allow`
   * went from 2,287 to 2,149 instructions (callgrind; rate-limiter-flexible's `consume`: 3,913).
   */
  #checkOne(key: string, c: number): CheckResult {
    const now = this.#clock.now();
    const p = this.#policies[0]!;
    const result = this.#result;
    const out = result.out;
    let entry = this.#map.get(key);
    if (entry === undefined) {
      entry = new Entry(this.#policies, false);
      this.#map.set(key, entry);
    }
    const s = entry.s;
    let allowed: boolean;
    if (p.code === 0) {
      const W = p.windowMs;
      let start = s[0]!;
      if (now < start || now - start >= W) {
        start = Math.floor(now / W) * W;
        s[0] = start;
        s[1] = 0;
      }
      let count = s[1]!;
      const remaining = p.limit - count;
      allowed = c <= 0 || remaining - c >= -1e-9;
      if (!allowed) {
        out[0] = remaining;
        out[2] = start + W - now;
      } else if (c > 0) {
        count += c;
        s[1] = count;
        out[0] = remaining - c;
        out[2] = 0;
      } else {
        out[0] = remaining;
        out[2] = 0;
      }
      out[1] = count > 0 ? start + W - now : 0;
    } else {
      allowed = decideOne(p, s, c, now, out);
    }
    out[OUT_STRIDE] = now;
    out[OUT_STRIDE + 1] = 0;
    if (allowed || entry.expiresAt === 0) entry.expiresAt = now + this.#ttlMs;
    result.allowed = allowed;
    if (now >= this.#sweepDue) this.#sweepSome(now);
    return result;
  }

  settle(key: string, ref: ChargeRef, deltas: readonly number[]): void {
    const now = this.#clock.now();
    let entry = this.#map.get(key);
    if (entry === undefined) {
      if (!deltas.some((d) => d > 0)) return;
      entry = new Entry(this.#policies, this.#hasLog);
      this.#map.set(key, entry);
    }
    const s = entry.s;
    for (let i = 0; i < this.#n; i++) {
      const d = deltas[i]!;
      if (d === 0) continue;
      const p = this.#policies[i]!;
      const at = i * 3;
      const log = entry.logs?.[i];
      normalize(p, s, at, log, now);
      const W = p.windowMs;
      switch (p.code) {
        case 0: {
          if (s[at] === Math.floor(ref.at / W) * W) s[at + 1] = Math.max(0, s[at + 1]! + d);
          else if (d > 0) s[at + 1]! += d;
          break;
        }
        case 1: {
          const charged = Math.floor(ref.at / W) * W;
          if (s[at] === charged) s[at + 1] = Math.max(0, s[at + 1]! + d);
          else if (s[at] === charged + W) s[at + 2] = Math.max(0, s[at + 2]! + d);
          else if (d > 0) s[at + 1]! += d;
          break;
        }
        case 2: {
          const l = log!;
          const idx = (ref.logIds[i] ?? 0) - 1 - l.base;
          if (idx >= l.head && idx < l.t.length) {
            const next = Math.max(0, l.c[idx]! + d);
            l.sum += next - l.c[idx]!;
            l.c[idx] = next;
          } else if (d > 0) {
            l.push(now, d);
          }
          break;
        }
        case 3:
          s[at] = Math.max(0, s[at]! + d);
          break;
        default:
          s[at] = Math.max(now, s[at]! + (d * W) / p.limit);
      }
    }
    entry.expiresAt = now + this.#ttlMs;
  }

  reset(key: string): void {
    this.#map.delete(key);
  }

  /** Deletes every key whose state has expired. */
  sweep(): void {
    const now = this.#clock.now();
    for (const [key, entry] of this.#map) {
      if (entry.expiresAt <= now) {
        this.#map.delete(key);
        this.#pruned++;
      }
    }
  }

  async close(): Promise<void> {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#map.clear();
  }

  /**
   * Lazy sweep: once per half TTL of clock time, walk the map in slices of {@link SWEEP_SLICE} entries per
   * check until done. Between sweeps a check pays one comparison; every key in the map was written
   * within the last 1.5 TTL, so the walk is at most a few entries per check it covers.
   */
  #sweepSome(now: number): void {
    if (this.#sweeper === undefined) this.#sweeper = this.#map.entries();
    for (let k = 0; k < SWEEP_SLICE; k++) {
      const next = this.#sweeper.next();
      if (next.done) {
        this.#sweeper = undefined;
        this.#sweepDue = now + this.#ttlMs / 2;
        return;
      }
      if (next.value[1].expiresAt <= now) {
        this.#map.delete(next.value[0]);
        this.#pruned++;
      }
    }
  }
}

/**
 * Brings a policy's state up to `now` without charging anything. State layout at `at`:
 * fixed window [windowStart, count]; sliding window [windowStart, current, previous];
 * token bucket [used, lastRefill] (used = capacity - tokens, so zeroed state is a full bucket);
 * GCRA [theoretical arrival time].
 */
function normalize(p: CompiledPolicy, s: Float64Array, at: number, log: Log | undefined, now: number): void {
  const W = p.windowMs;
  switch (p.code) {
    case 0: {
      // Still inside the window held: no division to find the window of `now`.
      const start = s[at]!;
      if (now >= start && now - start < W) return;
      s[at] = Math.floor(now / W) * W;
      s[at + 1] = 0;
      return;
    }
    case 1: {
      const start = s[at]!;
      if (now >= start && now - start < W) return;
      const ws = Math.floor(now / W) * W;
      s[at + 2] = start + W === ws ? s[at + 1]! : 0;
      s[at + 1] = 0;
      s[at] = ws;
      return;
    }
    case 2:
      log!.prune(now - W);
      return;
    case 3: {
      const elapsed = now - s[at + 1]!;
      if (elapsed > 0) {
        s[at] = Math.max(0, s[at]! - (elapsed * p.limit) / W);
        s[at + 1] = now;
      }
      return;
    }
    default:
      if (s[at]! < now) s[at] = now;
  }
}

/** The whole check of a single policy without a log: decides, charges, and writes its figures. */
function decideOne(p: CompiledPolicy, s: Float64Array, c: number, now: number, out: Float64Array): boolean {
  const allowed = decide(p, s, 0, undefined, c, now, out, 0);
  if (allowed && c > 0) {
    commit(p, s, 0, c, now);
    out[0]! -= c;
  }
  out[1] = resetOf(p, s, 0, undefined, now);
  return allowed;
}

/** Normalizes, writes remaining (before the charge) and retry-after; returns whether `c` fits. */
function decide(
  p: CompiledPolicy,
  s: Float64Array,
  at: number,
  log: Log | undefined,
  c: number,
  now: number,
  out: Float64Array,
  o: number,
): boolean {
  normalize(p, s, at, log, now);
  const W = p.windowMs;
  const L = p.limit;
  let remaining: number;
  switch (p.code) {
    case 0:
      remaining = L - s[at + 1]!;
      break;
    case 1:
      remaining = L - (s[at + 2]! * (W - (now - s[at]!))) / W - s[at + 1]!;
      break;
    case 2:
      remaining = L - log!.sum;
      break;
    case 3:
      remaining = L - s[at]!;
      break;
    default:
      remaining = L - ((s[at]! - now) * L) / W;
  }
  out[o] = remaining;
  // A tiny tolerance absorbs float error from fractional refills.
  if (c <= 0 || remaining - c >= -1e-9) {
    out[o + 2] = 0;
    return true;
  }
  out[o + 2] = retryAfter(p, s, at, log, c, now);
  return false;
}

function retryAfter(
  p: CompiledPolicy,
  s: Float64Array,
  at: number,
  log: Log | undefined,
  c: number,
  now: number,
): number {
  const W = p.windowMs;
  const L = p.limit;
  switch (p.code) {
    case 0:
      return s[at]! + W - now;
    case 1: {
      const ws = s[at]!;
      const curr = s[at + 1]!;
      const prev = s[at + 2]!;
      if (prev > 0 && curr + c <= L) return ws + W * (1 - (L - curr - c) / prev) - now;
      return ws + W + W * (1 - (L - c) / curr) - now;
    }
    case 2: {
      const l = log!;
      let excess = l.sum + c - L;
      for (let k = l.head; k < l.t.length; k++) {
        excess -= l.c[k]!;
        if (excess <= 1e-9) return l.t[k]! + W - now;
      }
      return W;
    }
    case 3:
      return ((s[at]! - (L - c)) * W) / L;
    default:
      return s[at]! + (c * W) / L - W - now;
  }
}

function commit(p: CompiledPolicy, s: Float64Array, at: number, c: number, now: number): void {
  switch (p.code) {
    case 0:
    case 1:
      s[at + 1]! += c;
      return;
    case 3:
      s[at]! += c;
      s[at + 1] = now;
      return;
    default:
      s[at]! += (c * p.windowMs) / p.limit;
  }
}

/** Ms until the whole quota is available again. */
function resetOf(p: CompiledPolicy, s: Float64Array, at: number, log: Log | undefined, now: number): number {
  const W = p.windowMs;
  switch (p.code) {
    case 0:
      return s[at + 1]! > 0 ? s[at]! + W - now : 0;
    case 1:
      if (s[at + 1]! > 0) return s[at]! + 2 * W - now;
      return s[at + 2]! > 0 ? s[at]! + W - now : 0;
    case 2: {
      const l = log!;
      return l.head < l.t.length ? l.t[l.t.length - 1]! + W - now : 0;
    }
    case 3:
      return (s[at]! * W) / p.limit;
    default:
      return Math.max(0, s[at]! - now);
  }
}
