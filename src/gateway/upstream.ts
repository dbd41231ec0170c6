/**
 * The client of an OpenAI-compatible upstream: an undici keep-alive pool, retries with backoff that honour
 * `Retry-After` on 429 and 5xx, a circuit breaker, timeouts, and an optional outbound limiter fed with the
 * upstream's rate-limit headers.
 *
 * @module
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import { type Dispatcher, Pool } from 'undici';
import { CircuitOpenError, ClosedError, TimeoutError, UpstreamError } from '../errors.ts';
import { type BreakerPermit, CircuitBreaker, type CircuitState } from '../internal/circuit-breaker.ts';
import type { Clock } from '../internal/clock.ts';
import { delay } from './delay.ts';

/** First retry delay when the upstream gives no `Retry-After`, ms (doubled per attempt, with jitter). */
export const DEFAULT_RETRY_BASE_MS = 100;
/** Longest `Retry-After` the client waits for before giving up on the call, ms. @default 10000 */
export const DEFAULT_MAX_RETRY_AFTER_MS = 10_000;

/** What the client needs of an outbound limiter (`OutboundLimiter` from clawperf/concurrency). */
export interface OutboundPacer {
  acquire(options: { tokens?: number; signal?: AbortSignal }): Promise<{
    done(response?: { status?: number; headers?: IncomingHttpHeaders }): void;
  }>;
  /** Whether a call acquired now would wait for budget. */
  wouldWait?(): boolean;
  /** Its state: callers waiting, and what is left of the key's quotas (-1 while unknown). */
  stats?(): { queued: number; remainingRequests: number; remainingTokens: number };
}

export interface UpstreamClientOptions {
  /** Base URL including the version path, e.g. `https://api.openai.com/v1`. */
  baseUrl: string;
  /** Sent as `Authorization: Bearer <apiKey>`, or as `x-api-key` when `auth` says so (Anthropic). */
  apiKey?: string;
  /** How the key is sent. @default 'bearer' */
  auth?: 'bearer' | 'x-api-key';
  /** Time to the answer's headers, and between body chunks, ms. */
  timeoutMs: number;
  /** Retries on 429, 5xx and connection errors. */
  retries: number;
  /** Keep-alive connections. */
  connections: number;
  /** Paces calls by what the upstream says of its limits. */
  outbound?: OutboundPacer;
  /** @default 100 */
  retryBaseMs?: number;
  /** @default 10000 */
  maxRetryAfterMs?: number;
  /**
   * Circuit breaker settings; a probe's lease is `timeoutMs` unless given.
   * @default { failureThreshold: 5, cooldownMs: 5000 }
   */
  breaker?: { failureThreshold?: number; cooldownMs?: number; probeLeaseMs?: number; clock?: Clock };
}

/** An answer the upstream gave (any status below 500 other than 429, or a success). */
export interface UpstreamAnswer<B> {
  status: number;
  headers: IncomingHttpHeaders;
  body: B;
}

export interface CallOptions {
  signal?: AbortSignal;
  /** Estimated tokens, for the outbound limiter. */
  tokens?: number;
  /** Headers of this call beside the client's own (which they cannot replace). */
  headers?: Record<string, string>;
  /** Paces this call instead of the client's `outbound`. */
  outbound?: OutboundPacer;
}

/** Statuses worth another attempt: rate limited, failing, or (Anthropic's 529) overloaded. */
const RETRYABLE = new Set([429, 500, 502, 503, 504, 529]);

