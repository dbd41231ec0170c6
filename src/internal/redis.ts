/**
 * How clawperf talks to Redis: a client given by the user (a `Redis`, a `Cluster`) is used as it is and
 * never closed by us; a URL gets a client of our own that fails fast (no offline queue: a command while the
 * connection is down fails at once; one sent to a server that stopped answering fails after the command
 * timeout), which we close. Lua scripts run by SHA, loading themselves on NOSCRIPT, so every
 * read-check-write is one round trip.
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { Cluster, Redis } from 'ioredis';
import { StoreError } from '../errors.ts';
import * as check from './options.ts';

export type RedisClient = Redis | Cluster;
/** What users pass: a client they own, or a `redis://` URL for a client clawperf owns. */
export type RedisInput = RedisClient | string;

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

/** Resolves the user's `redis` option into a client, validating it. */
export function toRedis(name: string, input: unknown, commandTimeoutMs?: number): OwnedRedis {
  if (isRedisClient(input)) {
    track(input);
    return { client: input, owned: false };
  }
  if (typeof input === 'string' && /^rediss?:\/\//.test(input)) {
    const client = new Redis(input, redisOptions(commandTimeoutMs));
    track(client);
    return { client, owned: true };
  }
  return check.invalid(name, 'an ioredis Redis or Cluster instance or a redis:// URL', input);
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
