import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { SpanStatusCode, trace } from '@opentelemetry/api';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import pg from 'pg';
import { ConnectionPool, type PooledConnection } from '../../src/concurrency/connection-pool.ts';
import {
  AcquireTimeoutError,
  ClosedError,
  OverloadedError,
  PoolReleaseError,
  ResourceCreateError,
  TimeoutError,
} from '../../src/errors.ts';
import { ManualClock } from '../../src/internal/clock.ts';
import { type PostgresServer, startPostgres } from '../helpers/postgres.ts';

/** An in-memory resource: the pool's logic does not depend on what it pools. */
interface Resource {
  n: number;
  broken: boolean;
}

/** Counts what the pool does with its resources; `failCreate` / `holdCreate` inject faults. */
function resources() {
  const state = {
    created: 0,
    destroyed: 0,
    createCalls: 0,
    live: 0,
    peak: 0,
    failCreate: false,
    holdCreate: false,
    held: [] as (() => void)[],
    destroyedIds: [] as number[],
    create: async (): Promise<Resource> => {
      state.createCalls++;
      if (state.holdCreate) await new Promise<void>((r) => state.held.push(r));
      if (state.failCreate) throw new Error('connection refused');
      state.created++;
      state.live++;
      state.peak = Math.max(state.peak, state.live);
      return { n: state.created, broken: false };
    },
    destroy: async (r: Resource): Promise<void> => {
      state.destroyed++;
      state.live--;
      state.destroyedIds.push(r.n);
    },
    releaseHeld: () => {
      for (const r of state.held.splice(0)) r();
    },
  };
  return state;
}

/** Lets promise callbacks (several hops deep) run. */
const settle = () => new Promise<void>((r) => setImmediate(r));

function pool(
  res: ReturnType<typeof resources>,
  options: Partial<ConstructorParameters<typeof ConnectionPool<Resource>>[0]> = {},
) {
  return new ConnectionPool<Resource>({ create: res.create, destroy: res.destroy, ...options });
}

describe('options', () => {
  it('rejects invalid options with a TypeError naming the option and the value', () => {
    const res = resources();
    assert.throws(() => pool(res, { max: 0 }), /options\.max must be an integer >= 1, got 0/);
    assert.throws(() => pool(res, { min: 5, max: 2 }), /options\.min must be <= options\.max \(2\), got 5/);
    assert.throws(() => pool(res, { acquireTimeoutMs: -1 }), /options\.acquireTimeoutMs .* got -1/);
    assert.throws(() => pool(res, { acquireTimeoutMs: Infinity }), /options\.acquireTimeoutMs/);
    assert.throws(() => pool(res, { validateOnIdle: 'yes' as unknown as boolean }), /validateOnIdle/);
    assert.throws(
      () => new ConnectionPool({ destroy: res.destroy } as never),
      /options\.create must be a function, got undefined/,
    );
  });
});

describe('startup (seed: initialize() fired un-awaited from the constructor)', () => {
  it('fills min in the background and ready() resolves once it is there', async () => {
    const res = resources();
    const p = pool(res, { min: 3, max: 5, clock: new ManualClock() });
    await p.ready();
    assert.equal(p.stats().size, 3);
    assert.equal(p.stats().idle, 3);
    await p.drain();
  });

  it('a failing create at startup is retried, never an unhandled rejection, and ready() names the cause', async () => {
    const clock = new ManualClock();
    const res = resources();
    res.failCreate = true;
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    const p = pool(res, { min: 2, clock, acquireTimeoutMs: 1_000, createRetryBaseMs: 10 });
    const errors: unknown[] = [];
    p.on('createError', (e) => errors.push(e));
    const ready = p.ready();
    await clock.advance(1_000);
    const error = await ready.then(
      () => assert.fail('ready() resolved without connections'),
      (e: unknown) => e,
    );
    assert.ok(error instanceof AcquireTimeoutError);
    assert.equal((error.cause as Error).message, 'connection refused');
    assert.ok(errors.length >= 2, 'creation was retried');
    res.failCreate = false;
    await clock.advance(5_000);
    assert.equal(p.stats().size, 2, 'min is restored once create works again');
    await settle();
    process.off('unhandledRejection', onUnhandled);
    assert.deepEqual(unhandled, []);
    await p.drain();
  });
});

