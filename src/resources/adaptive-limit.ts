import * as check from '../internal/options.ts';

/** @default 20 */
export const DEFAULT_INITIAL_LIMIT = 20;
/** @default 3 */
export const DEFAULT_MIN_LIMIT = 3;
/** @default 1000 */
export const DEFAULT_MAX_LIMIT = 1_000;
/** @default 100 */
export const DEFAULT_UPDATE_INTERVAL_MS = 100;
/** @default 10 */
export const DEFAULT_MIN_WINDOW_SAMPLES = 10;
/** @default 0.25 */
export const DEFAULT_BUFFER_RATIO = 0.25;
/** @default 0.2 */
export const DEFAULT_SMOOTHING = 0.2;
/** @default 60000 */
export const DEFAULT_PROBE_INTERVAL_MS = 60_000;
/** @default 50 */
export const DEFAULT_PROBE_SAMPLES = 50;
/** @default 0.1 */
export const DEFAULT_PROBE_JITTER_RATIO = 0.1;

const MIN_GRADIENT = 0.5;
const MAX_GRADIENT = 2;
// What a refusal for overload leaves of the limit.
const DROP_RATIO = 0.5;
// Latencies kept per window; beyond this the newest overwrite the oldest, which is enough for a median.
const WINDOW_CAPACITY = 256;

/** Options of {@link AdaptiveLimit} (and of `maxConcurrency: { ... }` on the BackpressureController). */
export interface AdaptiveLimitOptions {
  /** The limit used until the first update. @default 20 */
  initialLimit?: number;
  /** The limit never goes below this; it is also the concurrency the baseline is measured at. @default 3 */
  minLimit?: number;
  /** The limit never goes above this. @default 1000 */
  maxLimit?: number;
  /** How often the limit is recomputed from the latencies observed since the last update, in ms. @default 100 */
  updateIntervalMs?: number;
  /** Completions a window needs before it may change the limit. @default 10 */
  minWindowSamples?: number;
  /** Latency tolerated above the baseline before the limit shrinks, as a ratio of the baseline. @default 0.25 */
  bufferRatio?: number;
  /** How far each update moves the limit toward its target (1 = all the way). @default 0.2 */
  smoothing?: number;
  /** How often the baseline (no-load latency) is measured again, in ms. @default 60000 */
  probeIntervalMs?: number;
  /** Completions, started at `minLimit` concurrency, whose median is the baseline. @default 50 */
  probeSamples?: number;
  /** Random spread of `probeIntervalMs`, so a fleet does not probe in step. @default 0.1 */
  probeJitterRatio?: number;
  /** Source of the jitter, a number in [0, 1). @default Math.random */
  random?: () => number;
}

/**
 * A concurrency limit that follows the latency of what it protects, in the manner of Envoy's adaptive
 * concurrency filter and Netflix's Gradient2: it measures the no-load latency (the baseline) by briefly
 * holding concurrency at `minLimit`, then every `updateIntervalMs` compares the median latency of the last
 * window with the baseline. While latency stays within `bufferRatio` of the baseline the limit grows (by up
 * to 2x plus sqrt(limit) headroom); when latency rises the limit shrinks (by at most half per update). The
 * baseline is measured again every `probeIntervalMs` so it follows a dependency whose speed changes.
 *
 * It keeps no timer: time advances with the samples fed to {@link AdaptiveLimit.onSample}.
 *
 * @example
 * const limit = new AdaptiveLimit({ initialLimit: 10 });
 * const start = performance.now();
 * await callDependency();
 * limit.onSample(start, performance.now(), inFlight);
 * limit.limit; // the concurrency to allow now
 */
export class AdaptiveLimit {
  readonly minLimit: number;
  readonly maxLimit: number;
  readonly #updateIntervalMs: number;
  readonly #minWindowSamples: number;
  readonly #bufferRatio: number;
  readonly #smoothing: number;
  readonly #probeIntervalMs: number;
  readonly #probeSamples: number;
  readonly #probeJitterRatio: number;
  readonly #random: () => number;

