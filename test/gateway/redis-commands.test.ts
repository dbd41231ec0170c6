/**
 * What each request path costs Redis, counted rather than estimated. Redis counts what it runs: `INFO
 * commandstats` (every command by name, those inside scripts included, and its CPU time in them) and `INFO
 * stats` (`total_net_input_bytes`, `total_net_output_bytes`), read before and after each path with the
 * readings' own traffic taken out. The gateways reach Redis through a counting TCP relay, which counts the
 * commands they send (one round trip each) and the bytes each way; the bytes Redis counts must equal the
 * relay's. On a Cluster of three masters the clients reach each master as the Cluster announces it, past
 * any relay: there Redis's counts, summed over the masters, are all there is, and they are read once the
 * path's last command ran and two readings in a row agree. Each group of gateways has a Redis (or Cluster)
 * of its own, so only its commands and bus deliveries count; requests go one at a time, so no two share a
 * batched command (hits of one tick share an `MGET` and limit checks an `EVALSHA`: under concurrency a
 * request costs at most these figures).
 *
 * Commands are exact: a path sends a fixed set, and the ones sent after the answer (the cache write and its
 * bus message, a limit's settlement, a pacing report) are waited for before Redis is read. Bytes depend on
 * the answer's size and on key names, so they are bounded, and printed with the commands as a table that
 * docs/scaling.md quotes. The provider is a FAKE OpenAI-compatible server (no real one can run here) that
 * reports its rate limits in OpenAI's headers.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { request } from 'undici';
import type { GatewayConfig } from '../../src/gateway/config.ts';
import type { Gateway } from '../../src/gateway/server.ts';
import { serveGateway } from '../helpers/gateway.ts';
import {
  type RedisCluster,
  type RedisServer,
  startRedis,
  startRedisCluster,
  TEST_COMMAND_TIMEOUT_MS,
} from '../helpers/redis.ts';
import { waitFor } from '../helpers/servers.ts';
import { type FakeUpstream, startFakeUpstream } from './fake-upstream.ts';

/** Requests measured per path; the figures are per request. */
const ROUNDS = 10;

/** Counts by command name (`evalsha`, `get`, ...). */
type Commands = Record<string, number>;

/** What the gateways and Redis did over one measurement. */
interface Usage {
  /** Commands the gateways sent: one round trip each. */
  sent: Commands;
  /** Commands Redis ran, those inside scripts included. */
  ran: Commands;
  /** Bytes the gateways sent to Redis. */
  bytesIn: number;
  /** Bytes Redis sent to the gateways, bus deliveries included. */
  bytesOut: number;
  /** Redis CPU inside the commands (commandstats `usec`; scripts include what they run), µs. */
  usec: number;
}

const total = (c: Commands) => Object.values(c).reduce((a, b) => a + b, 0);

/**
 * The end of the RESP command that starts at `at` in `buf` (an array of bulk strings, as clients send
 * commands) and its name; undefined while it has not all arrived.
 */
function parseCommand(buf: Buffer, at: number): { name: string; end: number } | undefined {
  let eol = buf.indexOf('\r\n', at);
  if (eol < 0) return undefined;
  const parts = Number(buf.toString('latin1', at + 1, eol));
  let pos = eol + 2;
  let name = '';
  for (let i = 0; i < parts; i++) {
    eol = buf.indexOf('\r\n', pos);
    if (eol < 0) return undefined;
    const start = eol + 2;
    const end = start + Number(buf.toString('latin1', pos + 1, eol));
    if (end + 2 > buf.length) return undefined;
    if (i === 0) name = buf.toString('latin1', start, end).toLowerCase();
    pos = end + 2;
  }
  return { name, end: pos };
}

/** A TCP relay in front of Redis that counts the commands clients send and the bytes each way. */
class CountingRelay {
  readonly sent: Commands = {};
  bytesIn = 0;
  bytesOut = 0;
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();