describe('bounded size (seed: concurrent acquires all pass the size check)', () => {
  it('never has more than max alive or being created, under a burst of acquires', async () => {
    const res = resources();
    res.holdCreate = true;
    const p = pool(res, { max: 3, clock: new ManualClock() });
    const leases = Array.from({ length: 50 }, () => p.acquire());
    await settle();
    assert.equal(res.createCalls, 3);
    assert.equal(p.stats().creating, 3);
    assert.equal(p.stats().waiting, 50);
    res.holdCreate = false;
    res.releaseHeld();
    const served: number[] = [];
    for (const [i, lease] of leases.entries()) {
      void lease.then((l) => {
        served.push(i);
        setImmediate(() => p.release(l));
      });
    }
    await Promise.all(leases);
    assert.equal(res.createCalls, 3);
    assert.equal(res.peak, 3);
    assert.deepEqual(
      served,
      Array.from({ length: 50 }, (_, i) => i),
      'waiters are served in FIFO order',
    );
    await settle();
    await p.drain();
  });

  it('refuses waiters beyond maxWaiting at once with OverloadedError', async () => {
    const res = resources();
    const p = pool(res, { max: 1, maxWaiting: 1, clock: new ManualClock() });
    const held = await p.acquire();
    const waiting = p.acquire();
    await assert.rejects(p.acquire(), OverloadedError);
    p.release(held);
    p.release(await waiting);
    assert.equal(p.stats().overloaded, 1);
    await p.drain();
  });
});

describe('acquire timeout and cancel (seed: no acquire timeout or cancel)', () => {
  it('rejects with AcquireTimeoutError after acquireTimeoutMs and leaves no ghost waiter', async () => {
    const clock = new ManualClock();
    const res = resources();
    const p = pool(res, { max: 1, acquireTimeoutMs: 100, clock });
    const held = await p.acquire();
    const late = p.acquire();
    await clock.advance(99);
    assert.equal(p.stats().waiting, 1);
    await clock.advance(1);
    await assert.rejects(late, AcquireTimeoutError);
    assert.equal(p.stats().waiting, 0);
    assert.equal(p.stats().timedOut, 1);
    p.release(held);
    assert.equal(p.stats().idle, 1, 'the release reached nobody and the resource is idle');
    await p.drain();
  });

  it('a release reaching a waiter whose acquire already timed out leaks nothing', async () => {
    const clock = new ManualClock();
    const res = resources();
    const p = pool(res, { max: 1, acquireTimeoutMs: 50, clock });
    const held = await p.acquire();
    const timedOut = p.acquire();
    await clock.advance(60);
    await assert.rejects(timedOut, AcquireTimeoutError);
    p.release(held);
    const next = await p.acquire();
    assert.equal(next.connection, held.connection, 'the one resource is lent again');
    assert.deepEqual(
      { borrowed: p.stats().borrowed, size: p.stats().size, created: res.created },
      { borrowed: 1, size: 1, created: 1 },
    );
    p.release(next);
    await p.drain();
  });

  it('aborting rejects with the signal reason and removes the waiter', async () => {
    const res = resources();
    const p = pool(res, { max: 1, clock: new ManualClock() });
    const held = await p.acquire();
    const controller = new AbortController();
    const waiting = p.acquire({ signal: controller.signal });
    const behind = p.acquire();
    controller.abort(new Error('client went away'));
    await assert.rejects(waiting, /client went away/);
    assert.equal(p.stats().waiting, 1);
    p.release(held);
    const lease = await behind;
    assert.equal(lease.connection, held.connection, 'the next live waiter got it');
    await assert.rejects(p.acquire({ signal: AbortSignal.abort(new Error('already')) }), /already/);
    p.release(lease);
    assert.equal(p.stats().aborted, 2);
    await p.drain();
  });
});

