/**
 * How clawperf talks to Redis: a client given by the user (a `Redis`, a `Cluster`) is used as it is and
 * never closed by us; a URL gets a client of our own that fails fast (no offline queue: a command while the
 * connection is down fails at once; one sent to a server that stopped answering fails after the command
 * timeout), which we close. A URL names one server (`redis://`, `rediss://` for TLS) or a Cluster by its seed
 * nodes (`redis+cluster://h1:6379,h2:6379`, `rediss+cluster://...`). Lua scripts run by SHA, loading
 * themselves on NOSCRIPT, so every read-check-write is one round trip.
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { rootCertificates } from 'node:tls';
import { Cluster, Redis } from 'ioredis';
import { StoreError } from '../errors.ts';
import * as check from './options.ts';

export type RedisClient = Redis | Cluster;
/** What users pass: a client they own, or a URL (see {@link parseRedisUrl}) for a client clawperf owns. */
export type RedisInput = RedisClient | string;

/** The default port of a host given without one. */
const DEFAULT_REDIS_PORT = 6379;
/** The URL forms clawperf accepts, as named in errors. */
const URL_FORMS = 'a redis://, rediss://, redis+cluster://, rediss+cluster:// or redis+unix:// URL';

/** A Redis URL taken apart. */
export interface RedisUrl {
  /** A Cluster given by its seed nodes (`redis+cluster://`, `rediss+cluster://`). */
  cluster: boolean;
  /** Connections use TLS (`rediss://`, `rediss+cluster://`). */
  tls: boolean;
  /** The server, or the Cluster's seed nodes. */
  nodes: { host: string; port: number }[];
  /** ACL user (`user:password@`), for every node. */
  username: string | undefined;
  password: string | undefined;
  /** The database of one server (`/2`); a Cluster has database 0 only. */
  db: number;
  /** A server's Unix socket (`redis+unix:///path/to/redis.sock`), instead of `nodes`. */
  path?: string;
}

/** `url` with its password masked, for messages: the user part ends at the URL's last `@`. */
function masked(url: string): string {
  const start = url.indexOf('//') + 2;
  const at = url.lastIndexOf('@');
  const colon = url.indexOf(':', start);
  if (start < 2 || at < start || colon === -1 || colon > at) return url;
  return `${url.slice(0, colon + 1)}***${url.slice(at)}`;
}

/** One `host[:port]` of a URL's host list; an IPv6 address goes in brackets. */
function parseHost(part: string): { host: string; port: number } | undefined {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]/?#@\s]+))(?::(\d{1,5}))?$/.exec(part);
  if (match === null) return undefined;
  const port = match[3] === undefined ? DEFAULT_REDIS_PORT : Number(match[3]);
  if (port < 1 || port > 65_535) return undefined;
  return { host: match[1] ?? match[2]!, port };
}

/**
 * Takes apart a Redis URL: `redis://[user:password@]host[:port][/db]` for one server, `rediss://` for one over
 * TLS, `redis+cluster://[user:password@]h1[:port],h2[:port],...` for a Cluster given by its seed nodes (any
 * few of its nodes: the client learns the rest from them), `rediss+cluster://` for one over TLS. The user
 * and password apply to every node. `redis+unix:///path/to/redis.sock` is a server on a Unix socket.
 *
 * @throws {TypeError} naming `name`, for anything else (the password masked in the message).
 */