  #estimate: number;
  #limit: number;
  #probing = true;
  #probeStartedAt = Number.NEGATIVE_INFINITY;
  #nextProbeAt = 0;
  #baselineMs = 0;
  #windowStartedAt = Number.NaN;
  #window = new Float64Array(WINDOW_CAPACITY);
  #windowCount = 0;
  #windowMaxInFlight = 0;
  #lastWindowMs = 0;
  #updates = 0;
  #probes = 0;
  #lastDropAt = Number.NEGATIVE_INFINITY;

  /**
   * @param path How messages name the options object (`options.maxConcurrency` when a
   *   `BackpressureController` makes the limit). @internal
   * @throws {TypeError} naming the option, its allowed range and the value, when an option is invalid.
   */
  constructor(options?: AdaptiveLimitOptions, path = 'options') {
    const o = check.object<AdaptiveLimitOptions>(path, options);
    const at = (name: string) => `${path}.${name}`;
    this.minLimit = check.integer(at('minLimit'), o.minLimit ?? DEFAULT_MIN_LIMIT, 1);
    this.maxLimit = check.compared(
      at('maxLimit'),
      check.integer(at('maxLimit'), o.maxLimit ?? DEFAULT_MAX_LIMIT, 1),
      '>=',
      at('minLimit'),
      this.minLimit,
    );
    const initial = check.integer(at('initialLimit'), o.initialLimit ?? DEFAULT_INITIAL_LIMIT, this.minLimit);
    check.compared(at('initialLimit'), initial, '<=', at('maxLimit'), this.maxLimit);
    this.#updateIntervalMs = check.number(
      at('updateIntervalMs'),
      o.updateIntervalMs ?? DEFAULT_UPDATE_INTERVAL_MS,
    );
    this.#minWindowSamples = check.integer(
      at('minWindowSamples'),
      o.minWindowSamples ?? DEFAULT_MIN_WINDOW_SAMPLES,
      1,
    );
    this.#bufferRatio = check.number(at('bufferRatio'), o.bufferRatio ?? DEFAULT_BUFFER_RATIO);
    this.#smoothing = check.ratio(at('smoothing'), o.smoothing ?? DEFAULT_SMOOTHING);
    if (this.#smoothing === 0) check.invalid(at('smoothing'), 'a number in (0, 1]', 0);
    this.#probeIntervalMs = check.number(
      at('probeIntervalMs'),
      o.probeIntervalMs ?? DEFAULT_PROBE_INTERVAL_MS,
    );
    this.#probeSamples = check.integer(at('probeSamples'), o.probeSamples ?? DEFAULT_PROBE_SAMPLES, 1);
    this.#probeJitterRatio = check.ratio(
      at('probeJitterRatio'),
      o.probeJitterRatio ?? DEFAULT_PROBE_JITTER_RATIO,
    );
    this.#random = o.random === undefined ? Math.random : check.fn(at('random'), o.random);
    this.#estimate = initial;
    this.#limit = this.minLimit;
  }

  /** The concurrency to allow now: `minLimit` while the baseline is measured, the estimate otherwise. */
  get limit(): number {
    return this.#limit;
  }

  /** True while the baseline is being measured. */
  get probing(): boolean {
    return this.#probing;
  }

  /**
   * Records one completed call: when it started and ended (ms, on one clock) and how many calls were in
   * flight when it ended, itself included. Returns the limit to use from now on.
   */
  onSample(startedAt: number, endedAt: number, inFlight: number): number {
    const rtt = endedAt - startedAt;
    if (this.#probing) {
      // Only calls started after the probe began ran at probe concurrency.
      if (startedAt < this.#probeStartedAt) return this.#limit;
      this.#record(rtt);
      if (this.#windowCount >= this.#probeSamples) this.#endProbe(endedAt);
      return this.#limit;
    }
    if (Number.isNaN(this.#windowStartedAt)) this.#windowStartedAt = endedAt;
    this.#record(rtt);
    if (inFlight > this.#windowMaxInFlight) this.#windowMaxInFlight = inFlight;
    if (
      endedAt - this.#windowStartedAt >= this.#updateIntervalMs &&
      this.#windowCount >= this.#minWindowSamples
    ) {
      this.#update(endedAt);
    }
    return this.#limit;
  }

  /**
   * Records one failed call. A failure as slow as the latency the limit tolerates (a timeout) is a sample
   * like any other: it says the dependency is slow. A faster one (a refusal, an open circuit, a 503 answered
   * at once) says nothing of its speed under load and is not counted: fed as samples, an outage's instant
   * failures would read as a fast dependency and raise the limit.
   */
  onFailure(startedAt: number, endedAt: number, inFlight: number): number {
    if (this.#probing || endedAt - startedAt < this.#baselineMs * (1 + this.#bufferRatio)) return this.#limit;
    return this.onSample(startedAt, endedAt, inFlight);
  }

  /**
   * Records a call the dependency refused because it is overloaded (a 503 under load: the caller says which
   * failures are). Latency cannot tell, since refusals are fast: the limit halves, at most once per update
   * interval (a burst of refusals is one signal), and grows back with the latency as it does after any
   * update. Ignored while the baseline is measured (the limit is at its minimum then).
   */
  onDrop(at: number): number {
    if (this.#probing || at - this.#lastDropAt < this.#updateIntervalMs) return this.#limit;
    this.#lastDropAt = at;
    this.#estimate = Math.max(this.minLimit, this.#estimate * DROP_RATIO);
    this.#limit = Math.round(this.#estimate);
    this.#resetWindow(at);
    return this.#limit;
  }

  /** Counters and the current estimate, numbers only. */
  stats(): { limit: number; baselineMs: number; windowLatencyMs: number; updates: number; probes: number } {
    return {
      limit: this.#limit,
      baselineMs: this.#baselineMs,
      windowLatencyMs: this.#lastWindowMs,
      updates: this.#updates,
      probes: this.#probes,
    };
  }

  #record(rtt: number): void {
    this.#window[this.#windowCount % WINDOW_CAPACITY] = rtt;
    this.#windowCount++;
  }

  #median(): number {
    const values = this.#window.subarray(0, Math.min(this.#windowCount, WINDOW_CAPACITY)).sort();
    const mid = values.length >> 1;
    return values.length % 2 === 1 ? values[mid]! : (values[mid - 1]! + values[mid]!) / 2;
  }

  #resetWindow(at: number): void {
    this.#windowCount = 0;
    this.#windowMaxInFlight = 0;
    this.#windowStartedAt = at;
  }

  #endProbe(at: number): void {
    this.#baselineMs = this.#median();
    this.#probing = false;
    this.#probes++;
    this.#limit = Math.round(this.#estimate);
    const jitter = 1 + this.#probeJitterRatio * (2 * this.#random() - 1);
    this.#nextProbeAt = at + this.#probeIntervalMs * jitter;
    this.#resetWindow(Number.NaN);
  }

  #update(at: number): void {
    const latency = this.#median();
    this.#lastWindowMs = latency;
    const raw = latency > 0 ? (this.#baselineMs * (1 + this.#bufferRatio)) / latency : MAX_GRADIENT;
    const gradient = Math.min(MAX_GRADIENT, Math.max(MIN_GRADIENT, raw));
    let target = this.#estimate * gradient + Math.sqrt(this.#estimate);
    // A limit that is not being used says nothing about whether a larger one would be safe.
    if (this.#windowMaxInFlight < this.#estimate / 2) target = Math.min(target, this.#estimate);
    const next = this.#estimate + this.#smoothing * (target - this.#estimate);
    this.#estimate = Math.min(this.maxLimit, Math.max(this.minLimit, next));
    this.#limit = Math.round(this.#estimate);
    this.#updates++;
    this.#resetWindow(at);
    if (at >= this.#nextProbeAt) {
      this.#probing = true;
      this.#probeStartedAt = at;
      this.#limit = this.minLimit;
      this.#resetWindow(Number.NaN);
    }
  }
}