function retryAfterMs(headers: IncomingHttpHeaders): number | undefined {
  const ms = headers['retry-after-ms'];
  if (typeof ms === 'string' && Number.isFinite(Number(ms))) return Math.max(0, Number(ms));
  const ra = headers['retry-after'];
  if (typeof ra !== 'string') return undefined;
  const seconds = Number(ra);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(ra);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

function isTimeout(error: unknown): boolean {
  const code = (error as { code?: string } | null)?.code;
  return (
    code === 'UND_ERR_HEADERS_TIMEOUT' ||
    code === 'UND_ERR_BODY_TIMEOUT' ||
    code === 'UND_ERR_CONNECT_TIMEOUT'
  );
}

/**
 * Calls one OpenAI-compatible upstream. A call resolves with the upstream's answer when it is a success or
 * a client error the caller should relay (400, 401, 404, ...); it rejects with {@link UpstreamError} when
 * the upstream kept failing (5xx, 429, connection errors, invalid JSON: `status` is the last upstream
 * status, if any), {@link TimeoutError} when it was too slow, {@link CircuitOpenError} while the breaker
 * is open, and `signal.reason` when aborted.
 */
export class UpstreamClient {
  readonly statsCounters: readonly string[] = [
    'calls',
    'attempts',
    'retries',
    'failures',
    'timeouts',
    'circuitRejected',
    'breakerOpens',
  ];
  readonly baseUrl: string;
  readonly host: string;
  readonly port: number;
  readonly #basePath: string;
  readonly #pool: Pool;
  readonly #breaker: CircuitBreaker;
  readonly #headers: Record<string, string>;
  readonly #timeoutMs: number;
  readonly #retries: number;
  readonly #retryBaseMs: number;
  readonly #maxRetryAfterMs: number;
  readonly #outbound: OutboundPacer | undefined;
  #closed = false;
  #calls = 0;
  #attempts = 0;
  #retriesDone = 0;
  #failures = 0;
  #timeouts = 0;
  #circuitRejected = 0;

  constructor(options: UpstreamClientOptions) {
    const url = new URL(options.baseUrl);
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.host = url.hostname;
    this.port = Number(url.port || (url.protocol === 'https:' ? 443 : 80));
    this.#basePath = url.pathname.replace(/\/+$/, '');
    this.#timeoutMs = options.timeoutMs;
    this.#retries = options.retries;
    this.#retryBaseMs = options.retryBaseMs ?? DEFAULT_RETRY_BASE_MS;
    this.#maxRetryAfterMs = options.maxRetryAfterMs ?? DEFAULT_MAX_RETRY_AFTER_MS;
    this.#outbound = options.outbound;
    this.#pool = new Pool(url.origin, {
      connections: options.connections,
      headersTimeout: options.timeoutMs,
      bodyTimeout: options.timeoutMs,
      keepAliveTimeout: 30_000,
    });
    // A probe reports once the answer's headers are in, which the timeout bounds.
    this.#breaker = new CircuitBreaker({
      name: `upstream ${url.origin}`,
      probeLeaseMs: options.timeoutMs,
      ...options.breaker,
    });
    this.#headers = { 'content-type': 'application/json', accept: 'application/json' };
    if (options.apiKey !== undefined) {
      if (options.auth === 'x-api-key') this.#headers['x-api-key'] = options.apiKey;
      else this.#headers.authorization = `Bearer ${options.apiKey}`;
    }
  }

  /** The circuit breaker's state: `half-open` once the cooldown is over, until a probe decides. */
  get circuitState(): CircuitState {
    return this.#breaker.state;
  }

  /** POSTs `body` as JSON and resolves with the parsed JSON answer. */
  postJson(path: string, body: unknown, options: CallOptions = {}): Promise<UpstreamAnswer<unknown>> {
    return this.#call('POST', path, JSON.stringify(body), options, false) as Promise<UpstreamAnswer<unknown>>;
  }

  /** GETs `path` and resolves with the parsed JSON answer. */
  getJson(path: string, options: CallOptions = {}): Promise<UpstreamAnswer<unknown>> {
    return this.#call('GET', path, undefined, options, false) as Promise<UpstreamAnswer<unknown>>;
  }

  /** DELETEs `path` and resolves with the parsed JSON answer. */
  deleteJson(path: string, options: CallOptions = {}): Promise<UpstreamAnswer<unknown>> {
    return this.#call('DELETE', path, undefined, options, false) as Promise<UpstreamAnswer<unknown>>;
  }

  /**
   * POSTs `body` and resolves, once a success's headers arrived, with its body as a stream to pass on (the
   * reader's pace is the upstream's pace). Retries happen only before a success's headers; an error answer
   * resolves with its parsed JSON body instead.
   */
  postStream(
    path: string,
    body: unknown,
    options: CallOptions = {},
  ): Promise<UpstreamAnswer<Readable | unknown>> {
    return this.#call('POST', path, JSON.stringify(body), options, true);
  }

  async #call(
    method: 'GET' | 'POST' | 'DELETE',
    path: string,
    body: string | undefined,
    options: CallOptions,
    stream: boolean,
  ): Promise<UpstreamAnswer<Readable | unknown>> {
    if (this.#closed) throw new ClosedError('UpstreamClient');
    this.#calls++;
    const { signal } = options;
    for (let attempt = 0; ; attempt++) {
      signal?.throwIfAborted();
      const permit = this.#breaker.acquire();
      if (permit === undefined) {
        this.#circuitRejected++;
        this.#failures++;
        throw new CircuitOpenError(`upstream ${this.baseUrl}`, this.#breaker.retryAfterMs());
      }
      let failure: UpstreamError | TimeoutError;
      let waitMs: number | undefined;
      try {
        const outcome = await this.#attempt(method, path, body, options, stream, permit);
        if (!(outcome instanceof UpstreamError)) return outcome;
        failure = outcome;
        waitMs = outcome.retryAfterMs;
      } catch (error) {
        if (error instanceof UpstreamError || error instanceof TimeoutError) this.#failures++;
        throw error;
      } finally {
        // Whatever ended the attempt (a 429, the caller's abort, an exception anywhere), the probe slot is
        // freed: the first report wins, so this is a no-op after a real verdict.
        permit.release();
      }
      const wait = waitMs ?? this.#retryBaseMs * 2 ** attempt * (0.5 + Math.random() / 2);
      if (attempt >= this.#retries || wait > this.#maxRetryAfterMs) {
        this.#failures++;
        throw failure;
      }
      this.#retriesDone++;
      await delay(wait, signal);
    }
  }

  /**
   * One attempt: resolves with the answer to relay, or with the retryable {@link UpstreamError} of a 429,
   * a 5xx or an unreachable upstream; rejects when no retry may follow. Reports to `permit` what the
   * attempt says of the upstream's health: a 429 and the caller's abort say nothing.
   */
  async #attempt(
    method: 'GET' | 'POST' | 'DELETE',
    path: string,
    body: string | undefined,
    options: CallOptions,
    stream: boolean,
    permit: BreakerPermit,
  ): Promise<UpstreamAnswer<Readable | unknown> | UpstreamError> {
    const { signal } = options;
    const pacer = await (options.outbound ?? this.#outbound)?.acquire({ tokens: options.tokens, signal });
    this.#attempts++;
    let res: Dispatcher.ResponseData;
    try {
      res = await this.#pool.request({
        method,
        path: this.#basePath + path,
        headers: options.headers === undefined ? this.#headers : { ...options.headers, ...this.#headers },
        body,
        signal,
      });
    } catch (error) {
      pacer?.done();
      return this.#broken(error, permit, signal, 'the upstream could not be reached', undefined);
    }
    pacer?.done({ status: res.statusCode, headers: res.headers });
    const status = res.statusCode;
    if (status < 300 && stream) {
      permit.success();
      return { status, headers: res.headers, body: res.body };
    }
    let text: string;
    try {
      text = await res.body.text();
    } catch (error) {
      return this.#broken(error, permit, signal, "the upstream's answer broke off", status);
    }
    if (RETRYABLE.has(status)) {
      if (status !== 429) permit.failure();
      const waitMs = retryAfterMs(res.headers);
      return new UpstreamError(`the upstream answered ${status}: ${text.slice(0, 200)}`, {
        status,
        retryAfterMs: waitMs,
      });
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (error) {
      permit.failure();
      throw new UpstreamError(
        `the upstream answered ${status} with invalid JSON`,
        { status },
        { cause: error },
      );
    }
    permit.success();
    return { status, headers: res.headers, body: parsed };
  }

  /**
   * A connection or body error: the caller's abort rethrown as its reason (no verdict on the upstream), a
   * timeout thrown as {@link TimeoutError}, anything else answered as a retryable {@link UpstreamError}.
   */
  #broken(
    error: unknown,
    permit: BreakerPermit,
    signal: AbortSignal | undefined,
    what: string,
    status: number | undefined,
  ): UpstreamError {
    if (signal?.aborted) throw signal.reason;
    permit.failure();
    if (isTimeout(error)) {
      this.#timeouts++;
      throw new TimeoutError('the upstream call', this.#timeoutMs, { cause: error });
    }
    return new UpstreamError(`${what}: ${(error as Error).message}`, { status }, { cause: error });
  }

  stats(): Record<string, number> {
    const b = this.#breaker.stats();
    return {
      calls: this.#calls,
      attempts: this.#attempts,
      retries: this.#retriesDone,
      failures: this.#failures,
      timeouts: this.#timeouts,
      circuitRejected: this.#circuitRejected,
      breakerState: b.state,
      breakerOpens: b.opens,
    };
  }

  /** Closes the connections (waiting for calls in flight). Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#pool.close();
  }
}