export function parseRedisUrl(name: string, url: unknown): RedisUrl {
  const fail = (why: string): never =>
    check.invalid(name, `${URL_FORMS} (${why})`, typeof url === 'string' ? masked(url) : url);
  if (typeof url !== 'string') return fail('not a string');
  const socket = /^redis\+unix:\/\/(\/[^?#]+)$/i.exec(url);
  if (socket !== null) {
    return {
      cluster: false,
      tls: false,
      nodes: [],
      username: undefined,
      password: undefined,
      db: 0,
      path: socket[1]!,
    };
  }
  const scheme = /^(rediss?)(\+cluster)?:\/\//i.exec(url);
  if (scheme === null) return fail('unknown scheme');
  const cluster = scheme[2] !== undefined;
  const rest = url.slice(scheme[0].length);
  // The user part ends at the last `@`, so a password's unescaped `/` or `@` never reaches the hosts.
  const at = rest.lastIndexOf('@');
  const after = rest.slice(at + 1);
  const end = after.search(/[/?#]/);
  const authority = end === -1 ? after : after.slice(0, end);
  const tail = end === -1 ? '' : after.slice(end);
  let username: string | undefined;
  let password: string | undefined;
  if (at !== -1) {
    const info = rest.slice(0, at);
    const colon = info.indexOf(':');
    try {
      username = decodeURIComponent(colon === -1 ? info : info.slice(0, colon)) || undefined;
      password = colon === -1 ? undefined : decodeURIComponent(info.slice(colon + 1)) || undefined;
    } catch {
      return fail('bad percent-encoding in the user or password');
    }
  }
  const hosts = authority.split(',');
  if (!cluster && hosts.length > 1) return fail('several hosts need redis+cluster:// or rediss+cluster://');
  const nodes: { host: string; port: number }[] = [];
  for (const part of hosts) {
    const node = parseHost(part);
    if (node === undefined) return fail(`bad host "${part}"`);
    nodes.push(node);
  }
  if (cluster ? tail !== '' && tail !== '/' : !/^(\/\d*)?$/.test(tail)) {
    return fail(cluster ? 'a Cluster URL ends after its hosts' : `unexpected "${tail}" after the host`);
  }
  const db = tail.length > 1 ? Number(tail.slice(1)) : 0;
  return { cluster, tls: scheme[1]!.toLowerCase() === 'rediss', nodes, username, password, db };
}

/**
 * How long a command to a client clawperf creates may wait for its reply, ms: a cache read or a limit check
 * that waits longer takes its fallback instead (a local Redis answers in well under a millisecond).
 * @default 100
 */
export const DEFAULT_REDIS_COMMAND_TIMEOUT_MS = 100;
/**
 * How long a call made before a client's first connection waits for it, ms: a process that just started
 * uses Redis from its first request rather than falling back while the connection is made.
 */
export const REDIS_FIRST_CONNECTION_WAIT_MS = 2_000;
/** Longest pause between reconnect attempts, ms: Redis is used again at most this long after it returns. */
export const REDIS_RECONNECT_MAX_DELAY_MS = 500;

export interface OwnedRedis {
  client: RedisClient;
  /** Whether clawperf created the client (and so closes it). */
  owned: boolean;
}

export function isRedisClient(value: unknown): value is RedisClient {
  return value instanceof Redis || value instanceof Cluster;
}

/**
 * Client options for a URL: auto-pipelining on, no offline queue (a command while disconnected fails at
 * once instead of waiting for a connection that may not come; callers wait for the first connection with
 * {@link whenConnected}), and a command timeout for a server that accepted a command and went silent.
 */
export function redisOptions(commandTimeoutMs = DEFAULT_REDIS_COMMAND_TIMEOUT_MS) {
  return {
    enableAutoPipelining: true,
    enableOfflineQueue: false,
    commandTimeout: commandTimeoutMs,
    maxRetriesPerRequest: 1,
    // Reconnect forever with capped backoff: the dependency comes back, and so must we, soon.
    retryStrategy: (times: number) => Math.min(50 * 2 ** Math.min(times, 4), REDIS_RECONNECT_MAX_DELAY_MS),
  };
}

/** Clients whose first connection attempt is over (ready, or closed): they are never waited for again. */
const settled = new WeakSet<RedisClient>();
/** Clients whose connection events {@link track} listens to. */
const tracked = new WeakSet<RedisClient>();

/** Marks `client` settled at its first `ready` or `close`. Idempotent. */
function track(client: RedisClient): void {
  if (tracked.has(client)) return;
  tracked.add(client);
  if (client.status === 'ready' || client.status === 'reconnecting' || client.status === 'end')
    settled.add(client);
  const settle = () => settled.add(client);
  client.once('ready', settle);
  client.once('close', settle);
}

/**
 * Resolves once `client` is connected. Before its first connection attempt is over it waits up to
 * `timeoutMs`; after that (it was ready once, or an attempt failed) a client that is not ready rejects at
 * once, whether it is waiting to reconnect or in the middle of an attempt (which, on an unreachable host,
 * can take the whole connect timeout): the caller takes its fallback. Rejects with {@link StoreError}.
 */
export async function whenConnected(client: RedisClient, timeoutMs: number): Promise<void> {
  if (client.status === 'ready') return;
  track(client);
  if (client.status === 'wait') await client.connect().catch(() => undefined);
  const status: string = client.status;
  if (status === 'ready') return;
  if ((status !== 'connecting' && status !== 'connect') || settled.has(client)) {
    throw new StoreError('redis', `not connected (${status})`);
  }
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      client.off('ready', onReady);
      reject(new StoreError('redis', `not connected within ${timeoutMs} ms`));
    }, timeoutMs);
    timer.unref();
    const onReady = () => {
      clearTimeout(timer);
      resolve();
    };
    client.once('ready', onReady);
  });
}

/**
 * Calls `listener(true)` whenever `client` becomes ready and `listener(false)` whenever its connection
 * closes: the connection's state with no traffic needed. Returns the function that stops listening.
 */
