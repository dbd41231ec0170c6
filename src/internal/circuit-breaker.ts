import { CircuitOpenError } from '../errors.ts';
import { type Clock, systemClock } from './clock.ts';
import * as check from './options.ts';

/** @default 5 */
export const DEFAULT_FAILURE_THRESHOLD = 5;
/** @default 5000 */
export const DEFAULT_COOLDOWN_MS = 5_000;

export type CircuitState = 'closed' | 'open' | 'half-open';

/** Numeric codes for {@link CircuitState} in `stats()`, which holds numbers only. */
export const CIRCUIT_STATE_CODE: Readonly<Record<CircuitState, number>> = {
  closed: 0,
  open: 1,
  'half-open': 2,
};

export interface CircuitBreakerOptions {
  /** Name used in errors. @default 'circuit' */
  name?: string;
  /** Consecutive failures that open the circuit. @default 5 */
  failureThreshold?: number;
  /** How long the circuit stays open before one probe is let through, in ms. @default 5000 */
  cooldownMs?: number;
  /**
   * How long a half-open probe holds its slot without reporting, in ms. A probe that outlives its lease is
   * taken as lost and the next caller probes instead, so a caller that never reports cannot wedge the
   * circuit. Set it to the longest a guarded call may take. @default cooldownMs
   */
  probeLeaseMs?: number;
  clock?: Clock;
  /** Called on every state change; a throwing listener is contained. */
  onStateChange?: (state: CircuitState, previous: CircuitState) => void;
}

/**
 * The right to make one call through a {@link CircuitBreaker}, and the way to report how it went. The first
 * report counts; later ones are ignored, so a `finally { permit.release() }` after the real verdict is safe.
 */
export interface BreakerPermit {
  /** The call succeeded: the dependency works. */
  success(): void;
  /** The call failed in a way that says the dependency is unhealthy (error, timeout, 5xx). */
  failure(): void;
  /** The call ended saying nothing of the dependency's health (a 429, the caller gave up): frees the slot. */
  release(): void;
}

/**
 * The one circuit breaker every component shares. Closed: calls pass, consecutive failures are counted.
 * After `failureThreshold` of them it opens: calls are refused at once (no timeout paid) for `cooldownMs`.
 * Then it is half-open: exactly one probe passes; its success closes the circuit, its failure reopens it,
 * and a probe released without a verdict (or one that outlives `probeLeaseMs`) lets the next caller probe.
 * Only the current probe decides in half-open state: a report from a call let through while the circuit was
 * closed, or from a probe whose lease ran out, changes nothing.
 */
export class CircuitBreaker {
  readonly #name: string;
  readonly #threshold: number;
  readonly #cooldownMs: number;
  readonly #probeLeaseMs: number;
  readonly #clock: Clock;
  readonly #onStateChange: CircuitBreakerOptions['onStateChange'];
  /** The permit of every call made while closed: shared, so the closed path allocates nothing. */
  readonly #closedPermit: BreakerPermit;
  #state: CircuitState = 'closed';
  #consecutiveFailures = 0;
  #openedAt = 0;
  #probe: BreakerPermit | undefined;
  #probeExpiresAt = 0;
  #failures = 0;
  #successes = 0;
  #rejected = 0;
  #opens = 0;