describe('validation (seed: broken connections are lent)', () => {
  it('destroys a resource that fails validation on borrow and lends a fresh one', async () => {
    const res = resources();
    const p = pool(res, { max: 2, validate: (r) => !r.broken, clock: new ManualClock() });
    const first = await p.acquire();
    p.release(first);
    first.connection.broken = true;
    const second = await p.acquire();
    assert.notEqual(second.connection, first.connection);
    assert.equal(second.connection.broken, false);
    assert.deepEqual(res.destroyedIds, [first.connection.n]);
    assert.equal(p.stats().invalid, 1);
    p.release(second);
    await p.drain();
  });

  it('awaits an async validate, and treats a throwing one as a failed check', async () => {
    const res = resources();
    const errors: unknown[] = [];
    const p = pool(res, {
      max: 1,
      clock: new ManualClock(),
      validate: async (r) => {
        if (r.n === 1) throw new Error('socket closed');
        return true;
      },
    });
    p.on('error', (e) => errors.push(e));
    p.release(await p.acquire());
    const lease = await p.acquire();
    assert.equal(lease.connection.n, 2);
    assert.equal((errors[0] as Error).message, 'socket closed');
    p.release(lease);
    await p.drain();
  });

  it('with validateOnIdle, checks idle resources at each reap and replaces broken ones to keep min', async () => {
    const clock = new ManualClock();
    const res = resources();
    const p = pool(res, {
      min: 2,
      max: 4,
      validate: (r) => !r.broken,
      validateOnIdle: true,
      reapIntervalMs: 100,
      clock,
    });
    await p.ready();
    const a = await p.acquire();
    const b = await p.acquire();
    p.release(a);
    p.release(b);
    a.connection.broken = true;
    await clock.advance(100);
    await settle();
    assert.deepEqual(res.destroyedIds, [a.connection.n]);
    assert.equal(p.stats().size, 2);
    assert.equal(p.stats().idle, 2);
    await p.drain();
  });
});

describe('release errors (seed: double release corrupts state)', () => {
  it('a second release throws PoolReleaseError and never lets two borrowers share a resource', async () => {
    const clock = new ManualClock();
    const res = resources();
    const p = pool(res, { max: 1, acquireTimeoutMs: 100, clock });
    const a = await p.acquire();
    p.release(a);
    const b = await p.acquire();
    assert.equal(b.connection, a.connection);
    assert.throws(() => p.release(a), PoolReleaseError);
    const c = p.acquire();
    await clock.advance(100);
    await assert.rejects(c, AcquireTimeoutError, 'b still holds the only resource');
    assert.equal(p.stats().borrowed, 1);
    p.release(b);
    assert.throws(() => p.release(b), PoolReleaseError);
    assert.equal(p.stats().idle, 1);
    await p.drain();
  });

  it('releasing something the pool did not lend throws PoolReleaseError', async () => {
    const res = resources();
    const p = pool(res, { clock: new ManualClock() });
    const other = pool(resources(), { clock: new ManualClock() });
    const foreign = await other.acquire();
    assert.throws(() => p.release(foreign), PoolReleaseError);
    assert.throws(
      () => p.release({ id: 1, connection: {} } as unknown as PooledConnection<Resource>),
      PoolReleaseError,
    );
    other.release(foreign);
    await Promise.all([p.drain(), other.drain()]);
  });

  it('destroy(lease) closes a borrowed resource and a replacement serves the next caller', async () => {
    const res = resources();
    const p = pool(res, { max: 1, clock: new ManualClock() });
    const a = await p.acquire();
    const waiting = p.acquire();
    await p.destroy(a);
    const b = await waiting;
    assert.notEqual(b.connection, a.connection);
    assert.throws(() => p.release(a), PoolReleaseError);
    p.release(b);
    await p.drain();
  });
});

describe('use()', () => {
  it('releases the resource whether fn resolves or throws', async () => {
    const res = resources();
    const p = pool(res, { max: 1, clock: new ManualClock() });
    assert.equal(await p.use((r) => r.n), 1);
    await assert.rejects(
      p.use(() => {
        throw new Error('query failed');
      }),
      /query failed/,
    );
    assert.equal(p.stats().borrowed, 0);
    assert.equal(p.stats().idle, 1);
    await p.drain();
  });
});

