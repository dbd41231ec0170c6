/**
 * HTTP rate limiting for node:http and Express: one limiter check per request, standard headers on every
 * answer, 429 with an OpenAI-shaped body when limited, 503 when the store is down and the limiter fails
 * closed (an outage is not the client's fault, so it is not a 429).
 *
 * @example
 * const limiter = new RateLimiter({ policies: [{ name: 'rpm', windowMs: 60_000, limit: 60 }] });
 * const limit = rateLimitMiddleware(limiter, { trustProxy: 1 });
 * http.createServer(async (req, res) => {
 *   if (!(await limit(req, res))) return; // answered with 429 / 503
 *   res.end('ok');
 * });
 * // Express: app.use(rateLimitMiddleware(limiter))
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import * as check from '../../internal/options.ts';
import type { CheckOptions, RateLimiter, RateLimitResult } from '../rate-limiter.ts';

/** Where the key came from, as a prefix of the key. */
export type KeySource = 'user' | 'apikey' | 'ip';

export interface RateLimitMiddlewareOptions<Req = IncomingMessage> {
  /**
   * The limited key. Default: `user:<req.user.id>` when an authentication step set `req.user` (its `id`,
   * else `sub`); else, with `apiKeyHeader`, `apikey:<sha256 of the key>` from `Authorization: Bearer` or
   * `x-api-key`; else `ip:<client address>`. Return `undefined` to fall through to the default.
   */
  key?: (req: Req) => string | undefined;
  /**
   * Key unauthenticated callers by the hashed API key they send. Only turn this on when the keys are
   * verified before this middleware (otherwise a client can dodge the limit by inventing keys).
   * @default false
   */
  apiKeyHeader?: boolean;
  /**
   * Whether to read the client address from `X-Forwarded-For`. `false`: the socket address. `true`: the
   * leftmost (original) address. A number n: the address n hops from this server (1 = the address the
   * nearest proxy saw), matching Express's `trust proxy` hop count.
   * @default false
   */
  trustProxy?: boolean | number;
  /** Request-units charged per request (or a function of it). @default 1 */
  cost?: number | ((req: Req) => number);
  /** Tokens charged per request for token policies (or a function of it). @default 0 */
  tokens?: number | ((req: Req) => number);
  /** Send `RateLimit` / `RateLimit-Policy` (IETF draft). @default true */
  standardHeaders?: boolean;
  /** Send `X-RateLimit-Limit` / `-Remaining` / `-Reset` (Reset in epoch seconds). @default true */
  legacyHeaders?: boolean;
  /** Requests that skip the limiter (health checks). */
  skip?: (req: Req) => boolean;
}

/** What to send for one check. */
export interface RateLimitDecision {
  /** 0 to pass the request on, else the status to answer with (429 or 503). */
  status: 0 | 429 | 503;
  headers: Record<string, string>;
  /** The body for a refused request. */
  body?: string;
  result?: RateLimitResult;
}

/** A request with what authentication middlewares usually attach. */
interface AuthenticatedRequest {
  user?: { id?: unknown; sub?: unknown } | null;
}

/**
 * The client address: the socket's, or from `X-Forwarded-For` as `trustProxy` allows. IPv4-mapped IPv6
 * addresses are reported as IPv4.
 */
export function clientAddress(req: IncomingMessage, trustProxy: boolean | number = false): string {
  const socketAddress = req.socket?.remoteAddress ?? 'unknown';
  let address = socketAddress;
  if (trustProxy !== false && trustProxy !== 0) {
    const header = req.headers['x-forwarded-for'];
    const list = (Array.isArray(header) ? header.join(',') : (header ?? ''))
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s.length > 0);
    if (list.length > 0) {
      if (trustProxy === true) address = list[0]!;
      else address = list[Math.max(0, list.length - trustProxy)]!;
    }
  }
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}

function apiKeyOf(req: IncomingMessage): string | undefined {
  const auth = req.headers.authorization;
  if (typeof auth === 'string') {
    const m = /^Bearer\s+(\S+)/i.exec(auth);
    if (m !== null) return m[1];
  }
  const header = req.headers['x-api-key'];
  return typeof header === 'string' && header.length > 0 ? header : undefined;
}

/** `user:<id>` when an authentication step attached a user with an `id` (or `sub`), else undefined. */
export function userKey(req: unknown): string | undefined {
  const user = (req as AuthenticatedRequest).user;
  if (user === undefined || user === null) return undefined;
  const id = user.id ?? user.sub;
  if ((typeof id === 'string' && id.length > 0) || typeof id === 'number') return `user:${id}`;
  return undefined;
}

/** `apikey:<sha256 prefix>` of the `Authorization: Bearer` or `x-api-key` value, else undefined. */
export function apiKeyKey(req: IncomingMessage): string | undefined {
  const key = apiKeyOf(req);
  return key === undefined
    ? undefined
    : `apikey:${createHash('sha256').update(key).digest('hex').slice(0, 32)}`;
}

/** The default key: authenticated user, then (when enabled) hashed API key, then client address. */
export function defaultKey(
  req: IncomingMessage,
  options: { trustProxy?: boolean | number; apiKeyHeader?: boolean } = {},
): string {
  return (
    userKey(req) ??
    (options.apiKeyHeader ? apiKeyKey(req) : undefined) ??
    `ip:${clientAddress(req, options.trustProxy)}`
  );
}

/**
 * Builds the headers and answer for one request; shared by the node:http and Fastify front ends.
 * `fallbackKey` gives the key when `options.key` gives none.
 */
