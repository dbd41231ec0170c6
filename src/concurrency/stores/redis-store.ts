/**
 * The Redis rate-limit store: one EVALSHA per check covering every policy of the key (atomic, one round
 * trip, time from Redis `TIME`), so limits are exact across processes and nodes. A key's Redis keys are
 * `<prefix>:{<key>}:<policy name>:<algorithm code>` (plus `:log` sets for sliding logs): the hash tag puts all of them in
 * one Cluster slot.
 */
import { hashTag, type RedisClient, RedisScript } from '../../internal/redis.ts';
import { checkLua, keySuffixes, settleLua } from './scripts.ts';
import type { ChargeRef, CheckResult, CompiledPolicy, RateLimitStore } from './store.ts';

export interface RedisRateLimitStoreOptions {
  client: RedisClient;
  policies: readonly CompiledPolicy[];
  keyPrefix: string;
}

export class RedisRateLimitStore implements RateLimitStore {
  readonly #client: RedisClient;
  readonly #n: number;
  readonly #prefix: string;
  readonly #suffixes: readonly string[];
  readonly #check: RedisScript;
  readonly #settle: RedisScript;
  readonly #allowedAt: number;

  constructor(options: RedisRateLimitStoreOptions) {
    this.#client = options.client;
    this.#n = options.policies.length;
    this.#prefix = `${options.keyPrefix}:`;
    this.#suffixes = keySuffixes(options.policies);
    this.#check = new RedisScript(checkLua(options.policies));
    this.#settle = new RedisScript(settleLua(options.policies));
    this.#allowedAt = this.#n * 4 + 1;
  }

  #base(key: string): string {
    // hashTag's brace replacement only matters for keys with braces; skip its regex on the hot path.
    return this.#prefix + (key.includes('{') || key.includes('}') ? hashTag(key) : `{${key}}`);
  }

  #keys(key: string): string[] {
    const base = this.#base(key);
    const suffixes = this.#suffixes;
    const keys = new Array<string>(suffixes.length);
    for (let i = 0; i < suffixes.length; i++) keys[i] = base + suffixes[i];
    return keys;
  }

  // EVALSHA straight from the client (one promise less than RedisScript.run on the hot path); the script
  // loads itself through RedisScript only when the server lacks it.
  check(key: string, charges: readonly number[]): Promise<CheckResult> {
    if (this.#suffixes.length === 1) {
      // One policy, one Redis key: no arrays to build or spread.
      const only = this.#base(key) + this.#suffixes[0];
      return this.#client
        .evalsha(this.#check.sha, 1, only, charges[0]!)
        .then(this.#toResult, (error) => this.#noScript(error, [only], charges));
    }
    const keys = this.#keys(key);
    return this.#client
      .evalsha(this.#check.sha, keys.length, ...keys, ...charges)
      .then(this.#toResult, (error) => this.#noScript(error, keys, charges));
  }

  /** After a failed EVALSHA: loads and runs the script when Redis lacks it (a restart), else rethrows. */
  #noScript(error: unknown, keys: string[], charges: readonly number[]): Promise<CheckResult> {
    if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error;
    return this.#check.run(this.#client, keys, charges).then(this.#toResult);
  }

  /** The reply is the store-neutral output followed by the allowed flag (scripts.ts). */
  readonly #toResult = (reply: unknown): CheckResult => {
    const out = reply as number[];
    return { allowed: out[this.#allowedAt] === 1, out };
  };

  async settle(key: string, ref: ChargeRef, deltas: readonly number[]): Promise<void> {
    const args: number[] = [ref.at];
    for (let i = 0; i < this.#n; i++) args.push(ref.charges[i] ?? 0, deltas[i]!, ref.logIds[i] ?? 0);
    await this.#settle.run(this.#client, this.#keys(key), args);
  }

  async reset(key: string): Promise<void> {
    await this.#client.del(...this.#keys(key));
  }

  async close(): Promise<void> {}
}
