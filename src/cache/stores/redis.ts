import { Cluster } from 'ioredis';
import { StoreError } from '../../errors.ts';
import { type Clock, systemClock } from '../../internal/clock.ts';
import * as check from '../../internal/options.ts';
import {
  DEFAULT_REDIS_COMMAND_TIMEOUT_MS,
  type OwnedRedis,
  REDIS_FIRST_CONNECTION_WAIT_MS,
  type RedisClient,
  type RedisInput,
  RedisScript,
  releaseRedis,
  toRedis,
  whenConnected,
} from '../../internal/redis.ts';
import type { CacheStore, StoredEntry } from './store.ts';

/** @default 'clawperf' */
export const DEFAULT_NAMESPACE = 'clawperf';

/**
 * A namespace: non-empty, and without braces, which would turn part of a key into a Redis Cluster hash tag.
 * @throws {TypeError} in the shape of every option error.
 */
export function checkNamespace(name: string, value: unknown): string {
  if (typeof value === 'string' && value.length > 0 && !/[{}]/.test(value)) return value;
  return check.invalid(name, 'a non-empty string without braces', value);
}
/**
 * How long a delete or tag invalidation is remembered, so that a slower write carrying an older version is
 * still refused. Writes older than this are refused too. @default 3600000 (1 hour)
 */
export const DEFAULT_TOMBSTONE_MS = 3_600_000;

export interface RedisStoreOptions {
  /** An ioredis `Redis` or `Cluster` (used as is, never closed here) or a `redis://` URL (owned). */
  redis: RedisInput;
  /** Prefix of every key. @default 'clawperf' */
  namespace?: string;
  /** How long a delete or invalidation is remembered, ms. @default 3600000 */
  tombstoneMs?: number;
  /** Command timeout for a client created from a URL, ms. @default 100 */
  commandTimeoutMs?: number;
  clock?: Clock;
}

// Entry layout: "<version>|<freshUntil>|<staleUntil>|<tags JSON>\n<data>", times in Redis-time ms. A
// tombstone (delete, invalidation) is just "<version>". The version leads, so every script reads it the
// same way.
const VERSION = `local function version(s) if not s then return nil end return tonumber(string.match(s, '^([^|]+)')) end
local function now() local t = redis.call('TIME') return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000 end
local function ms(x) return string.format('%.3f', x) end
`;

/**
 * The write of an entry, refused when `minVersion` (tag invalidations) or the tombstone window, the lock's
 * holder, or a newer version in place says so. KEYS: entry, lock. ARGV: version, ttlMs, graceMs, tags JSON,
 * data, (unused), tombstoneMs, fence.
 */
const WRITE = `local t = now()
local v = tonumber(ARGV[1])
if v < minVersion or v < t - tonumber(ARGV[7]) then return {0, ms(t)} end
if ARGV[8] ~= '' then
  local holder = redis.call('GET', KEYS[2])
  if holder and holder ~= ARGV[8] then return {0, ms(t)} end
end
local current = version(redis.call('GET', KEYS[1]))
if current and v < current then return {0, ms(t)} end
local ttl = tonumber(ARGV[2])
local grace = tonumber(ARGV[3])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ms(t + ttl) .. '|' .. ms(t + ttl + grace) .. '|' .. ARGV[4] .. '\\n' .. ARGV[5],
  'PX', math.max(1, math.ceil(ttl + grace)))
return {1, ms(t)}`;

/** KEYS: entry, lock. ARGV: version, ttlMs, graceMs, tags JSON, data, minVersion, tombstoneMs, fence. */
const SET = new RedisScript(`${VERSION}
local minVersion = tonumber(ARGV[6])
${WRITE}`);

/**
 * Puts `key` in a tag's index (KEYS[i]) until its entry expires `ttl` ms after `t`, and drops the keys whose
 * entries have expired: the index of a tag written to without pause (a tenant's, a model's) holds the keys
 * alive now, not every key ever tagged. The index itself expires with its last entry.
 */
