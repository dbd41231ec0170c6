/**
 * Reaping: which idle resources are due to close (unused too long, or too old) and which borrowed ones have
 * been held long enough to report as leaks. The pool runs these every `reapIntervalMs`.
 *
 * @module
 */
import type { Slot } from './slot.ts';

/** The `'leak'` event's payload. */
export interface LeakReport {
  id: number;
  /** How long it has been borrowed, ms. */
  heldMs: number;
  /** Stack of the `acquire` call that borrowed it. */
  stack: string;
}

/** The limits reaping enforces; Infinity turns one off. */
export interface ReapPolicy {
  readonly min: number;
  readonly idleTimeoutMs: number;
  readonly maxLifetimeMs: number;
  readonly leakWarningMs: number;
}

/** Whether reaping has anything to do (else the pool sets no reap timer at all). */
export function reaps(policy: ReapPolicy, validatesIdle: boolean): boolean {
  return (
    policy.idleTimeoutMs !== Infinity ||
    policy.maxLifetimeMs !== Infinity ||
    policy.leakWarningMs !== Infinity ||
    validatesIdle
  );
}

/**
 * Takes the idle resources due to close out of `idle` (in place) and says why: older than `maxLifetimeMs`,
 * or unused for `idleTimeoutMs` while more than `min` of the `live` resources would be left.
 */
export function takeExpired<C>(
  idle: Slot<C>[],
  live: number,
  now: number,
  policy: ReapPolicy,
): [Slot<C>, 'lifetime' | 'idle'][] {
  const expired: [Slot<C>, 'lifetime' | 'idle'][] = [];
  for (let i = 0; i < idle.length; ) {
    const slot = idle[i]!;
    let reason: 'lifetime' | 'idle' | undefined;
    if (now - slot.createdAt >= policy.maxLifetimeMs) reason = 'lifetime';
    else if (now - slot.lastUsedAt >= policy.idleTimeoutMs && live > policy.min) reason = 'idle';
    if (reason === undefined) {
      i++;
      continue;
    }
    idle.splice(i, 1);
    live--;
    expired.push([slot, reason]);
  }
  return expired;
}

/** Borrowed resources held for `leakWarningMs` or longer and not reported yet; each is reported once. */
export function takeLeaks<C>(slots: Iterable<Slot<C>>, now: number, leakWarningMs: number): LeakReport[] {
  const leaks: LeakReport[] = [];
  for (const slot of slots) {
    if (slot.lease !== null && !slot.leakReported && now - slot.borrowedAt >= leakWarningMs) {
      slot.leakReported = true;
      leaks.push({ id: slot.id, heldMs: now - slot.borrowedAt, stack: slot.stack });
    }
  }
  return leaks;
}
