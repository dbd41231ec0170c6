/**
 * Creating and destroying pooled resources: creations bounded by a timeout, retried with exponential
 * backoff while they fail, and destructions tracked until they are done.
 *
 * @module
 */
import { TimeoutError } from '../../errors.ts';
import type { Cancel, SetTimer } from '../../internal/clock.ts';
import { failSpan, startSpan } from '../../internal/telemetry.ts';
import type { PoolSettings } from './options.ts';

/** The pool settings creating and destroying go by. */
export type FactorySettings<C> = Pick<
  PoolSettings<C>,
  'create' | 'destroy' | 'createTimeoutMs' | 'createRetryBaseMs' | 'createRetryMaxMs' | 'clock'
>;

/** What the factory tells its pool. */
export interface FactoryEvents<C> {
  /** A creation succeeded. */
  onCreate: (connection: C) => void;
  /** A creation failed or timed out (already counted, and the backoff set). */
  onCreateError: (error: unknown) => void;
  /** The backoff after a failure is over: creations may start again. */
  onRetry: () => void;
  /** `destroy` threw or rejected. */
  onDestroyError: (error: unknown) => void;
}

const noop: Cancel = () => {};

/**
 * Starts creations and destructions for a pool. While `create` works, every creation asked for starts at
 * once; once it fails, one attempt at a time, each after a backoff that doubles per consecutive failure (with
 * jitter), so an outage never turns into a busy loop and the pool refills by itself when the resource
 * returns.
 */
export class ResourceFactory<C> {
  readonly #s: FactorySettings<C>;
  readonly #setTimer: SetTimer;
  readonly #on: FactoryEvents<C>;
  readonly #destroying = new Set<Promise<void>>();
  #creating = 0;
  #consecutiveFailures = 0;
  #lastError: unknown;
  #retryAt = 0;
  #cancelRetry: Cancel | undefined;
  #createErrors = 0;
  #destroyErrors = 0;

  constructor(settings: FactorySettings<C>, setTimer: SetTimer, on: FactoryEvents<C>) {
    this.#s = settings;
    this.#setTimer = setTimer;
    this.#on = on;
  }

  /** Creations under way. */
  get creating(): number {
    return this.#creating;
  }

  /** Whether the last creation failed (so the next waits for its backoff). */
  get failing(): boolean {
    return this.#consecutiveFailures > 0;
  }

  /** The error of the last creation, while creations fail. */
  get lastError(): unknown {
    return this.#lastError;
  }

  get createErrors(): number {
    return this.#createErrors;
  }

  get destroyErrors(): number {
    return this.#destroyErrors;
  }

  /**
   * Starts up to `want` creations, or, while creations fail, one once its backoff is over. `awaited`: a
   * caller waits for the result, so a backoff timer must keep the process alive.
   */
  start(want: number, awaited: boolean): void {
    if (this.#cancelRetry !== undefined) return;
    if (this.#consecutiveFailures > 0) {
      if (this.#creating > 0) return;
      const delay = this.#retryAt - this.#s.clock.now();
      if (delay > 0) {
        this.#cancelRetry = this.#setTimer(
          delay,
          () => {
            this.#cancelRetry = undefined;
            this.#on.onRetry();
          },
          awaited,
        );
        return;
      }
      want = Math.min(want, 1);
    }
    for (let i = 0; i < want; i++) this.#create();
  }

  /** Stops a pending retry (the pool is draining). */
  stop(): void {
    this.#cancelRetry?.();
    this.#cancelRetry = undefined;
  }

  /** Closes a resource; a failure is counted and reported, never thrown. */
  destroy(connection: C): Promise<void> {
    let done: Promise<void>;
    try {
      done = Promise.resolve(this.#s.destroy(connection));
    } catch (error) {
      done = Promise.reject(error);
    }
    const tracked = done.then(
      () => {
        this.#destroying.delete(tracked);
      },
      (error) => {
        this.#destroying.delete(tracked);
        this.#destroyErrors++;
        this.#on.onDestroyError(error);
      },
    );
    this.#destroying.add(tracked);
    return tracked;
  }

  /** Resolves when every destruction started so far has finished. */
  async destroyed(): Promise<void> {
    await Promise.all(this.#destroying);
  }

  #create(): void {
    this.#creating++;
    const span = startSpan('clawperf.pool.create');
    let done = false;
    let cancelTimeout: Cancel = noop;
    const settle = (connection: C | undefined, error: unknown, failed: boolean) => {
      if (done) {
        // A creation that resolves after its timeout: nobody counts on it any more.
        if (!failed) this.destroy(connection as C);
        return;
      }
      done = true;
      cancelTimeout();
      this.#creating--;
      if (failed) {
        failSpan(span, error);
        this.#failed(error);
      } else {
        span.end();
        this.#consecutiveFailures = 0;
        this.#lastError = undefined;
        this.#on.onCreate(connection as C);
      }
    };
    let pending: Promise<C>;
    try {
      pending = Promise.resolve(this.#s.create());
    } catch (error) {
      pending = Promise.reject(error);
    }
    const timeoutMs = this.#s.createTimeoutMs;
    cancelTimeout = this.#setTimer(timeoutMs, () =>
      settle(undefined, new TimeoutError('create', timeoutMs), true),
    );
    pending.then(
      (connection) => settle(connection, undefined, false),
      (error) => settle(undefined, error, true),
    );
  }

  #failed(error: unknown): void {
    this.#createErrors++;
    this.#lastError = error;
    const failures = ++this.#consecutiveFailures;
    const { createRetryBaseMs: base, createRetryMaxMs: max } = this.#s;
    const backoff = Math.min(max, base * 2 ** Math.min(failures - 1, 30));
    // Jitter (between half and all of the backoff) keeps many processes from retrying in step.
    this.#retryAt = this.#s.clock.now() + backoff * (0.5 + Math.random() / 2);
    this.#on.onCreateError(error);
  }
}
