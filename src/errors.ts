/**
 * Every error clawperf throws or rejects with is a {@link ClawperfError}: one base class with a stable
 * `code` per subclass and the facts a caller needs to act on it. Match on `code` (or `instanceof`), never
 * on the message, which may change.
 *
 * Aborted waits are the exception: they reject with the `AbortSignal`'s own `reason`, as the platform does.
 *
 * @module
 */

/** Options every clawperf error accepts. */
export interface ClawperfErrorOptions {
  /** The underlying error, when there is one. */
  cause?: unknown;
}

/** Base class of every error the library throws. */
export class ClawperfError extends Error {
  /** Stable machine-readable code, `ERR_CLAWPERF_*`. */
  readonly code: string = 'ERR_CLAWPERF';

  constructor(message: string, options?: ClawperfErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A call reached a component after its `close()` (or `drain()`) began. */
export class ClosedError extends ClawperfError {
  override readonly code = 'ERR_CLAWPERF_CLOSED';
  /** The component that was closed. */
  readonly component: string;

  constructor(component: string, options?: ClawperfErrorOptions) {
    super(`${component} is closed`, options);
    this.component = component;
  }
}

/** Admission was refused because the work queue is full. Retry later or shed the request. */
export class OverloadedError extends ClawperfError {
  override readonly code = 'ERR_CLAWPERF_OVERLOADED';
  /** Callers waiting when this one was refused. */
  readonly queueSize: number;
  /** The configured bound on waiting callers. */
  readonly maxQueueSize: number;
  /** A hint for when a retry is likely to be admitted, in milliseconds. */
  readonly retryAfterMs: number;

  constructor(
    details: { queueSize: number; maxQueueSize: number; retryAfterMs: number; component?: string },
    options?: ClawperfErrorOptions,
  ) {
    super(
      `${details.component ?? 'queue'} is overloaded: ${details.queueSize} waiting (max ${details.maxQueueSize}); retry after ${details.retryAfterMs} ms`,
      options,
    );
    this.queueSize = details.queueSize;
    this.maxQueueSize = details.maxQueueSize;
    this.retryAfterMs = details.retryAfterMs;
  }
}

/** A caller waited in a queue longer than its timeout and was removed from it. */
export class QueueTimeoutError extends ClawperfError {
  override readonly code = 'ERR_CLAWPERF_QUEUE_TIMEOUT';
  /** The timeout that expired, in milliseconds. */
  readonly timeoutMs: number;

  constructor(timeoutMs: number, options?: ClawperfErrorOptions) {
    super(`waited in the queue for more than ${timeoutMs} ms`, options);
    this.timeoutMs = timeoutMs;
  }
}

/** A pool could not lend a resource within `acquireTimeoutMs`. `cause` holds the last creation error. */
export class AcquireTimeoutError extends ClawperfError {
  override readonly code = 'ERR_CLAWPERF_ACQUIRE_TIMEOUT';
  /** The timeout that expired, in milliseconds. */
  readonly timeoutMs: number;

  constructor(timeoutMs: number, options?: ClawperfErrorOptions) {
    super(`could not acquire a resource within ${timeoutMs} ms`, options);
    this.timeoutMs = timeoutMs;
  }
}

/**
 * A pool's `create` failed for the caller waiting on it. `cause` holds the creation error; the pool retries
 * with backoff for the callers still waiting and for `min`.
 */
export class ResourceCreateError extends ClawperfError {
  override readonly code = 'ERR_CLAWPERF_RESOURCE_CREATE';

  constructor(options?: ClawperfErrorOptions) {
    const cause = options?.cause;
    super(`could not create a resource: ${cause instanceof Error ? cause.message : String(cause)}`, options);
  }
}

/** A pooled resource was released twice, or something the pool never lent was released to it. */
export class PoolReleaseError extends ClawperfError {
  override readonly code = 'ERR_CLAWPERF_POOL_RELEASE';
}

/** A rate limit refused the call. */
export class RateLimitedError extends ClawperfError {
  override readonly code = 'ERR_CLAWPERF_RATE_LIMITED';
  /** The limited key. */
  readonly key: string;
  /** The limit that refused the call. */
  readonly limit: number;
  /** Milliseconds until a retry of the same cost can be admitted. */
  readonly retryAfterMs: number;
  /** The policy that refused the call, when several apply. */
  readonly policy: string | undefined;

  constructor(
    details: { key: string; limit: number; retryAfterMs: number; policy?: string },
    options?: ClawperfErrorOptions,
  ) {
    super(
      `rate limit${details.policy ? ` "${details.policy}"` : ''} of ${details.limit} exceeded for key "${details.key}"; retry after ${details.retryAfterMs} ms`,
      options,
    );
    this.key = details.key;
    this.limit = details.limit;
    this.retryAfterMs = details.retryAfterMs;
    this.policy = details.policy;
  }
}

/** One item of a batch failed: the whole batch failed (`cause`), or it got no result of its own. */
export class BatchItemError extends ClawperfError {
  override readonly code = 'ERR_CLAWPERF_BATCH_ITEM';
  /** The item's position in its batch. */
  readonly index: number;

  constructor(message: string, index: number, options?: ClawperfErrorOptions) {
    super(message, options);
    this.index = index;
  }
}

/** An operation took longer than its timeout. */
export class TimeoutError extends ClawperfError {
  override readonly code = 'ERR_CLAWPERF_TIMEOUT';
  /** The timeout that expired, in milliseconds. */
  readonly timeoutMs: number;

  constructor(what: string, timeoutMs: number, options?: ClawperfErrorOptions) {
    super(`${what} timed out after ${timeoutMs} ms`, options);
    this.timeoutMs = timeoutMs;
  }
}

/** A circuit breaker is open: the protected dependency failed repeatedly and is not being called. */
export class CircuitOpenError extends ClawperfError {
  override readonly code = 'ERR_CLAWPERF_CIRCUIT_OPEN';
  /** Milliseconds until the breaker lets a probe through. */
  readonly retryAfterMs: number;

  constructor(name: string, retryAfterMs: number, options?: ClawperfErrorOptions) {
    super(`circuit "${name}" is open; next probe in ${retryAfterMs} ms`, options);
    this.retryAfterMs = retryAfterMs;
  }
}

/** A cache key is not a non-empty string (or is too long). */
export class InvalidKeyError extends ClawperfError {
  override readonly code = 'ERR_CLAWPERF_INVALID_KEY';
  /** The rejected key, as given. */
  readonly key: unknown;

  constructor(key: unknown, reason: string, options?: ClawperfErrorOptions) {
    super(`invalid key ${describe(key)}: ${reason}`, options);
    this.key = key;
  }
}

/** A value could not be serialized for storage (or a stored value could not be read back). */
export class SerializationError extends ClawperfError {
  override readonly code = 'ERR_CLAWPERF_SERIALIZATION';
  /** The key the value belongs to. */
  readonly key: string;

  constructor(key: string, reason: string, options?: ClawperfErrorOptions) {
    super(`cannot serialize the value for key "${key}": ${reason}`, options);
    this.key = key;
  }
}

/** A value is larger than the configured `maxValueBytes`. */
export class ValueTooLargeError extends ClawperfError {
  override readonly code = 'ERR_CLAWPERF_VALUE_TOO_LARGE';
  /** The key the value belongs to. */
  readonly key: string;
  /** The value's size. */
  readonly bytes: number;
  /** The configured bound. */
  readonly maxBytes: number;

  constructor(key: string, bytes: number, maxBytes: number, options?: ClawperfErrorOptions) {
    super(`the value for key "${key}" is ${bytes} bytes, over the limit of ${maxBytes}`, options);
    this.key = key;
    this.bytes = bytes;
    this.maxBytes = maxBytes;
  }
}

/** A backing store (Redis, disk, a database) failed and the operation could not be served without it. */
export class StoreError extends ClawperfError {
  override readonly code = 'ERR_CLAWPERF_STORE';
  /** Which store failed (`'redis'`, `'disk'`, ...). */
  readonly store: string;

  constructor(store: string, message: string, options?: ClawperfErrorOptions) {
    super(`${store}: ${message}`, options);
    this.store = store;
  }
}

/** A profiling session is already running; only one runs at a time. */
export class ProfilerBusyError extends ClawperfError {
  override readonly code = 'ERR_CLAWPERF_PROFILER_BUSY';

  constructor(what: string, options?: ClawperfErrorOptions) {
    super(`a ${what} is already running`, options);
  }
}

/** An upstream service answered with an error or could not be reached. */
export class UpstreamError extends ClawperfError {
  override readonly code = 'ERR_CLAWPERF_UPSTREAM';
  /** The upstream's HTTP status, when it answered. */
  readonly status: number | undefined;
  /** Milliseconds the upstream asked us to wait (`Retry-After`), when it said. */
  readonly retryAfterMs: number | undefined;

  constructor(
    message: string,
    details: { status?: number; retryAfterMs?: number } = {},
    options?: ClawperfErrorOptions,
  ) {
    super(message, options);
    this.status = details.status;
    this.retryAfterMs = details.retryAfterMs;
  }
}

/** A configuration file or setting is invalid. The message names the setting. */
export class ConfigError extends ClawperfError {
  override readonly code = 'ERR_CLAWPERF_CONFIG';
  /** The setting at fault, as a dotted path. */
  readonly setting: string;

  constructor(setting: string, message: string, options?: ClawperfErrorOptions) {
    super(`${setting}: ${message}`, options);
    this.setting = setting;
  }
}

function describe(value: unknown): string {
  if (typeof value === 'string')
    return JSON.stringify(value.length > 64 ? `${value.slice(0, 64)}...` : value);
  if (value === null) return 'null';
  return typeof value;
}
