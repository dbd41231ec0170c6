/**
 * Which tenant created each stored OpenAI response. Responses are stored at the provider under the
 * operator's key, so without this record any tenant holding an id could read, continue or delete another
 * tenant's response. The record is bounded: the last {@link DEFAULT_RESPONSE_OWNERS_MAX} ids in memory and,
 * with Redis, every id for {@link RESPONSE_OWNER_RETENTION_MS} (OpenAI keeps a stored response 30 days),
 * shared by every node. An id without a record belongs to nobody: it answers as an unknown id does.
 *
 * @module
 */
import { LRUCache } from 'lru-cache';
import type { RedisClient } from '../internal/redis.ts';
import type { DeploymentKey } from './upstream-interface.ts';

/** Response ids remembered in memory. @default 100000 */
export const DEFAULT_RESPONSE_OWNERS_MAX = 100_000;
/** How long an id's owner is remembered, ms. @default 2592000000 (30 days) */
export const RESPONSE_OWNER_RETENTION_MS = 30 * 24 * 3600 * 1000;

/** Options of {@link ResponseOwners}. */
export interface ResponseOwnersOptions {
  /** Redis shared by the gateway's nodes; its owner closes it. */
  redis?: RedisClient;
  /** @default DEFAULT_RESPONSE_OWNERS_MAX */
  max?: number;
}

export class ResponseOwners {
  readonly #local: LRUCache<string, string>;
  readonly #redis: RedisClient | undefined;

  constructor(options: ResponseOwnersOptions = {}) {
    this.#local = new LRUCache({
      max: options.max ?? DEFAULT_RESPONSE_OWNERS_MAX,
      ttl: RESPONSE_OWNER_RETENTION_MS,
    });
    // A failing Redis is the cache's and the limiter's to report; here it only means "not known".
    this.#redis = options.redis;
  }

  static #key(id: string): string {
    return `clawperf:gw:response-owner:${id}`;
  }

  /** Records that `tenant` created the response `id`, stored by the deployment and key `at`. */
  remember(id: string, tenant: string, at?: DeploymentKey): void {
    const record = at === undefined ? tenant : `${tenant}\u0000${at.deployment}\u0000${at.key}`;
    this.#local.set(id, record);
    this.#redis?.set(ResponseOwners.#key(id), record, 'PX', RESPONSE_OWNER_RETENTION_MS).catch(() => {});
  }

  /**
   * Where `tenant`'s response `id` is stored: `false` when the id is not `tenant`'s (or unknown), else the
   * deployment and key that stored it (`undefined` when no router chose them).
   */
  async find(id: string, tenant: string): Promise<DeploymentKey | undefined | false> {
    let record = this.#local.get(id);
    if (record === undefined && this.#redis !== undefined) {
      record = (await this.#redis.get(ResponseOwners.#key(id)).catch(() => null)) ?? undefined;
      if (record !== undefined) this.#local.set(id, record);
    }
    if (record === undefined) return false;
    const [owner, deployment, key] = record.split('\u0000');
    if (owner !== tenant) return false;
    return deployment === undefined ? undefined : { deployment, key: Number(key) };
  }

  /** Forgets `id` (its response was deleted). */
  forget(id: string): void {
    this.#local.delete(id);
    this.#redis?.del(ResponseOwners.#key(id)).catch(() => {});
  }
}
