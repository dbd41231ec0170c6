/**
 * The gateway's per-tenant limits, `rpm` and `tpm`, counted over a sliding window of one minute.
 *
 * A window aligned to the clock let a tenant with `rpm=1` make two calls 16 s apart, one each side of a
 * minute, and up to twice its limit in any minute. Each limit is a sliding log (clawperf/concurrency's
 * `'sliding-log'`): every admitted request (with its tokens) counts for exactly one window after it, so a
 * fresh tenant may spend its whole limit at once, and no span of one window ever holds more than the limit.
 * Sliding-window counters (Cloudflare's approximation) could still admit more than the limit after a burst,
 * and a token bucket refills while the burst is still inside the window. A log costs one entry per admitted
 * request of the last window (per tenant and limit), in memory or in a Redis sorted set.
 *
 * @module
 */
import { RateLimiter, type RateLimitPolicy } from '../concurrency/index.ts';
import type { Clock } from '../internal/clock.ts';
import type { RedisInput } from '../internal/redis.ts';
import type { GatewayLimits } from './config.ts';

/** The window the limits count over: `rpm` and `tpm` are per minute. @default 60000 */
export const LIMITS_WINDOW_MS = 60_000;

/** Where and how the limits count. */
export interface LimiterOptions {
  /** Redis (a URL, or a client the caller closes): limits shared, exactly, by every gateway on it. Without it they are per process. */
  redis?: RedisInput;
  /** How long a Redis command may take before the local fallback decides, ms. @default 100 */
  commandTimeoutMs?: number;
  /** Time source of limits kept in memory (Redis uses its own clock). @default the wall clock */
  clock?: Clock;
  /** The window, ms; `rpm` and `tpm` are then per this window. @default LIMITS_WINDOW_MS */
  windowMs?: number;
}

/** The limiter of `limits`, or undefined when nothing is limited. */
export function createLimiter(
  limits: GatewayLimits | undefined,
  options: LimiterOptions = {},
): RateLimiter | undefined {
  const windowMs = options.windowMs ?? LIMITS_WINDOW_MS;
  const policies: RateLimitPolicy[] = [];
  const policy = (name: string, limit: number | undefined, unit: 'requests' | 'tokens') => {
    if (limit !== undefined) policies.push({ name, algorithm: 'sliding-log', windowMs, limit, unit });
  };
  policy('requests', limits?.rpm, 'requests');
  policy('tokens', limits?.tpm, 'tokens');
  if (policies.length === 0) return undefined;
  const limiter = new RateLimiter({
    policies,
    redis: options.redis,
    commandTimeoutMs: options.commandTimeoutMs,
    keyPrefix: 'clawperf:gw:rl',
    clock: options.clock,
  });
  // A Redis failure is counted in the limiter's stats, and each node falls back to its own counters.
  limiter.on('store-error', () => {});
  return limiter;
}
