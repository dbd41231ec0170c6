/**
 * How clawperf talks to Redis: a client given by the user (a `Redis`, a `Cluster`) is used as it is and
 * never closed by us; a URL gets a client of our own with bounded waits (every command, including one queued
 * while the client (re)connects, fails after the command timeout), which we close. Lua scripts run by SHA, loading themselves on NOSCRIPT, so
 * every read-check-write is one round trip.
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { Cluster, Redis } from 'ioredis';

export type RedisClient = Redis | Cluster;
/** What users pass: a client they own, or a `redis://` URL for a client clawperf owns. */
export type RedisInput = RedisClient | string;

/** @default 1000 */
export const DEFAULT_REDIS_COMMAND_TIMEOUT_MS = 1_000;

export interface OwnedRedis {
  client: RedisClient;
  /** Whether clawperf created the client (and so closes it). */
  owned: boolean;
}

export function isRedisClient(value: unknown): value is RedisClient {
  return value instanceof Redis || value instanceof Cluster;
}

/**
 * Client options for a URL: auto-pipelining on, and a command timeout that also bounds commands queued while
 * the client (re)connects (ioredis arms it before queueing), so no call waits unboundedly during an outage.
 */
export function redisOptions(commandTimeoutMs = DEFAULT_REDIS_COMMAND_TIMEOUT_MS) {
  return {
    enableAutoPipelining: true,
    commandTimeout: commandTimeoutMs,
    maxRetriesPerRequest: 1,
    // Reconnect forever with capped backoff: the dependency comes back, and so must we.
    retryStrategy: (times: number) => Math.min(50 * 2 ** Math.min(times, 6), 2_000),
  };
}

/** Resolves the user's `redis` option into a client, validating it. */
export function toRedis(name: string, input: unknown, commandTimeoutMs?: number): OwnedRedis {
  if (isRedisClient(input)) return { client: input, owned: false };
  if (typeof input === 'string' && /^rediss?:\/\//.test(input)) {
    return { client: new Redis(input, redisOptions(commandTimeoutMs)), owned: true };
  }
  throw new TypeError(
    `${name} must be an ioredis Redis or Cluster instance or a redis:// URL, got ${typeof input}`,
  );
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