describe('failing create (generic-pool #175/#273: hangs or busy-loops)', () => {
  it('a failing create rejects the acquire it was started for at once, with the create error as cause', async () => {
    const clock = new ManualClock();
    const res = resources();
    res.failCreate = true;
    const p = pool(res, { max: 4, acquireTimeoutMs: 1_000, createRetryBaseMs: 10, clock });
    const error = await p.acquire().then(
      () => assert.fail('acquired from a failing create'),
      (e: unknown) => e,
    );
    assert.ok(error instanceof ResourceCreateError, String(error));
    assert.equal((error.cause as Error).message, 'connection refused');
    assert.equal(clock.now(), 0, 'rejected without waiting for the acquire timeout');
    assert.equal(res.createCalls, 1);
    assert.equal(p.stats().waiting, 0, 'no ghost waiter');
    await p.drain();
  });

  it('while create keeps failing, each attempt rejects one waiter and the rest time out with the cause', async () => {
    const clock = new ManualClock();
    const res = resources();
    res.failCreate = true;
    const p = pool(res, { max: 4, acquireTimeoutMs: 1_000, createRetryBaseMs: 10, clock });
    const outcomes = Array.from({ length: 30 }, () =>
      p.acquire().then(
        () => assert.fail('acquired from a failing create'),
        (e: unknown) => e,
      ),
    );
    await clock.advance(1_000);
    const errors = await Promise.all(outcomes);
    const created = errors.filter((e) => e instanceof ResourceCreateError);
    const timedOut = errors.filter((e) => e instanceof AcquireTimeoutError);
    assert.equal(created.length + timedOut.length, 30, errors.map(String).join('; '));
    // Backoff doubles from 10 ms (with jitter down to half): at most ~9 attempts fit in one second, and the
    // first wave starts one creation per waiter up to max.
    assert.ok(res.createCalls >= 2 && res.createCalls <= 16, `create called ${res.createCalls} times`);
    assert.equal(created.length, res.createCalls, 'one rejection per failed attempt');
    for (const e of timedOut) assert.equal(((e as Error).cause as Error).message, 'connection refused');
    assert.equal(p.stats().waiting, 0);
    await p.drain();
  });

  it('keeping min with a failing create never spins: attempts are awaited, one at a time, with backoff', async () => {
    const clock = new ManualClock();
    const res = resources();
    res.failCreate = true;
    const p = pool(res, {
      min: 5,
      max: 10,
      idleTimeoutMs: 100,
      reapIntervalMs: 50,
      createRetryBaseMs: 10,
      createRetryMaxMs: 1_000,
      clock,
    });
    await clock.advance(10_000);
    // Unbounded, the seed's `while (size < min) create()` never yields; with backoff capped at 1 s,
    // ten seconds hold at most ~7 doubling steps plus ~20 capped retries.
    assert.ok(res.createCalls <= 30, `create called ${res.createCalls} times in 10 s`);
    assert.ok(res.createCalls >= 5);
    res.failCreate = false;
    await clock.advance(2_000);
    assert.equal(p.stats().size, 5, 'min is restored once create works again');
    await p.drain();
  });

  it('a create that hangs past createTimeoutMs counts as failed and its late result is destroyed', async () => {
    const clock = new ManualClock();
    const res = resources();
    res.holdCreate = true;
    const p = pool(res, { max: 1, acquireTimeoutMs: 1_000, createTimeoutMs: 200, clock });
    const attempt = p.acquire();
    await clock.advance(1_000);
    const error = await attempt.then(
      () => assert.fail('acquired from a hanging create'),
      (e: unknown) => e,
    );
    assert.ok(error instanceof ResourceCreateError, String(error));
    assert.ok(error.cause instanceof TimeoutError, String(error.cause));
    const draining = p.drain();
    res.holdCreate = false;
    res.releaseHeld();
    await draining;
    await settle();
    assert.ok(res.created >= 1);
    assert.equal(res.live, 0, 'resources that arrived late were destroyed');
  });
});

describe('idle eviction and lifetime', () => {
  it('closes idle resources above min after idleTimeoutMs and keeps min', async () => {
    const clock = new ManualClock();
    const res = resources();
    const p = pool(res, { min: 1, max: 4, idleTimeoutMs: 1_000, reapIntervalMs: 100, clock });
    const leases = await Promise.all([p.acquire(), p.acquire(), p.acquire()]);
    for (const l of leases) p.release(l);
    assert.equal(p.stats().idle, 3);
    await clock.advance(1_100);
    assert.equal(p.stats().size, 1);
    assert.equal(res.live, 1);
    await p.drain();
  });

  it('replaces a resource older than maxLifetimeMs when it is released', async () => {
    const clock = new ManualClock();
    const res = resources();
    const p = pool(res, { max: 2, maxLifetimeMs: 1_000, clock });
    const a = await p.acquire();
    await clock.advance(1_000);
    p.release(a);
    await settle();
    assert.deepEqual(res.destroyedIds, [a.connection.n]);
    const b = await p.acquire();
    assert.notEqual(b.connection, a.connection);
    p.release(b);
    await p.drain();
  });
});