  /**
   * @param path How messages name the options object (`options.breaker` when a `MultiLevelCache` makes the
   *   breaker from its `breaker` option).
   * @throws {TypeError} naming the option, its allowed range and the value, when an option is invalid.
   */
  constructor(options: CircuitBreakerOptions = {}, path = 'options') {
    check.object(path, options);
    this.#name = options.name ?? 'circuit';
    this.#threshold = check.integer(
      `${path}.failureThreshold`,
      options.failureThreshold ?? DEFAULT_FAILURE_THRESHOLD,
      1,
    );
    this.#cooldownMs = check.number(`${path}.cooldownMs`, options.cooldownMs ?? DEFAULT_COOLDOWN_MS);
    this.#probeLeaseMs = check.number(`${path}.probeLeaseMs`, options.probeLeaseMs ?? this.#cooldownMs);
    this.#clock = options.clock === undefined ? systemClock : check.clock(`${path}.clock`, options.clock);
    this.#onStateChange = options.onStateChange;
    this.#closedPermit = {
      success: () => {
        this.#successes++;
        this.#consecutiveFailures = 0;
      },
      failure: () => {
        this.#failures++;
        if (this.#state === 'closed' && ++this.#consecutiveFailures >= this.#threshold) this.#open();
      },
      release: () => {},
    };
  }

  get state(): CircuitState {
    if (this.#state === 'open' && this.#clock.now() - this.#openedAt >= this.#cooldownMs) return 'half-open';
    return this.#state;
  }

  /**
   * A permit for one call, or `undefined` when the circuit refuses it (open, or half-open with a probe under
   * way). Report the call's outcome on the permit.
   */
  acquire(): BreakerPermit | undefined {
    if (this.#state === 'closed') return this.#closedPermit;
    const now = this.#clock.now();
    if (this.#state === 'open') {
      if (now - this.#openedAt < this.#cooldownMs) {
        this.#rejected++;
        return undefined;
      }
      this.#transition('half-open');
    }
    if (this.#probe !== undefined && now < this.#probeExpiresAt) {
      this.#rejected++;
      return undefined;
    }
    const probe = this.#newProbe();
    this.#probe = probe;
    this.#probeExpiresAt = now + this.#probeLeaseMs;
    return probe;
  }

  /** Milliseconds until the next probe may pass (0 when calls pass now). */
  retryAfterMs(): number {
    if (this.#state !== 'open') return 0;
    return Math.max(0, Math.ceil(this.#openedAt + this.#cooldownMs - this.#clock.now()));
  }

  /** Runs `fn` through the breaker; rejects with {@link CircuitOpenError} without calling it while open. */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    const permit = this.acquire();
    if (permit === undefined) throw new CircuitOpenError(this.#name, this.retryAfterMs());
    let result: T;
    try {
      result = await fn();
    } catch (error) {
      permit.failure();
      throw error;
    }
    permit.success();
    return result;
  }

  /** Closes the circuit and forgets failures (the dependency is known to be back). */
  reset(): void {
    this.#consecutiveFailures = 0;
    this.#probe = undefined;
    if (this.#state !== 'closed') this.#transition('closed');
  }

  stats(): { state: number; failures: number; successes: number; rejected: number; opens: number } {
    return {
      state: CIRCUIT_STATE_CODE[this.state],
      failures: this.#failures,
      successes: this.#successes,
      rejected: this.#rejected,
      opens: this.#opens,
    };
  }

  #newProbe(): BreakerPermit {
    let settled = false;
    // Only the current probe of a half-open circuit decides; a superseded one just counts.
    const settle = (verdict: 'success' | 'failure' | 'release'): void => {
      if (settled) return;
      settled = true;
      if (verdict === 'success') this.#successes++;
      else if (verdict === 'failure') this.#failures++;
      if (this.#probe !== probe || this.#state !== 'half-open') return;
      this.#probe = undefined;
      if (verdict === 'success') {
        this.#consecutiveFailures = 0;
        this.#transition('closed');
      } else if (verdict === 'failure') {
        this.#open();
      }
    };
    const probe: BreakerPermit = {
      success: () => settle('success'),
      failure: () => settle('failure'),
      release: () => settle('release'),
    };
    return probe;
  }

  #open(): void {
    this.#openedAt = this.#clock.now();
    this.#consecutiveFailures = 0;
    this.#probe = undefined;
    this.#opens++;
    this.#transition('open');
  }

  #transition(next: CircuitState): void {
    const previous = this.#state;
    if (previous === next) return;
    this.#state = next;
    if (this.#onStateChange === undefined) return;
    try {
      this.#onStateChange(next, previous);
    } catch {
      // A listener must not break the breaker or the call it guards.
    }
  }
}