export function createRateLimitHandler<Req>(
  limiter: RateLimiter,
  options: RateLimitMiddlewareOptions<Req>,
  fallbackKey: (req: Req, trustProxy: boolean | number, apiKeyHeader: boolean) => string,
): (req: Req) => Promise<RateLimitDecision> {
  const o = check.object<RateLimitMiddlewareOptions<Req>>('options', options);
  const keyFn =
    o.key === undefined ? undefined : check.fn<(req: Req) => string | undefined>('options.key', o.key);
  const skip = o.skip === undefined ? undefined : check.fn<(req: Req) => boolean>('options.skip', o.skip);
  const trustProxy = o.trustProxy ?? false;
  if (typeof trustProxy !== 'boolean') check.integer('options.trustProxy', trustProxy);
  const apiKeyHeader = o.apiKeyHeader ?? false;
  const standard = o.standardHeaders ?? true;
  const legacy = o.legacyHeaders ?? true;
  const cost = charge('options.cost', o.cost);
  const tokens = charge('options.tokens', o.tokens);
  const policyHeader = limiter.policies
    .map(
      (p) =>
        `"${p.name}";q=${p.limit};w=${Math.ceil(p.windowMs / 1000)}${p.unit === 'tokens' ? ';qu="tokens"' : ''}`,
    )
    .join(', ');
  const pass: RateLimitDecision = { status: 0, headers: {} };

  return async (req) => {
    if (skip?.(req)) return pass;
    const key = keyFn?.(req) ?? fallbackKey(req, trustProxy, apiKeyHeader);
    const charges: CheckOptions = {};
    if (cost !== undefined) charges.cost = cost(req);
    if (tokens !== undefined) charges.tokens = tokens(req);
    const result = await limiter.allow(key, charges);
    const headers: Record<string, string> = {};
    if (result.status === 'store-error') {
      if (result.allowed) return { status: 0, headers, result };
      headers['retry-after'] = String(Math.max(1, Math.ceil((result.retryAfterMs ?? 1000) / 1000)));
      return {
        status: 503,
        headers,
        result,
        body: errorBody(
          'The rate limiter is temporarily unavailable; retry shortly.',
          'server_error',
          'rate_limiter_unavailable',
        ),
      };
    }
    if (legacy) {
      headers['x-ratelimit-limit'] = String(result.limit);
      headers['x-ratelimit-remaining'] = String(result.remaining);
      headers['x-ratelimit-reset'] = String(Math.ceil((Date.now() + result.resetMs) / 1000));
    }
    if (standard) {
      headers['ratelimit-policy'] = policyHeader;
      headers.ratelimit = rateLimitField(result);
    }
    if (result.allowed) return { status: 0, headers, result };
    const policy = limiter.policies.find((p) => p.name === result.policy);
    const unit = policy?.unit ?? 'requests';
    let message: string;
    if (result.retryAfterMs === undefined) {
      message = `Request too large for ${unit} per ${windowText(policy?.windowMs ?? 0)} (policy "${result.policy}"): limit ${result.limit}.`;
    } else {
      const retrySeconds = Math.max(1, Math.ceil(result.retryAfterMs / 1000));
      headers['retry-after'] = String(retrySeconds);
      message = `Rate limit reached for ${unit} per ${windowText(policy?.windowMs ?? 0)} (policy "${result.policy}"): limit ${result.limit}, remaining ${result.remaining}. Please try again in ${retrySeconds}s.`;
    }
    return { status: 429, headers, result, body: errorBody(message, unit, 'rate_limit_exceeded') };
  };
}

/**
 * Middleware for node:http and Express. Resolves `true` when the request may go on (and calls `next()`
 * when given), `false` when it answered 429/503 itself. A failing limiter (e.g. an invalid key from a
 * custom `key` function) is passed to `next(error)`, or rejects without `next`.
 */
export function rateLimitMiddleware<Req extends IncomingMessage = IncomingMessage>(
  limiter: RateLimiter,
  options: RateLimitMiddlewareOptions<Req> = {},
): (req: Req, res: ServerResponse, next?: (error?: unknown) => void) => Promise<boolean> {
  const handle = createRateLimitHandler<Req>(limiter, options, (req, trustProxy, apiKeyHeader) =>
    defaultKey(req, { trustProxy, apiKeyHeader }),
  );
  return async (req, res, next) => {
    let decision: RateLimitDecision;
    try {
      decision = await handle(req);
    } catch (error) {
      if (next === undefined) throw error;
      next(error);
      return false;
    }
    for (const name in decision.headers) res.setHeader(name, decision.headers[name]!);
    if (decision.status === 0) {
      next?.();
      return true;
    }
    res.statusCode = decision.status;
    res.setHeader('content-type', 'application/json');
    res.end(decision.body);
    return false;
  };
}

function charge<Req>(name: string, value: number | ((req: Req) => number) | undefined) {
  if (value === undefined) return undefined;
  if (typeof value === 'function') return value;
  const n = check.number(name, value);
  return () => n;
}

/** `"rpm";r=0;t=12`: remaining quota and seconds until it is back, for the deciding policy. */
function rateLimitField(result: RateLimitResult): string {
  return `"${result.policy}";r=${result.remaining};t=${Math.ceil(result.resetMs / 1000)}`;
}

function windowText(windowMs: number): string {
  if (windowMs % 86_400_000 === 0) return windowMs === 86_400_000 ? 'day' : `${windowMs / 86_400_000} days`;
  if (windowMs % 3_600_000 === 0) return windowMs === 3_600_000 ? 'hour' : `${windowMs / 3_600_000} hours`;
  if (windowMs % 60_000 === 0) return windowMs === 60_000 ? 'min' : `${windowMs / 60_000} min`;
  return `${windowMs / 1000}s`;
}

/** OpenAI's error shape. */
function errorBody(message: string, type: string, code: string): string {
  return JSON.stringify({ error: { message, type, param: null, code } });
}