describe('leak warning', () => {
  it('reports a resource held longer than leakWarningMs, once, with the stack of its acquire', async () => {
    const clock = new ManualClock();
    const res = resources();
    const p = pool(res, { leakWarningMs: 500, reapIntervalMs: 100, clock });
    const leaks: { id: number; heldMs: number; stack: string }[] = [];
    p.on('leak', (report) => leaks.push(report));
    const lease = await p.acquire();
    await clock.advance(400);
    assert.equal(leaks.length, 0);
    await clock.advance(500);
    assert.equal(leaks.length, 1);
    assert.equal(leaks[0]!.id, lease.id);
    assert.ok(leaks[0]!.heldMs >= 500);
    assert.match(leaks[0]!.stack, /connection-pool\.test\.ts/);
    p.release(lease);
    await p.drain();
  });
});

describe('drain (tarn #81 hangs; generic-pool #256 creates after drain)', () => {
  it('waits for borrowed resources, destroys everything, and later acquires reject with ClosedError at once', async () => {
    const res = resources();
    const p = pool(res, { max: 2, clock: new ManualClock() });
    const held = await p.acquire();
    p.release(await p.acquire());
    const other = await p.acquire();
    const waiter = p.acquire();
    let drained = false;
    const draining = p.drain().then(() => {
      drained = true;
    });
    await assert.rejects(waiter, ClosedError);
    await assert.rejects(p.acquire(), ClosedError);
    p.release(other);
    await settle();
    assert.equal(drained, false, 'drain waits for the borrowed resource');
    p.release(held);
    await draining;
    assert.equal(res.live, 0);
    assert.equal(p.stats().size, 0);
    assert.equal(p.drain(), p.drain(), 'idempotent');
    await p.close();
  });

  it('creates nothing after drain: a creation in flight is destroyed as it lands', async () => {
    const res = resources();
    res.holdCreate = true;
    const p = pool(res, { min: 2, clock: new ManualClock() });
    await settle();
    const calls = res.createCalls;
    const draining = p.drain();
    res.holdCreate = false;
    res.releaseHeld();
    await draining;
    assert.equal(res.createCalls, calls);
    assert.equal(res.live, 0);
    await assert.rejects(p.acquire(), ClosedError);
    assert.equal(res.createCalls, calls);
  });

  it('destroys resources still borrowed after timeoutMs; their late release is ignored', async () => {
    const clock = new ManualClock();
    const res = resources();
    const p = pool(res, { clock });
    const held = await p.acquire();
    const draining = p.drain({ timeoutMs: 1_000 });
    await clock.advance(1_000);
    await draining;
    assert.equal(res.live, 0);
    p.release(held);
    assert.equal(p.stats().borrowed, 0);
  });
});

describe('timers (seed: timers never cleared)', () => {
  it('stops its reaper on drain: nothing runs afterwards', async () => {
    const clock = new ManualClock();
    const res = resources();
    let validations = 0;
    const p = pool(res, {
      min: 1,
      validate: () => {
        validations++;
        return true;
      },
      validateOnIdle: true,
      reapIntervalMs: 10,
      clock,
    });
    await p.ready();
    await clock.advance(50);
    assert.ok(validations > 0);
    await p.drain();
    const seen = { validations, calls: res.createCalls };
    await clock.advance(1_000);
    assert.deepEqual({ validations, calls: res.createCalls }, seen);
  });

  it('never keeps the process alive: a script that waited once and forgets drain() exits by itself', () => {
    const source = fileURLToPath(new URL('../../src/concurrency/connection-pool.ts', import.meta.url));
    const script = `
      import { ConnectionPool } from ${JSON.stringify(source)};
      const pool = new ConnectionPool({
        create: async () => ({}), destroy: async () => {}, min: 1, max: 1, acquireTimeoutMs: 600000,
        reapIntervalMs: 5, leakWarningMs: 10,
      });
      await pool.ready();
      const held = await pool.acquire();
      const waiting = pool.acquire();
      setTimeout(() => pool.release(held), 10);
      pool.release(await waiting);
      console.log('done');
    `;
    const child = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    assert.equal(child.signal, null, `the script had to be killed: ${child.stderr}`);
    assert.equal(child.status, 0, child.stderr);
    assert.equal(child.stdout.trim(), 'done');
  });
});