export function watchConnection(client: RedisClient, listener: (up: boolean) => void): () => void {
  track(client);
  const up = () => listener(true);
  const down = () => listener(false);
  client.on('ready', up);
  client.on('close', down);
  client.on('end', down);
  return () => {
    client.off('ready', up);
    client.off('close', down);
    client.off('end', down);
  };
}

/** How {@link toRedis} makes a client from a URL. */
export interface RedisUrlOptions {
  /** @default DEFAULT_REDIS_COMMAND_TIMEOUT_MS */
  commandTimeoutMs?: number;
  /** Certificates (PEM) to trust besides the CAs Node trusts, for a TLS URL: a managed Redis's private CA. */
  ca?: string | Buffer;
}

/** A client of our own for `url` (a single server or a Cluster), fail-fast as {@link redisOptions} says. */
function clientFor(name: string, url: string, options: RedisUrlOptions): RedisClient {
  const parsed = parseRedisUrl(name, url);
  if (options.ca !== undefined && !parsed.tls) {
    check.invalid(name, 'a rediss:// or rediss+cluster:// URL when a CA is given', masked(url));
  }
  // A `ca` of its own replaces Node's trusted CAs: keep them, so the CA is trusted besides them.
  const tls = parsed.tls
    ? options.ca === undefined
      ? {}
      : { ca: [...rootCertificates, options.ca] }
    : undefined;
  const base = redisOptions(options.commandTimeoutMs);
  const login = {
    ...(parsed.username === undefined ? {} : { username: parsed.username }),
    ...(parsed.password === undefined ? {} : { password: parsed.password }),
    ...(tls === undefined ? {} : { tls }),
  };
  if (parsed.path !== undefined) return new Redis({ path: parsed.path, ...base });
  if (!parsed.cluster) return new Redis({ ...parsed.nodes[0]!, db: parsed.db, ...login, ...base });
  const { enableAutoPipelining, enableOfflineQueue, retryStrategy, ...perNode } = base;
  return new Cluster(parsed.nodes, {
    enableAutoPipelining,
    enableOfflineQueue,
    clusterRetryStrategy: retryStrategy,
    // Seeds are used as given: resolving a hostname to an address first would check a TLS certificate
    // against the address instead of the name it was issued for.
    dnsLookup: (address, callback) => callback(null, address),
    redisOptions: { ...perNode, ...login },
  });
}

/**
 * Resolves the user's `redis` option into a client, validating it: a client is used as it is, a URL (see
 * {@link parseRedisUrl}) gets a client of our own.
 *
 * @throws {TypeError} naming `name`, for anything else.
 */
export function toRedis(
  name: string,
  input: unknown,
  commandTimeoutMs?: number,
  urlOptions: Omit<RedisUrlOptions, 'commandTimeoutMs'> = {},
): OwnedRedis {
  if (isRedisClient(input)) {
    track(input);
    return { client: input, owned: false };
  }
  if (typeof input !== 'string') {
    return check.invalid(name, `an ioredis Redis or Cluster instance or ${URL_FORMS}`, input);
  }
  const client = clientFor(name, input, { ...urlOptions, commandTimeoutMs });
  track(client);
  return { client, owned: true };
}

/** Closes a client clawperf owns, resolving once its connection has ended; leaves a user's client alone. Never throws. */
export async function releaseRedis(owned: OwnedRedis): Promise<void> {
  const { client } = owned;
  if (!owned.owned || client.status === 'end') return;
  if (client.status !== 'ready') {
    // No live connection to wait for (ioredis emits no 'end' when it is between reconnect attempts).
    client.disconnect();
    return;
  }
  const ended = once(client, 'end').then(() => undefined);
  // Graceful: replies to commands already sent arrive before the connection closes.
  await client.quit().catch(() => client.disconnect());
  await ended;
}

/** A Lua script run with EVALSHA, falling back to EVAL (which also caches it) when the server lacks it. */
export class RedisScript {
  readonly lua: string;
  readonly sha: string;

  constructor(lua: string) {
    this.lua = lua;
    this.sha = createHash('sha1').update(lua).digest('hex');
  }

  async run(
    client: RedisClient,
    keys: readonly string[],
    args: readonly (string | number | Buffer)[],
  ): Promise<unknown> {
    try {
      return await client.evalsha(this.sha, keys.length, ...keys, ...args);
    } catch (error) {
      if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error;
      return client.eval(this.lua, keys.length, ...keys, ...args);
    }
  }
}

/**
 * A key's Redis Cluster hash tag: `{...}` wraps the part that decides the slot, so keys that must meet in
 * one script share a slot. Braces inside the id are replaced so they cannot end the tag early.
 */
export function hashTag(id: string): string {
  return `{${id.replace(/[{}]/g, '_')}}`;
}