  constructor(target: { host: string; port: number }) {
    this.#server = createServer((client) => {
      const upstream = createConnection(target);
      for (const s of [client, upstream]) {
        this.#sockets.add(s);
        s.on('close', () => {
          this.#sockets.delete(s);
          client.destroy();
          upstream.destroy();
        });
        s.on('error', () => {});
      }
      let pending: Buffer = Buffer.alloc(0);
      client.on('data', (chunk: Buffer) => {
        this.bytesIn += chunk.length;
        pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
        let at = 0;
        for (let c = parseCommand(pending, at); c !== undefined; c = parseCommand(pending, at)) {
          this.sent[c.name] = (this.sent[c.name] ?? 0) + 1;
          at = c.end;
        }
        pending = pending.subarray(at);
        upstream.write(chunk);
      });
      upstream.on('data', (chunk: Buffer) => {
        this.bytesOut += chunk.length;
        client.write(chunk);
      });
    });
  }

  /** Listens on a free loopback port; resolves with its `redis://` URL. */
  async listen(): Promise<string> {
    this.#server.listen(0, '127.0.0.1');
    await once(this.#server, 'listening');
    const address = this.#server.address() as { port: number };
    return `redis://127.0.0.1:${address.port}`;
  }

  close(): void {
    for (const s of this.#sockets) s.destroy();
    this.#server.close();
  }
}

interface Reading {
  ran: Map<string, { calls: number; usec: number }>;
  /** Bytes Redis read from and wrote to every client but this reader, since it was first read. */
  bytesIn: number;
  bytesOut: number;
}

const INFO = ['INFO', 'stats', 'commandstats'];

/** Length of a command as RESP puts it on the wire. */
function commandBytes(args: readonly string[]): number {
  let n = `*${args.length}\r\n`.length;
  for (const a of args) n += `$${Buffer.byteLength(a)}\r\n`.length + Buffer.byteLength(a) + 2;
  return n;
}

/**
 * Reads one Redis server's counters over a connection of its own, leaving its own `INFO` calls out: each
 * adds its command to the bytes in (counted by the reading it asks for) and its reply to the bytes out
 * (counted by the next one). Byte counts start from the reading `start()` takes.
 */
class InfoReader {
  readonly #client: Redis;
  #ownIn = 0;
  #ownOut = 0;
  #readings = 0;
  #base = { bytesIn: 0, bytesOut: 0 };

  constructor(url: string) {
    this.#client = new Redis(url, { lazyConnect: true, enableReadyCheck: false });
  }

  async start(): Promise<void> {
    await this.#client.connect();
    // The first reading counts what the connection sent before it; replies to that arrive after it.
    await this.read();
    const first = await this.read();
    this.#base = { bytesIn: first.bytesIn, bytesOut: first.bytesOut };
  }

  async read(): Promise<Reading> {
    const text = (await this.#client.call(INFO[0]!, ...INFO.slice(1))) as string;
    this.#ownIn += commandBytes(INFO);
    const reading: Reading = {
      ran: new Map(),
      bytesIn: Number(/total_net_input_bytes:(\d+)/.exec(text)?.[1]) - this.#ownIn - this.#base.bytesIn,
      bytesOut: Number(/total_net_output_bytes:(\d+)/.exec(text)?.[1]) - this.#ownOut - this.#base.bytesOut,
    };
    const size = Buffer.byteLength(text);
    this.#ownOut += `$${size}\r\n`.length + size + 2;
    this.#readings++;
    for (const m of text.matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm)) {
      // This reader's own INFO calls are left out; anyone else's count.
      const calls = Number(m[2]) - (m[1] === 'info' ? this.#readings : 0);
      reading.ran.set(m[1]!, { calls, usec: m[1] === 'info' ? 0 : Number(m[3]) });
    }
    return reading;
  }

  close(): void {
    this.#client.disconnect();
  }
}

/** What Redis ran and moved from one reading to another. */
function between(from: Reading, to: Reading): Usage {
  const usage: Usage = {
    sent: {},
    ran: {},
    bytesIn: to.bytesIn - from.bytesIn,
    bytesOut: to.bytesOut - from.bytesOut,
    usec: 0,
  };
  for (const [name, now] of to.ran) {
    const was = from.ran.get(name) ?? { calls: 0, usec: 0 };
    if (now.calls === was.calls) continue;
    usage.ran[name] = now.calls - was.calls;
    usage.usec += now.usec - was.usec;
  }
  return usage;
}

/**
 * Redis's counters, and a relay in front of it counting what the gateways send. Redis is quiet when every
 * byte the relay passed has been counted by Redis too: it has read and run every command sent, and its
 * replies have arrived.
 */
class RedisMeter {
  readonly relay: CountingRelay;
  readonly #reader: InfoReader;

  constructor(server: RedisServer) {
    this.relay = new CountingRelay(server);
    this.#reader = new InfoReader(server.url);
  }

  /** Takes the baseline and opens the relay; resolves with the URL the gateways use. */
  async start(): Promise<string> {
    await this.#reader.start();
    return this.relay.listen();
  }

  /** A reading once Redis has counted every byte the relay passed, either way. */
  async #quiet(): Promise<Reading> {
    let reading = await this.#reader.read();
    await waitFor(
      async () => {
        reading = await this.#reader.read();
        return reading.bytesIn === this.relay.bytesIn && reading.bytesOut === this.relay.bytesOut;
      },
      {
        what: 'Redis to count what the relay passed',
        intervalMs: 1,
        describe: () =>
          `Redis ${reading.bytesIn} in, ${reading.bytesOut} out; relay ${this.relay.bytesIn} in, ${this.relay.bytesOut} out`,
      },
    );
    return reading;
  }

  /**
   * Runs `fn`, waits until the gateways have sent `calls` commands since it started (those a path sends
   * after its answer included) and Redis has run them, and returns what happened.
   */
  async measure(fn: () => Promise<void>, expected: number | (() => number)): Promise<Usage> {
    const relay = this.relay;
    const from = await this.#quiet();
    const sent0 = { ...relay.sent };
    await fn();
    const calls = typeof expected === 'number' ? expected : expected();
    const sent = () => {
      const out: Commands = {};
      for (const [name, n] of Object.entries(relay.sent))
        if (n > (sent0[name] ?? 0)) out[name] = n - (sent0[name] ?? 0);
      return out;
    };
    await waitFor(() => total(sent()) >= calls, {
      what: `${calls} commands sent to Redis`,
      intervalMs: 1,
      describe: () => JSON.stringify(sent()),
    });
    const to = await this.#quiet();
    return { ...between(from, to), sent: sent() };
  }

  close(): void {
    this.#reader.close();
    this.relay.close();
  }
}

/**
 * The counters of every master of a Cluster, summed. Cluster clients connect to each node as the Cluster
 * announces it, so no relay sees what they send: Redis's counts alone are read, and Redis is quiet once two
 * readings in a row are alike after the path's last command ran.
 */
class ClusterMeter {
  readonly #readers: InfoReader[];

  constructor(urls: readonly string[]) {
    this.#readers = urls.map((url) => new InfoReader(url));
  }

  async start(): Promise<void> {
    await Promise.all(this.#readers.map((r) => r.start()));
  }

  async #read(): Promise<Reading> {
    const sum: Reading = { ran: new Map(), bytesIn: 0, bytesOut: 0 };
    for (const reading of await Promise.all(this.#readers.map((r) => r.read()))) {
      sum.bytesIn += reading.bytesIn;
      sum.bytesOut += reading.bytesOut;
      for (const [name, n] of reading.ran) {
        const was = sum.ran.get(name) ?? { calls: 0, usec: 0 };
        sum.ran.set(name, { calls: was.calls + n.calls, usec: was.usec + n.usec });
      }
    }
    return sum;
  }

  /** Runs `fn`, waits until what Redis ran satisfies `done` and nothing more arrives, and returns it. */
  async measure(fn: () => Promise<void>, done: (ran: Commands) => boolean): Promise<Usage> {
    const from = await this.#read();
    await fn();
    let last = from;
    await waitFor(
      async () => {
        last = await this.#read();
        return done(between(from, last).ran);
      },
      {
        what: 'the path to reach Redis',
        intervalMs: 1,
        describe: () => JSON.stringify(between(from, last).ran),
      },
    );
    await waitFor(
      async () => {
        const next = await this.#read();
        const alike = [...next.ran].every(([name, n]) => last.ran.get(name)?.calls === n.calls);
        last = next;
        return alike;
      },
      { what: 'Redis to be quiet', intervalMs: 1 },
    );
    return between(from, last);
  }

  close(): void {
    for (const r of this.#readers) r.close();
  }
}

function addInto(into: Commands, from: Commands): void {
  for (const [name, n] of Object.entries(from)) into[name] = (into[name] ?? 0) + n;
}

/** Adds `b` into `a`. */
function add(a: Usage, b: Usage): Usage {
  addInto(a.sent, b.sent);
  addInto(a.ran, b.ran);
  a.bytesIn += b.bytesIn;
  a.bytesOut += b.bytesOut;
  a.usec += b.usec;
  return a;
}

const none = (): Usage => ({ sent: {}, ran: {}, bytesIn: 0, bytesOut: 0, usec: 0 });

/** Each command's count divided by `ROUNDS`. */
function perRequest(commands: Commands): Commands {
  const out: Commands = {};
  for (const [name, n] of Object.entries(commands)) out[name] = n / ROUNDS;
  return out;
}

/** `1 EVALSHA + 1 GET` */
function spell(commands: Commands): string {
  const parts = Object.entries(perRequest(commands))
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([name, n]) => `${n} ${name.toUpperCase()}`);
  return parts.length === 0 ? 'none' : parts.join(' + ');
}

/** The table rows, printed once every path was measured. */
const rows: string[] = [];

function report(path: string, usage: Usage, answerBytes: number | undefined, relayed = true): void {
  rows.push(
    `| ${path} | ${relayed ? spell(usage.sent) : 'not seen (no relay)'} | ${total(usage.ran) / ROUNDS} (${spell(usage.ran)}) | ${Math.round(usage.bytesIn / ROUNDS)} | ${Math.round(usage.bytesOut / ROUNDS)} | ${(usage.usec / ROUNDS).toFixed(1)} | ${answerBytes ?? ''} |`,
  );
}

const gateways: Gateway[] = [];
const servers: RedisServer[] = [];
const clusters: RedisCluster[] = [];
const meters: { close(): void }[] = [];
let fake: FakeUpstream;

before(async () => {
  fake = await startFakeUpstream();
});
after(async () => {
  await Promise.all(gateways.map((g) => g.close()));
  for (const m of meters) m.close();
  await Promise.all([...servers.map((s) => s.stop()), ...clusters.map((c) => c.stop()), fake.close()]);
  console.log(
    [
      '# Redis per request, counted by INFO commandstats and INFO stats (one request at a time)',
      '# | path | commands sent (round trips) | commands Redis ran | bytes to Redis | bytes from Redis | Redis CPU µs | answer bytes |',
      ...rows.map((r) => `# ${r}`),
    ].join('\n'),
  );
});

/** A Redis of its own for one group of gateways, so that only their commands and bus deliveries count. */
async function ownRedis(): Promise<{ url: string; meter: RedisMeter }> {
  const server = await startRedis();
  servers.push(server);
  const meter = new RedisMeter(server);
  meters.push(meter);
  return { url: await meter.start(), meter };
}

async function node(redisUrl: string, config: Partial<GatewayConfig> = {}): Promise<string> {
  const { base, gw } = await serveGateway(gateways, {
    redisUrl,
    redisCommandTimeoutMs: TEST_COMMAND_TIMEOUT_MS,
    adminToken: 'admin',
    ...config,
  });
  byBase.set(base, gw);
  return base;
}

const byBase = new Map<string, Gateway>();

/**
 * Whether the gateway at `base` takes a Redis lease for each miss, so that identical requests on several
 * nodes make one upstream call (the cache's `lock`): known once it produced an answer.
 */
const leases = (base: string) => byBase.get(base)!.cache.stats().lock_acquired > 0;

/** A miss: its lookup, the write and its bus message; with a lease, taking it, looking again and giving it back. */
const MISS: Commands = { evalsha: 1, get: 1, publish: 1 };
const LEASED_MISS: Commands = { evalsha: 2, get: 2, publish: 1, set: 1 };
const missOf = (base: string) => (leases(base) ? LEASED_MISS : MISS);

/** Commands a path sends, plus a miss's. */
function withMiss(base: string, commands: Commands): Commands {
  const out = { ...commands };
  addInto(out, missOf(base));
  return out;
}

interface Answer {
  cache: string;
  key: string;
  bytes: number;
  status: number;
}

async function ask(
  base: string,
  content: string,
  options: { model?: string; headers?: Record<string, string> } = {},
): Promise<Answer> {
  const res = await request(`${base}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...options.headers },
    body: JSON.stringify({
      model: options.model ?? 'local-chat',
      temperature: 0,
      messages: [{ role: 'user', content }],
    }),
  });
  const text = await res.body.text();
  return {
    status: res.statusCode,
    cache: String(res.headers['x-clawperf-cache']),
    key: String(res.headers['x-clawperf-cache-key']),
    bytes: Buffer.byteLength(text),
  };
}

async function invalidate(base: string, body: { key: string } | { tag: string }): Promise<void> {
  const res = await request(`${base}/admin/cache/invalidate`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: 'Bearer admin' },
    body: JSON.stringify(body),
  });
  assert.equal(res.statusCode, 200);
  await res.body.dump();
}

/**
 * Runs `ROUNDS` measurements of `round` (each given its index) and sums them; `setup`, when given, runs
 * before each one unmeasured, and is done when Redis has taken `setup.calls` commands.
 */
async function rounds(
  meter: RedisMeter,
  calls: number,
  round: (i: number) => Promise<void>,
  setup?: { run: (i: number) => Promise<void>; calls: number },
): Promise<Usage> {
  const sum = none();
  for (let i = 0; i < ROUNDS; i++) {
    if (setup !== undefined) await meter.measure(() => setup.run(i), setup.calls);
    add(sum, await meter.measure(() => round(i), calls));
  }
  return sum;
}

describe('the cache paths, on gateways sharing one Redis', () => {
  let meter: RedisMeter;
  let url: string;
  let a: string;
  let b: string;

  before(async () => {
    ({ url, meter } = await ownRedis());
    a = await node(url);
    b = await node(url);
    // The first write loads its script (NOSCRIPT, then EVAL), as does the first release of a lease.
    await meter.measure(
      async () => assert.equal((await ask(a, 'warm-up')).cache, 'miss'),
      () => total(missOf(a)) + (leases(a) ? 2 : 1),
    );
    await meter.measure(async () => assert.equal((await ask(b, 'warm-up')).cache, 'hit'), 1);
  });

  it('a miss: one GET, one write script and one PUBLISH, delivered to both nodes (and a lease, when taken)', async () => {
    let bytes = 0;
    const usage = await rounds(meter, total(missOf(a)), async (i) => {
      const answer = await ask(a, `question ${i}`);
      assert.equal(answer.cache, 'miss');
      bytes = answer.bytes;
    });
    assert.deepEqual(perRequest(usage.sent), missOf(a));
    // The write carries the answer (with its key, tags and lifetimes) to Redis.
    assert.ok(
      usage.bytesIn / ROUNDS > bytes && usage.bytesIn / ROUNDS < bytes + 1_500,
      `${usage.bytesIn} in`,
    );
    assert.ok(usage.bytesOut / ROUNDS < 1_000, `${usage.bytesOut} out`);
    report(
      `miss${leases(a) ? ', with a lease' : ''} (the write and its bus message follow the answer)`,
      usage,
      bytes,
    );
  });

  it('a hit in L1: no command at all', async () => {
    let bytes = 0;
    const usage = await rounds(meter, 0, async (i) => {
      const answer = await ask(a, `question ${i}`);
      assert.equal(answer.cache, 'hit');
      bytes = answer.bytes;
    });
    assert.deepEqual(usage, none());
    report('hit in L1', usage, bytes);
  });

  it('a hit in L2 on a node that did not produce the answer: one GET, and L1 there afterwards', async () => {
    let bytes = 0;
    const usage = await rounds(meter, 1, async (i) => {
      const answer = await ask(b, `question ${i}`);
      assert.equal(answer.cache, 'hit');
      bytes = answer.bytes;
    });
    assert.deepEqual(perRequest(usage.sent), { get: 1 });
    // The stored entry comes back: the answer with its version, lifetimes and tags.
    assert.ok(
      usage.bytesOut / ROUNDS > bytes && usage.bytesOut / ROUNDS < bytes + 1_000,
      `${usage.bytesOut} out`,
    );
    assert.ok(usage.bytesIn / ROUNDS < 200, `${usage.bytesIn} in`);
    report('hit in L2 (another node produced it)', usage, bytes);
    const again = await rounds(meter, 0, async (i) => {
      assert.equal((await ask(b, `question ${i}`)).cache, 'hit');
    });
    assert.deepEqual(again, none(), 'the L2 hit filled L1');
  });

  it('embeddings of 4 inputs: one MGET for them all; each missed input its own write and bus message', async () => {
    const INPUTS = 4;
    const embed = async (base: string, i: number) => {
      const res = await request(`${base}/v1/embeddings`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          model: 'local-embed',
          input: Array.from({ length: INPUTS }, (_, j) => `text ${i} ${j}`),
        }),
      });
      const text = await res.body.text();
      return { cache: String(res.headers['x-clawperf-cache']), bytes: Buffer.byteLength(text) };
    };
    let bytes = 0;
    const perInput = missOf(a);
    const lookups = leases(a) ? 2 : 1;
    const sends = INPUTS * (total(perInput) - (perInput.get ?? 0)) + lookups;
    const miss = await rounds(meter, sends, async (i) => {
      const answer = await embed(a, i);
      assert.equal(answer.cache, 'miss');
      bytes = answer.bytes;
    });
    // The lookups of one tick are one MGET; with a lease, the second lookups once each lease is held too.
    const { get = 0, mget = 0, ...writes } = perRequest(miss.sent);
    assert.ok(
      mget >= 1 && mget <= lookups && get + mget * INPUTS >= lookups * INPUTS,
      JSON.stringify(miss.sent),
    );
    const { get: _, ...perInputWrites } = perInput;
    assert.deepEqual(
      writes,
      Object.fromEntries(Object.entries(perInputWrites).map(([name, n]) => [name, n * INPUTS])),
    );
    report(
      `embeddings, ${INPUTS} inputs: miss${leases(a) ? ', with a lease' : ''}, 2 nodes on the bus`,
      miss,
      bytes,
    );
    const hit = await rounds(meter, 1, async (i) => {
      const answer = await embed(b, i);
      assert.equal(answer.cache, 'hit');
      bytes = answer.bytes;
    });
    assert.deepEqual(perRequest(hit.sent), { mget: 1 });
    report(`embeddings, ${INPUTS} inputs: hit in L2`, hit, bytes);
  });

  it('an invalidation by key: one tombstone script and one PUBLISH; each further node one more delivery', async () => {
    let key = '';
    const produce = (prefix: string) => ({
      run: async (i: number) => {
        key = (await ask(a, `${prefix} ${i}`)).key;
      },
      calls: total(missOf(a)),
    });
    // The first tombstone loads its script (NOSCRIPT, then EVAL).
    await meter.measure(() => invalidate(b, { key: 'warm-up' }), 3);
    const two = await rounds(meter, 2, () => invalidate(b, { key }), produce('two nodes'));
    assert.deepEqual(perRequest(two.sent), { evalsha: 1, publish: 1 });
    report('invalidation by key, 2 nodes', two, undefined);
    await node(url);
    const three = await rounds(meter, 2, () => invalidate(b, { key }), produce('three nodes'));
    assert.deepEqual(perRequest(three.sent), { evalsha: 1, publish: 1 });
    report('invalidation by key, 3 nodes', three, undefined);
    const delivery = (three.bytesOut - two.bytesOut) / ROUNDS;
    assert.ok(delivery > 50 && delivery < 500, `${delivery} bytes per further node`);
    rows.push(`| each further node on the bus, per message | none | 0 | 0 | ${Math.round(delivery)} | | |`);
  });

  it('an invalidation by tag: the tag script, one script over its entries, and one PUBLISH', async () => {
    // Empties the tag's index of the answers cached above, so that each round has one entry.
    await invalidate(b, { tag: 'tenant:default' });
    const usage = await rounds(meter, 3, () => invalidate(b, { tag: 'tenant:default' }), {
      run: async (i) => void (await ask(a, `tagged ${i}`)),
      calls: total(missOf(a)),
    });
    assert.deepEqual(perRequest(usage.sent), { evalsha: 2, publish: 1 });
    report('invalidation by tag (one entry), 3 nodes', usage, undefined);
  });
});

describe('tenant limits, on an answer in L1', () => {
  for (const [limits, calls, name] of [
    [{ rpm: 1_000_000 }, 1, 'rpm: one check script'],
    [
      { rpm: 1_000_000, tpm: 100_000_000 },
      2,
      'rpm and tpm: one check script, and the settlement after the answer',
    ],
  ] as const) {
    it(name, async () => {
      const { url, meter } = await ownRedis();
      const base = await node(url, { limits, apiKeys: { 'sk-tenant': 'tenant-a' } });
      const headers = { authorization: 'Bearer sk-tenant' };
      // The first check loads its script (EVALSHA, NOSCRIPT, EVALSHA again, EVAL), as do the first write,
      // release of a lease and settlement (NOSCRIPT, then EVAL).
      await meter.measure(
        async () => assert.equal((await ask(base, 'limited', { headers })).cache, 'miss'),
        () => total(missOf(base)) + (leases(base) ? 2 : 1) + 2 * calls + 1,
      );
      let bytes = 0;
      const usage = await rounds(meter, calls, async () => {
        const answer = await ask(base, 'limited', { headers });
        assert.equal(answer.cache, 'hit');
        bytes = answer.bytes;
      });
      assert.deepEqual(perRequest(usage.sent), { evalsha: calls });
      report(`limit check, ${Object.keys(limits).join(' + ')} (hit in L1)`, usage, bytes);
    });
  }
});

describe('provider pacing, for a deployment key shared on Redis', () => {
  let meter: RedisMeter;
  let base: string;

  before(async () => {
    const redis = await ownRedis();
    meter = redis.meter;
    base = await node(redis.url, { upstreamUrl: fake.url, upstreamApiKey: 'sk-provider' });
    // The first call loads the pacing script (NOSCRIPT, then EVAL) and learns the key's budget from the
    // provider's headers; it is reported with EVALSHA.
    await meter.measure(async () => {
      const answer = await ask(base, 'paced', {
        model: 'fake-chat',
        headers: { 'x-clawperf-cache': 'bypass' },
      });
      assert.equal(answer.status, 200);
    }, 3);
  });

  it('a call upstream without the cache: one decision script before it and one report after it', async () => {
    const calls = fake.total('/v1/chat/completions');
    let bytes = 0;
    const usage = await rounds(meter, 2, async (i) => {
      const answer = await ask(base, `paced ${i}`, {
        model: 'fake-chat',
        headers: { 'x-clawperf-cache': 'bypass' },
      });
      assert.equal(answer.cache, 'bypass');
      bytes = answer.bytes;
    });
    assert.equal(fake.total('/v1/chat/completions'), calls + ROUNDS);
    assert.deepEqual(perRequest(usage.sent), { evalsha: 2 });
    report('pacing decision and report (cache bypassed)', usage, bytes);
  });

  it('a miss sent to the provider: the miss and the pacing together, nothing else', async () => {
    // The first write loads its script (NOSCRIPT, then EVAL), as does the first release of a lease.
    await meter.measure(
      async () => assert.equal((await ask(base, 'provider warm-up', { model: 'fake-chat' })).cache, 'miss'),
      () => total(missOf(base)) + (leases(base) ? 2 : 1) + 2,
    );
    let bytes = 0;
    const expected = withMiss(base, { evalsha: 2 });
    const usage = await rounds(meter, total(expected), async (i) => {
      const answer = await ask(base, `provider miss ${i}`, { model: 'fake-chat' });
      assert.equal(answer.cache, 'miss');
      bytes = answer.bytes;
    });
    assert.deepEqual(perRequest(usage.sent), expected);
    report(`miss sent to a provider${leases(base) ? ', with a lease' : ''}, 1 node`, usage, bytes);
  });
});

describe('the cache on a Redis Cluster of three masters', () => {
  let cluster: RedisCluster;
  let meter: ClusterMeter;
  let a: string;
  let b: string;
  /** A miss has reached Redis once its bus message went out and, with a lease, the lease was given back. */
  const missDone = (ran: Commands) => (ran.spublish ?? 0) >= 1 && (!leases(a) || (ran.del ?? 0) >= 1);

  before(async () => {
    cluster = await startRedisCluster(3);
    clusters.push(cluster);
    meter = new ClusterMeter(cluster.nodes.map((n) => n.url));
    meters.push(meter);
    await meter.start();
    a = await node(cluster.url);
    b = await node(cluster.url);
    // Each master loads a script at its first run there (NOSCRIPT, then EVAL); an entry's master depends on
    // its key, so enough misses that every master has run them all.
    // A Cluster client connects to a master when it first sends it a command: the other node reads them all.
    for (let i = 0; i < 30; i++) {
      await meter.measure(async () => assert.equal((await ask(a, `warm-up ${i}`)).cache, 'miss'), missDone);
      await meter.measure(
        async () => assert.equal((await ask(b, `warm-up ${i}`)).cache, 'hit'),
        (ran) => (ran.get ?? 0) >= 1,
      );
    }
  });

  it('a miss: its lookup, one script per tag, the write script and one SPUBLISH', async () => {
    const usage = none();
    let bytes = 0;
    for (let i = 0; i < ROUNDS; i++) {
      const round = await meter.measure(async () => {
        const answer = await ask(a, `question ${i}`);
        assert.equal(answer.cache, 'miss');
        bytes = answer.bytes;
      }, missDone);
      add(usage, round);
    }
    const { evalsha, spublish, eval: loads } = perRequest(usage.ran);
    assert.deepEqual(
      { evalsha, spublish, loads },
      { evalsha: leases(a) ? 4 : 3, spublish: 1, loads: undefined },
    );
    report(`Cluster: miss${leases(a) ? ', with a lease' : ''}, 2 nodes on the bus`, usage, bytes, false);
  });

  it('a hit in L2 on the other node: one GET', async () => {
    const usage = none();
    let bytes = 0;
    for (let i = 0; i < ROUNDS; i++) {
      const round = await meter.measure(
        async () => {
          const answer = await ask(b, `question ${i}`);
          assert.equal(answer.cache, 'hit');
          bytes = answer.bytes;
        },
        (ran) => (ran.get ?? 0) >= 1,
      );
      add(usage, round);
    }
    assert.deepEqual(perRequest(usage.ran), { get: 1 });
    report('Cluster: hit in L2', usage, bytes, false);
  });
});
