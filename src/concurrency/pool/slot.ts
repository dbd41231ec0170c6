/**
 * A pooled resource as the pool keeps it (a slot) and as a borrower holds it (a lease), and the check that
 * decides whether it may still be lent.
 *
 * @module
 */
import { PoolReleaseError } from '../../errors.ts';

/** Why a resource was destroyed, as given to the `'destroy'` event. */
export type DestroyReason = 'idle' | 'lifetime' | 'invalid' | 'destroyed' | 'drain';

/** The pool's record of one resource. */
export interface Slot<C> {
  readonly id: number;
  readonly connection: C;
  readonly createdAt: number;
  lastUsedAt: number;
  lease: PooledConnection<C> | null;
  borrowedAt: number;
  stack: string;
  leakReported: boolean;
  /** Destroyed while borrowed (drain timeout): its lease's release is then a no-op. */
  dead: boolean;
  readonly owner: object;
}

/** A slot for a resource just created by `owner`. */
export function newSlot<C>(id: number, connection: C, now: number, owner: object): Slot<C> {
  return {
    id,
    connection,
    createdAt: now,
    lastUsedAt: now,
    lease: null,
    borrowedAt: 0,
    stack: '',
    leakReported: false,
    dead: false,
    owner,
  };
}

let slotOf: <C>(lease: PooledConnection<C>) => Slot<C>;

/** One borrow of a pooled resource: give it back with `pool.release(lease)` (once). */
export class PooledConnection<C> {
  /** The resource's id, stable across borrows. */
  readonly id: number;
  /** The resource itself. */
  readonly connection: C;
  readonly #slot: Slot<C>;

  static {
    slotOf = (lease) => lease.#slot;
  }

  /** @internal */
  constructor(slot: Slot<C>) {
    this.id = slot.id;
    this.connection = slot.connection;
    this.#slot = slot;
  }
}

/**
 * Takes back a lease `owner` lent: its slot, no longer lent; undefined when a drain already destroyed the
 * resource (a late release is ignored).
 *
 * @throws {PoolReleaseError} when the lease was already given back, or was not lent by `owner`; nothing
 *   changes then.
 */
export function reclaim<C>(lease: PooledConnection<C>, owner: object): Slot<C> | undefined {
  if (!(lease instanceof PooledConnection)) {
    throw new PoolReleaseError('release() was given something this pool did not lend');
  }
  const slot = slotOf(lease);
  if (slot.lease !== lease) {
    if (slot.dead) return undefined;
    throw new PoolReleaseError(`resource ${slot.id} was already released (or destroyed)`);
  }
  if (slot.owner !== owner) {
    throw new PoolReleaseError(`resource ${slot.id} was not lent by this pool`);
  }
  slot.lease = null;
  return slot;
}

/**
 * Runs `validate` on a resource: its verdict as it gave it (a boolean, or a promise of one), with a throw or
 * a rejection reported to `onError` and read as `false`.
 */
export function judge<C>(
  validate: (connection: C) => boolean | Promise<boolean>,
  connection: C,
  onError: (error: unknown) => void,
): boolean | Promise<boolean> {
  let verdict: boolean | Promise<boolean>;
  try {
    verdict = validate(connection);
  } catch (error) {
    onError(error);
    return false;
  }
  if (typeof verdict !== 'object' || verdict === null || typeof verdict.then !== 'function') {
    return verdict === true;
  }
  return Promise.resolve(verdict).then(
    (ok) => ok === true,
    (error) => {
      onError(error);
      return false;
    },
  );
}
