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
  clock?: Clock;
  /** Called on every state change; a throwing listener is contained. */
  onStateChange?: (state: CircuitState, previous: CircuitState) => void;
}

/**
 * The one circuit breaker every component shares. Closed: calls pass, consecutive failures are counted.
 * After `failureThreshold` of them it opens: calls are refused at once (no timeout paid) for `cooldownMs`.
 * Then it is half-open: exactly one probe passes; its success closes the circuit, its failure reopens it.
 */
export class CircuitBreaker {
  readonly #name: string;
  readonly #threshold: number;
  readonly #cooldownMs: number;
  readonly #clock: Clock;
  readonly #onStateChange: CircuitBreakerOptions['onStateChange'];
  #state: CircuitState = 'closed';
  #consecutiveFailures = 0;
  #openedAt = 0;
  #probeInFlight = false;
  #failures = 0;
  #successes = 0;
  #rejected = 0;
  #opens = 0;

  constructor(options: CircuitBreakerOptions = {}) {
    check.object('options', options);
    this.#name = options.name ?? 'circuit';
    this.#threshold = check.integer(
      'options.failureThreshold',
      options.failureThreshold ?? DEFAULT_FAILURE_THRESHOLD,
      1,
    );
    this.#cooldownMs = check.number('options.cooldownMs', options.cooldownMs ?? DEFAULT_COOLDOWN_MS);
    this.#clock = options.clock === undefined ? systemClock : check.clock('options.clock', options.clock);
    this.#onStateChange = options.onStateChange;
  }

  get state(): CircuitState {
    if (this.#state === 'open' && this.#clock.now() - this.#openedAt >= this.#cooldownMs) return 'half-open';
    return this.#state;
  }

  /**
   * Whether a call may go ahead now. In half-open state only the first caller gets `true` (the probe);
   * whoever gets `true` must report the outcome with {@link success} or {@link failure}.
   */
  tryAcquire(): boolean {
    if (this.#state === 'closed') return true;
    if (this.#state === 'open') {
      if (this.#clock.now() - this.#openedAt < this.#cooldownMs) {
        this.#rejected++;
        return false;
      }
      this.#transition('half-open');
    }
    if (this.#probeInFlight) {
      this.#rejected++;
      return false;
    }
    this.#probeInFlight = true;
    return true;
  }

  /** Milliseconds until the next probe may pass (0 when calls pass now). */
  retryAfterMs(): number {
    if (this.#state !== 'open') return 0;
    return Math.max(0, Math.ceil(this.#openedAt + this.#cooldownMs - this.#clock.now()));
  }

  success(): void {
    this.#successes++;
    this.#consecutiveFailures = 0;
    if (this.#state === 'half-open') {
      this.#probeInFlight = false;
      this.#transition('closed');
    }
  }

  failure(): void {
    this.#failures++;
    if (this.#state === 'half-open') {
      this.#probeInFlight = false;
      this.#open();
      return;
    }
    if (this.#state === 'closed' && ++this.#consecutiveFailures >= this.#threshold) this.#open();
  }

  /** Runs `fn` through the breaker; rejects with {@link CircuitOpenError} without calling it while open. */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (!this.tryAcquire()) throw new CircuitOpenError(this.#name, this.retryAfterMs());
    let result: T;
    try {
      result = await fn();
    } catch (error) {
      this.failure();
      throw error;
    }
    this.success();
    return result;
  }

  /** Closes the circuit and forgets failures. */
  reset(): void {
    this.#consecutiveFailures = 0;
    this.#probeInFlight = false;
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

  #open(): void {
    this.#openedAt = this.#clock.now();
    this.#consecutiveFailures = 0;
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