const INDEX = `local function index(i, key, t, ttl)
  redis.call('ZADD', KEYS[i], ms(t + ttl), key)
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. ms(t))
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], math.ceil(ttl)) end
end
`;

/**
 * SET on a single server, where one script reaches every key: each tag's index and invalidation marker are
 * handled first (as TAG does), then the entry, in one command and one round trip. KEYS: entry, lock, then
 * per tag its index and marker. ARGV: as SET's, then key, tag index ttl.
 */
const SET_TAGGED = new RedisScript(`${VERSION}${INDEX}
local minVersion = 0
local at = now()
for i = 3, #KEYS, 2 do
  index(i, ARGV[9], at, tonumber(ARGV[10]))
  minVersion = math.max(minVersion, tonumber(redis.call('GET', KEYS[i + 1]) or '0'))
end
${WRITE}`);

/** KEYS: tag index, tag invalidation marker. ARGV: key, ttlMs. Returns the tag's last invalidation time. */
const TAG = new RedisScript(`${VERSION}${INDEX}
index(1, ARGV[1], now(), tonumber(ARGV[2]))
return redis.call('GET', KEYS[2]) or '0'`);

/** KEYS: entry. ARGV: tombstoneMs. */
const DEL = new RedisScript(`${VERSION}
local t = ms(now())
redis.call('SET', KEYS[1], t, 'PX', ARGV[1])
return t`);

/**
 * KEYS: tag index, tag invalidation marker, the index as a plain set (as earlier versions kept it, read so
 * that their entries are invalidated too). ARGV: tombstoneMs. Returns { time, members }.
 */
const INVALIDATE_TAG = new RedisScript(`${VERSION}
local t = ms(now())
redis.call('SET', KEYS[2], t, 'PX', ARGV[1])
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, key in ipairs(redis.call('SMEMBERS', KEYS[3])) do table.insert(members, key) end
redis.call('DEL', KEYS[1], KEYS[3])
return {t, members}`);

/** KEYS: entries of one slot. ARGV: invalidation time, tombstoneMs. Tombstones every entry older than it. */
const INVALIDATE_KEYS = new RedisScript(`${VERSION}
local at = tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
  local current = version(redis.call('GET', key))
  if not current or current < at then redis.call('SET', key, ARGV[1], 'PX', ARGV[2]) end
end
return 0`);

