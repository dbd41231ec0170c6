/**
 * The limits of a {@link RateLimiter}: one policy (`windowMs` and `maxRequests`) or several (`policies`),
 * validated and compiled into the form the memory and Redis stores run.
 *
 * @module
 */
import * as check from '../internal/options.ts';
import { ALGORITHM_CODE, ALGORITHMS, type Algorithm, type CompiledPolicy } from './stores/store.ts';

/** @default 'fixed-window' */
export const DEFAULT_ALGORITHM: Algorithm = 'fixed-window';
/** @default 'default' */
export const DEFAULT_POLICY_NAME = 'default';
/** Most policies one limiter takes (each adds locals to the generated Lua, which allows 200). */
export const MAX_POLICIES = 16;

/** One limit on a key. */
export interface RateLimitPolicy {
  /** Names the policy in results and headers (`"rpm"`). */
  name: string;
  /** @default 'fixed-window' */
  algorithm?: Algorithm;
  /** The window (for token bucket and GCRA: the time to refill the whole limit), ms. */
  windowMs: number;
  /** Units admitted per window (bucket capacity / burst for token bucket and GCRA). */
  limit: number;
  /** What a call is charged: `cost` for `'requests'`, `tokens` for `'tokens'`. @default 'requests' */
  unit?: 'requests' | 'tokens';
}

/** The options that say what the limits are: the single-policy form, or `policies`. */
export interface RateLimitPolicyOptions {
  /** Single-policy form: the algorithm. @default 'fixed-window' */
  algorithm?: Algorithm;
  /** Single-policy form: the window, ms. */
  windowMs?: number;
  /** Single-policy form: requests per window. */
  maxRequests?: number;
  /** General form: every policy applies to every key, checked together, all-or-nothing. */
  policies?: readonly RateLimitPolicy[];
}

/**
 * The limits the options describe, validated and compiled for the stores: one policy for the single-policy
 * form, each of `policies` otherwise.
 * @throws {TypeError} naming the option, what it may be and the value.
 */
export function compilePolicies(o: RateLimitPolicyOptions): CompiledPolicy[] {
  let raw: readonly RateLimitPolicy[];
  if (o.policies !== undefined) {
    if (!Array.isArray(o.policies) || o.policies.length === 0 || o.policies.length > MAX_POLICIES) {
      check.invalid('options.policies', `an array of 1 to ${MAX_POLICIES} policies`, o.policies);
    }
    for (const single of ['windowMs', 'maxRequests'] as const) {
      if (o[single] !== undefined) {
        check.invalid(`options.${single}`, 'left out when options.policies is given', o[single]);
      }
    }
    raw = o.policies;
  } else {
    raw = [
      {
        name: DEFAULT_POLICY_NAME,
        algorithm: o.algorithm,
        windowMs: o.windowMs as number,
        limit: check.integer('options.maxRequests', o.maxRequests, 1),
      },
    ];
  }
  const names = new Set<string>();
  return raw.map((p, i) => {
    const at = o.policies === undefined ? 'options' : `options.policies[${i}]`;
    check.object(at, p);
    if (typeof p.name !== 'string' || !/^[A-Za-z0-9_.-]+$/.test(p.name)) {
      check.invalid(`${at}.name`, 'a non-empty token ([A-Za-z0-9_.-])', p.name);
    }
    if (names.has(p.name)) check.invalid(`${at}.name`, 'unique among the policies', p.name);
    names.add(p.name);
    const algorithm =
      p.algorithm === undefined
        ? ((o.policies === undefined ? o.algorithm : undefined) ?? DEFAULT_ALGORITHM)
        : check.oneOf(`${at}.algorithm`, p.algorithm, ALGORITHMS);
    if (o.policies === undefined && o.algorithm !== undefined)
      check.oneOf('options.algorithm', o.algorithm, ALGORITHMS);
    return {
      name: p.name,
      algorithm,
      code: ALGORITHM_CODE[algorithm],
      windowMs: check.integer(`${at}.windowMs`, p.windowMs, 1),
      limit: o.policies === undefined ? p.limit : check.positive(`${at}.limit`, p.limit),
      unit:
        p.unit === undefined
          ? 'requests'
          : check.oneOf(`${at}.unit`, p.unit, ['requests', 'tokens'] as const),
    };
  });
}
