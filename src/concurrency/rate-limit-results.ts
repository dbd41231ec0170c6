/**
 * How a `RateLimiter` reads a store's check into the {@link RateLimitResult} it returns: which policy
 * speaks for the result (refused, the longest wait; admitted, the smallest share left), the per-policy
 * statuses when there are several, and the reference a reservation settles against. Each result has the
 * same fields in the same order, so the engine sees one shape.
 *
 * @module
 */
import type { PolicyStatus, RateLimitReason, RateLimitResult } from './rate-limiter.ts';
import { type ChargeRef, type CheckOutput, type CompiledPolicy, OUT_STRIDE } from './stores/store.ts';

/** The result of a store's check: `out` holds, per policy, remaining, resetMs and retryAfterMs. */
export function readResult(
  allowed: boolean,
  out: CheckOutput,
  policies: readonly CompiledPolicy[],
  fallbackReason: RateLimitReason | undefined,
): RateLimitResult {
  // Small enough for the optimizer to inline into the limiter's check, the one-policy case with it.
  return policies.length === 1
    ? readOne(allowed, out, 0, policies[0]!, fallbackReason)
    : readMany(allowed, out, policies, fallbackReason);
}

/** The result as policy `p`, whose figures start at `out[o]`, tells it. */
function readOne(
  allowed: boolean,
  out: CheckOutput,
  o: number,
  p: CompiledPolicy,
  fallbackReason: RateLimitReason | undefined,
): RateLimitResult {
  const r = allowed
    ? result(true, 'allowed', p, floorRemaining(out[o]!), Math.ceil(out[o + 1]!), undefined, fallbackReason)
    : result(
        false,
        'limited',
        p,
        floorRemaining(out[o]!),
        Math.ceil(out[o + 1]!),
        Math.max(1, Math.ceil(out[o + 2]!)),
        'limit-exceeded',
      );
  if (fallbackReason !== undefined) r.degraded = true;
  return r;
}

/** Several policies: the deciding one speaks for the result, and every one has its status. */
function readMany(
  allowed: boolean,
  out: CheckOutput,
  policies: readonly CompiledPolicy[],
  fallbackReason: RateLimitReason | undefined,
): RateLimitResult {
  const n = policies.length;
  let pick = 0;
  let best = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < n; i++) {
    const o = i * OUT_STRIDE;
    // Refused: the longest wait decides. Admitted: the smallest share left decides.
    const score = allowed ? -out[o]! / policies[i]!.limit : out[o + 2]!;
    if (score > best) {
      best = score;
      pick = i;
    }
  }
  const r = readOne(allowed, out, pick * OUT_STRIDE, policies[pick]!, fallbackReason);
  const all: Record<string, PolicyStatus> = {};
  for (let i = 0; i < n; i++) {
    const q = policies[i]!;
    const k = i * OUT_STRIDE;
    const s: PolicyStatus = {
      limit: q.limit,
      remaining: floorRemaining(out[k]!),
      resetMs: Math.ceil(out[k + 1]!),
      unit: q.unit,
      windowMs: q.windowMs,
    };
    if (out[k + 2]! > 0) s.retryAfterMs = Math.max(1, Math.ceil(out[k + 2]!));
    all[q.name] = s;
  }
  r.policies = all;
  return r;
}

/** What an admitted reservation settles against: when it was charged, its log entries and its charges. */
export function chargeRef(out: CheckOutput, n: number, charges: readonly number[]): ChargeRef {
  const logIds = new Array<number>(n);
  const base = n * OUT_STRIDE + 1;
  for (let i = 0; i < n; i++) logIds[i] = out[base + i]!;
  return { at: out[n * OUT_STRIDE]!, logIds, charges: charges.slice() };
}

/** A request whose cost is more than `policy` could ever admit. */
export function tooLarge(policy: CompiledPolicy): RateLimitResult {
  return result(false, 'limited', policy, 0, 0, undefined, 'cost-exceeds-limit');
}

/** Every result has the same fields in the same order, so the engine sees one shape. */
export function result(
  allowed: boolean,
  status: RateLimitResult['status'],
  p: CompiledPolicy,
  remaining: number,
  resetMs: number,
  retryAfterMs: number | undefined,
  reason: RateLimitReason | undefined,
): RateLimitResult {
  return {
    allowed,
    status,
    policy: p.name,
    limit: p.limit,
    remaining,
    resetMs,
    retryAfterMs,
    reason,
    degraded: undefined,
    policies: undefined,
  };
}

function floorRemaining(x: number): number {
  return x > 0 ? Math.floor(x + 1e-9) : 0;
}