/** KEYS: lock. ARGV: fence. Deletes the lock only if it is still ours. */
const UNLOCK =
  new RedisScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`);

/**
 * `{id}` as the slot-deciding part, followed by the id itself when braces had to be replaced, so two ids
 * never share a Redis key name.
 */
function tagged(id: string): string {
  if (!id.includes('{') && !id.includes('}')) return `{${id}}`;
  return `{${id.replace(/[{}]/g, '_')}}${id}`;
}

/** Redis Cluster's slot of a key name (CRC16/XMODEM of its hash tag, mod 16384). */
export function slotOf(name: string): number {
  const open = name.indexOf('{');
  let part = name;
  if (open >= 0) {
    const close = name.indexOf('}', open + 1);
    if (close > open + 1) part = name.slice(open + 1, close);
  }
  let crc = 0;
  for (const byte of Buffer.from(part)) {
    crc ^= byte << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc % 16384;
}

/** Parses a stored string; `undefined` for tombstones, expired entries and anything malformed. */
function parse(raw: string | null, now: number): StoredEntry | undefined {
  if (raw === null) return undefined;
  const newline = raw.indexOf('\n');
  if (newline < 0) return undefined;
  const a = raw.indexOf('|');
  const b = raw.indexOf('|', a + 1);
  const c = raw.indexOf('|', b + 1);
  if (a < 0 || b < 0 || c < 0 || c > newline) return undefined;
  const staleUntil = Number(raw.slice(b + 1, c));
  if (!(staleUntil > now)) return undefined;
  const freshUntil = Number(raw.slice(a + 1, b));
  const tags = newline === c + 3 ? EMPTY : (JSON.parse(raw.slice(c + 1, newline)) as string[]);
  return {
    data: raw.slice(newline + 1),
    version: Number(raw.slice(0, a)),
    ttlMs: freshUntil - now,
    graceMs: staleUntil - Math.max(freshUntil, now),
    tags,
  };
}

const EMPTY: readonly string[] = Object.freeze([]);

/** Most keys in one coalesced `MGET`. */
const MAX_BATCH = 512;

/** Gets waiting for the end of the tick to go out as one `MGET`. */
interface Batch {
  names: string[];
  resolves: ((entry: StoredEntry | undefined) => void)[];
  rejects: ((error: unknown) => void)[];
}

/**
 * L2 on Redis (a single server or a Cluster). One round trip per hit: the version, lifetime and tags travel
 * in the value, and the gets of one tick share one `MGET`. Every write is one Lua script that checks
 * versions against Redis `TIME`; each key, and each tag's index, sits in its own slot, so a Cluster spreads
 * them over its masters.
 */
export class RedisStore implements CacheStore {
  readonly name = 'redis';
  readonly #redis: OwnedRedis;
  readonly #client: RedisClient;
  readonly #prefix: string;
  readonly #tombstoneMs: number;
  readonly #clock: Clock;
  readonly #timeoutMs: number;
  readonly #isCluster: boolean;
  /** Redis time minus clock time: from the wall clock until `TIME` is read, then only moves up. */
  #offset: number;
  #synced = false;
  readonly #parse = (raw: string | null) => parse(raw, this.now());
  #batch: Batch | undefined;
  readonly #flush = () => {
    const batch = this.#batch;
    if (batch === undefined) return;
    this.#batch = undefined;
    const { names, resolves, rejects } = batch;
    const replies: Promise<(string | null)[]> =
      names.length === 1 ? this.#client.get(names[0]!).then((raw) => [raw]) : this.#client.mget(names);
    replies.then(
      (raws) => {
        const now = this.now();
        for (let i = 0; i < raws.length; i++) resolves[i]!(parse(raws[i] ?? null, now));
      },
      (error: unknown) => {
        for (const reject of rejects) reject(error);
      },
    );
  };
  #closed = false;

  constructor(options: RedisStoreOptions) {
    check.object('options', options);
    this.#timeoutMs = check.integer(
      'options.commandTimeoutMs',
      options.commandTimeoutMs ?? DEFAULT_REDIS_COMMAND_TIMEOUT_MS,
      1,
    );
    this.#prefix = checkNamespace('options.namespace', options.namespace ?? DEFAULT_NAMESPACE);
    this.#tombstoneMs = check.integer('options.tombstoneMs', options.tombstoneMs ?? DEFAULT_TOMBSTONE_MS, 1);
    this.#clock = options.clock === undefined ? systemClock : check.clock('options.clock', options.clock);
    this.#redis = toRedis('options.redis', options.redis, this.#timeoutMs);
    this.#client = this.#redis.client;
    // Failures surface on the commands (and are counted by the cache); the client's own error events are noise.
    if (this.#redis.owned) this.#client.on('error', () => undefined);
    this.#isCluster = this.#client instanceof Cluster;
    this.#offset = Date.now() - this.#clock.now();
  }

  /** The client this store talks through. */
  get client(): RedisClient {
    return this.#client;
  }

  /** The current Redis time in ms, estimated from the clock and the last `TIME` Redis reported. */
  now(): number {
    return this.#clock.now() + this.#offset;
  }

  /**
   * Reads Redis `TIME` once, so {@link now} follows Redis's clock rather than this host's. Later writes keep
   * it in step. Call before taking a version from {@link now}; cheap once done.
   */
  async syncTime(): Promise<void> {
    if (this.#synced) return;
    if (this.#client.status !== 'ready') await this.#ready();
    const [seconds, micros] = await this.#client.time();
    if (this.#synced) return;
    this.#offset = Number(seconds) * 1000 + Number(micros) / 1000 - this.#clock.now();
    this.#synced = true;
  }

  /** Whether {@link syncTime} has completed. */
  get synced(): boolean {
    return this.#synced;
  }

  /** The Redis key holding `key`'s entry. */
  entryKey(key: string): string {
    return `${this.#prefix}:e:${tagged(key)}`;
  }

  /**
   * One key. On a single server, the gets of one tick go out together as one `MGET` (a lone get as `GET`):
   * Redis looks up the same keys with fewer commands, and each get still costs one round trip. On a
   * Cluster keys sit in different slots, so each is a `GET` (auto-pipelined per master).
   */
  get(key: string): Promise<StoredEntry | undefined> {
    if (this.#client.status !== 'ready') return this.#ready().then(() => this.get(key));
    const name = this.entryKey(key);
    if (this.#isCluster) return this.#client.get(name).then(this.#parse);
    return new Promise((resolve, reject) => {
      let batch = this.#batch;
      if (batch === undefined) {
        batch = { names: [], resolves: [], rejects: [] };
        this.#batch = batch;
        process.nextTick(this.#flush);
      }
      batch.names.push(name);
      batch.resolves.push(resolve);
      batch.rejects.push(reject);
      if (batch.names.length >= MAX_BATCH) this.#flush();
    });
  }

  async getMany(keys: readonly string[]): Promise<(StoredEntry | undefined)[]> {
    if (keys.length === 0) return [];
    if (this.#client.status !== 'ready') await this.#ready();
    const names = keys.map((k) => this.entryKey(k));
    // One MGET on a single server; on a Cluster keys live in different slots, so GETs that auto-pipelining
    // sends as one batch per master.
    const raws = this.#isCluster
      ? await Promise.all(names.map((n) => this.#client.get(n)))
      : await this.#client.mget(...names);
    const now = this.now();
    return raws.map((raw) => parse(raw, now));
  }

  set(key: string, entry: StoredEntry): Promise<boolean> {
    return this.setFenced(key, entry, '');
  }

  /**
   * {@link set}, also refused when another holder than `fence` holds the key's lock (a lease that expired
   * and was taken over), so a writer that lost its lease cannot overwrite the new holder's result.
   */
  async setFenced(key: string, entry: StoredEntry, fence: string): Promise<boolean> {
    if (this.#client.status !== 'ready') await this.#ready();
    if (entry.tags.length > 0 && !this.#isCluster) return this.#setTagged(key, entry, fence);
    let minVersion = 0;
    if (entry.tags.length > 0) {
      // On a Cluster a tag's keys live in the tag's slot, not the entry's: one script per tag first.
      const ttl = String(Math.max(1, Math.ceil(entry.ttlMs + entry.graceMs)));
      const marks = await Promise.all(
        entry.tags.map((tag) => TAG.run(this.#client, this.#tagKeys(tag), [key, ttl])),
      );
      for (const mark of marks) minVersion = Math.max(minVersion, Number(mark));
    }
    const result = (await SET.run(
      this.#client,
      [this.entryKey(key), this.#lockKey(key)],
      [
        entry.version.toFixed(3),
        entry.ttlMs,
        entry.graceMs,
        JSON.stringify(entry.tags),
        entry.data,
        minVersion.toFixed(3),
        this.#tombstoneMs,
        fence,
      ],
    )) as [number, string];
    this.#sync(result[1]);
    return result[0] === 1;
  }

  /** {@link setFenced} of a tagged entry on a single server: one script, one round trip. */
  async #setTagged(key: string, entry: StoredEntry, fence: string): Promise<boolean> {
    const keys = [this.entryKey(key), this.#lockKey(key)];
    for (const tag of entry.tags) keys.push(...this.#tagKeys(tag));
    const result = (await SET_TAGGED.run(this.#client, keys, [
      entry.version.toFixed(3),
      entry.ttlMs,
      entry.graceMs,
      JSON.stringify(entry.tags),
      entry.data,
      '0',
      this.#tombstoneMs,
      fence,
      key,
      String(Math.max(1, Math.ceil(entry.ttlMs + entry.graceMs))),
    ])) as [number, string];
    this.#sync(result[1]);
    return result[0] === 1;
  }

  async delete(key: string): Promise<void> {
    if (this.#client.status !== 'ready') await this.#ready();
    this.#sync((await DEL.run(this.#client, [this.entryKey(key)], [this.#tombstoneMs])) as string);
  }

  async invalidateTag(tag: string): Promise<void> {
    if (this.#client.status !== 'ready') await this.#ready();
    const [at, members] = (await INVALIDATE_TAG.run(
      this.#client,
      [...this.#tagKeys(tag), this.#tagKey(tag, 'k')],
      [this.#tombstoneMs],
    )) as [string, string[]];
    this.#sync(at);
    const bySlot = new Map<number, string[]>();
    for (const member of members) {
      const name = this.entryKey(member);
      const slot = this.#isCluster ? slotOf(name) : 0;
      const group = bySlot.get(slot);
      if (group === undefined) bySlot.set(slot, [name]);
      else group.push(name);
    }
    await Promise.all(
      [...bySlot.values()].map((names) => INVALIDATE_KEYS.run(this.#client, names, [at, this.#tombstoneMs])),
    );
  }

  async clear(): Promise<void> {
    if (this.#client.status !== 'ready') await this.#ready();
    const masters = this.#client instanceof Cluster ? this.#client.nodes('master') : [this.#client];
    await Promise.all(
      masters.map(async (node) => {
        let cursor = '0';
        do {
          const [next, names] = await node.scan(cursor, 'MATCH', `${this.#prefix}:*`, 'COUNT', 1000);
          cursor = next;
          // One UNLINK per key: on a Cluster the keys of one batch sit in different slots.
          await Promise.all(names.map((n) => node.unlink(n)));
        } while (cursor !== '0');
      }),
    );
  }

  /** Takes `key`'s lease (`SET NX PX`) for `leaseMs` with `fence` as its value; false if someone holds it. */
  async lock(key: string, fence: string, leaseMs: number): Promise<boolean> {
    if (this.#client.status !== 'ready') await this.#ready();
    return (await this.#client.set(this.#lockKey(key), fence, 'PX', leaseMs, 'NX')) === 'OK';
  }

  /** Releases `key`'s lease if `fence` still holds it. */
  async unlock(key: string, fence: string): Promise<void> {
    await UNLOCK.run(this.#client, [this.#lockKey(key)], [fence]);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await releaseRedis(this.#redis);
  }

  #lockKey(key: string): string {
    return `${this.#prefix}:l:${tagged(key)}`;
  }

  /** A tag's index of keys (a sorted set: each key scored by when its entry expires) and its marker. */
  #tagKeys(tag: string): string[] {
    return [this.#tagKey(tag, 'z'), this.#tagKey(tag, 'i')];
  }

  /** One of a tag's keys: its index `z`, its invalidation marker `i`, or `k`, the index earlier versions kept. */
  #tagKey(tag: string, part: 'z' | 'i' | 'k'): string {
    return `${this.#prefix}:t:${tagged(tag)}:${part}`;
  }

  #sync(redisTime: string): void {
    const offset = Number(redisTime) - this.#clock.now();
    // Answers arrive after Redis read its clock, so each is a lower bound: keep the highest, so that
    // `now()` never runs backwards and versions from one node only grow.
    if (offset > this.#offset) this.#offset = offset;
  }

  /** Waits for the first connection (up to 2 s); a lost one fails at once. */
  #ready(): Promise<void> {
    if (this.#closed) return Promise.reject(new StoreError('redis', 'the store is closed'));
    return whenConnected(this.#client, REDIS_FIRST_CONNECTION_WAIT_MS);
  }
}