describe('tracing', () => {
  it('a wait for a resource is a span, marked as an error when the wait fails', async () => {
    const exporter = new InMemorySpanExporter();
    const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
    trace.setGlobalTracerProvider(provider);
    try {
      const clock = new ManualClock();
      const p = pool(resources(), { max: 1, acquireTimeoutMs: 100, clock });
      const held = await p.acquire();
      const served = p.acquire();
      p.release(held);
      p.release(await served);
      const held2 = await p.acquire();
      const timedOut = p.acquire();
      await clock.advance(100);
      await assert.rejects(timedOut, AcquireTimeoutError);
      p.release(held2);
      await p.drain();
      const waits = exporter.getFinishedSpans().filter((s) => s.name === 'clawperf.pool.acquire');
      assert.deepEqual(
        waits.map((s) => s.status.code),
        [SpanStatusCode.UNSET, SpanStatusCode.UNSET, SpanStatusCode.ERROR],
        'the wait for the first creation, the wait for a release, the timed-out wait; not the immediate acquire',
      );
      assert.equal(exporter.getFinishedSpans().filter((s) => s.name === 'clawperf.pool.create').length, 1);
    } finally {
      trace.disable();
      await provider.shutdown();
    }
  });
});

describe('stats', () => {
  it('holds numbers only and lists its counters', async () => {
    const p = pool(resources(), { clock: new ManualClock() });
    p.release(await p.acquire());
    const stats = p.stats();
    for (const [k, v] of Object.entries(stats)) assert.equal(typeof v, 'number', k);
    for (const counter of p.statsCounters) assert.ok(counter in stats, counter);
    assert.equal(stats.acquired, 1);
    assert.equal(stats.released, 1);
    await p.drain();
  });
});

describe('with real PostgreSQL', () => {
  let server: PostgresServer;
  before(async () => {
    server = await startPostgres();
  });
  after(async () => {
    await server?.stop();
  });

  const connect = async (): Promise<pg.Client> => {
    const client = new pg.Client({
      host: server.host,
      port: server.port,
      user: server.user,
      database: server.database,
      connectionTimeoutMillis: 2_000,
      query_timeout: 2_000,
    });
    // A killed server makes the socket emit 'error'; the pool's validate finds out on next borrow.
    client.on('error', () => {});
    await client.connect();
    return client;
  };
  const pgPool = (options: Partial<ConstructorParameters<typeof ConnectionPool<pg.Client>>[0]> = {}) =>
    new ConnectionPool<pg.Client>({
      create: connect,
      destroy: (c) => c.end().catch(() => {}),
      validate: (c) =>
        c.query('SELECT 1').then(
          () => true,
          () => false,
        ),
      min: 2,
      max: 4,
      acquireTimeoutMs: 5_000,
      createRetryBaseMs: 20,
      createRetryMaxMs: 200,
      ...options,
    });

  it('holds at most max real connections under 40 concurrent queries', async () => {
    const p = pgPool();
    const pids = await Promise.all(
      Array.from({ length: 40 }, () =>
        p.use(async (c) => (await c.query('SELECT pg_backend_pid() AS pid, pg_sleep(0.01)')).rows[0].pid),
      ),
    );
    assert.ok(new Set(pids).size <= 4);
    const count = await p.use(
      async (c) =>
        (
          await c.query(
            "SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_type = 'client backend'",
          )
        ).rows[0].n,
    );
    assert.ok(count <= 4, `${count} client connections`);
    await p.drain();
    assert.equal(p.stats().size, 0);
  });

  it('detects connections broken by a server crash and replaces them when the server returns', async () => {
    const p = pgPool({ acquireTimeoutMs: 1_000 });
    await p.ready();
    const before = await Promise.all([p.acquire(), p.acquire()]);
    const oldPids = new Set<number>();
    for (const lease of before) {
      oldPids.add((await lease.connection.query('SELECT pg_backend_pid() AS pid')).rows[0].pid);
      p.release(lease);
    }

    await server.kill();
    const during = await p.acquire().then(
      () => assert.fail('acquired a connection while the server was down'),
      (e: unknown) => e,
    );
    assert.ok(during instanceof ResourceCreateError || during instanceof AcquireTimeoutError, String(during));
    assert.ok(during.cause instanceof Error, 'the connect error is the cause');
    assert.ok(p.stats().invalid >= 1, 'broken connections failed validation');

    await server.restart();
    const pid = await p.use(
      async (c) => (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number,
      {},
    );
    assert.ok(!oldPids.has(pid), 'a new connection serves after the restart');
    const recovered = Array.from({ length: 8 }, () =>
      p.use(async (c) => (await c.query('SELECT 1 AS one')).rows[0].one),
    );
    assert.deepEqual(await Promise.all(recovered), Array(8).fill(1));
    await p.drain();
    assert.equal(p.stats().size, 0);
  });
});
