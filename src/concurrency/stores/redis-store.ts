/**
 * The Redis rate-limit store: each check is one script run covering every policy of the key (atomic, one
 * round trip, time from Redis `TIME`), so limits are exact across processes and nodes; the checks of one
 * tick share one EVALSHA. A key's Redis keys are
 * `<prefix>:{<key>}:<policy name>:<algorithm code>` (plus `:log` sets for sliding logs): the hash tag puts all of them in
 * one Cluster slot.
 */
import { Cluster } from 'ioredis';
import { hashTag, type RedisClient, RedisScript } from '../../internal/redis.ts';
import { checkLua, checkStride, keySuffixes, settleLua } from './scripts.ts';
import type { ChargeRef, CheckResult, CompiledPolicy, RateLimitStore } from './store.ts';

/** Most checks sent in one script call. */
const MAX_CHECKS_PER_CALL = 256;

const resolved = Promise.resolve();

interface Waiter {
  resolve(result: CheckResult): void;
  reject(error: unknown): void;
}

interface Batch {
  keys: string[];
  args: number[];
  waiters: Waiter[];
}

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
  /** Values per check in the script's reply. */
  readonly #stride: number;
  readonly #cluster: boolean;
  /** Checks of this tick not yet sent, by call group ('' unless on a Cluster, where it is the key). */
  readonly #forming = new Map<string, Batch>();

  constructor(options: RedisRateLimitStoreOptions) {
    this.#client = options.client;
    this.#n = options.policies.length;
    this.#prefix = `${options.keyPrefix}:`;
    this.#suffixes = keySuffixes(options.policies);
    this.#check = new RedisScript(checkLua(options.policies));
    this.#settle = new RedisScript(settleLua(options.policies));
    this.#stride = checkStride(this.#n);
    this.#allowedAt = this.#stride - 1;
    this.#cluster = this.#client instanceof Cluster;
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

  /**
   * Checks issued in the same tick go to Redis as one EVALSHA (`checkLua` runs them in turn), so the
   * client and the server pay their per-command cost once per tick rather than once per check. On a
   * Cluster only checks of the same key share a call (one slot per call).
   */
  check(key: string, charges: readonly number[]): Promise<CheckResult> {
    const group = this.#cluster ? key : '';
    let batch = this.#forming.get(group);
    if (batch === undefined) {
      batch = { keys: [], args: [], waiters: [] };
      this.#forming.set(group, batch);
      if (this.#forming.size === 1) resolved.then(this.#scheduleFlush);
    }
    const base = this.#base(key);
    for (const suffix of this.#suffixes) batch.keys.push(base + suffix);
    for (let i = 0; i < this.#n; i++) batch.args.push(charges[i]!);
    const waiters = batch.waiters;
    const promise = new Promise<CheckResult>((resolve, reject) => {
      waiters.push({ resolve, reject });
    });
    if (batch.waiters.length >= MAX_CHECKS_PER_CALL) {
      this.#forming.delete(group);
      this.#send(batch);
    }
    return promise;
  }

  /** After every promise callback of this tick had its chance to add a check, like dataloader. */
  readonly #scheduleFlush = (): void => process.nextTick(this.#flush);

  readonly #flush = (): void => {
    if (this.#forming.size === 0) return;
    const batches = [...this.#forming.values()];
    this.#forming.clear();
    for (const batch of batches) this.#send(batch);
  };

  #send(batch: Batch): void {
    this.#client
      .evalsha(this.#check.sha, batch.keys.length, ...batch.keys, ...batch.args)
      .catch((error: unknown) => {
        // A restarted Redis has lost the script: load it and run the same call once more.
        if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error;
        return this.#check.run(this.#client, batch.keys, batch.args);
      })
      .then(
        (reply) => this.#deliver(batch, reply as (number | string)[]),
        (error: unknown) => {
          for (const waiter of batch.waiters) waiter.reject(error);
        },
      );
  }

  #deliver(batch: Batch, reply: (number | string)[]): void {
    const stride = this.#stride;
    const waiters = batch.waiters;
    const size = stride * waiters.length;
    if (!Array.isArray(reply) || reply.length < size) {
      const error = new Error(
        `the rate-limit script answered ${Array.isArray(reply) ? reply.length : typeof reply} values for ${waiters.length} checks`,
      );
      for (const waiter of waiters) waiter.reject(error);
      return;
    }
    let failed = size;
    for (let j = 0; j < waiters.length; j++) {
      const out = (waiters.length === 1 ? reply : reply.slice(j * stride, (j + 1) * stride)) as number[];
      const flag = out[this.#allowedAt];
      if (flag === -1)
        waiters[j]!.reject(new Error(String(reply[failed++] ?? 'the rate-limit check failed')));
      else waiters[j]!.resolve({ allowed: flag === 1, out });
    }
  }

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
