import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { SpanStatusCode, trace } from '@opentelemetry/api';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { type BatchProcessor, RequestBatcher } from '../../src/concurrency/batcher.ts';
import { BatchItemError, ClosedError, OverloadedError, TimeoutError } from '../../src/errors.ts';
import { ManualClock } from '../../src/internal/clock.ts';

/** A processor that records its batches and answers when told to (`release`), or at once when `auto`. */
function upstream<T, R>(answer: (items: T[]) => ReadonlyArray<R | Error>, auto = true) {
  const state = {
    batches: [] as T[][],
    inFlight: 0,
    peakInFlight: 0,
    held: [] as (() => void)[],
    processor: (async (items: T[]) => {
      state.batches.push([...items]);
      state.inFlight++;
      state.peakInFlight = Math.max(state.peakInFlight, state.inFlight);
      if (!auto) await new Promise<void>((r) => state.held.push(r));
      state.inFlight--;
      return answer(items);
    }) as BatchProcessor<T, R>,
    release: () => {
      for (const r of state.held.splice(0)) r();
    },
  };
  return state;
}

const double = (items: number[]) => items.map((n) => n * 2);
const settle = () => new Promise<void>((r) => setImmediate(r));
/** Long enough that only size, flush() or close() sends a batch in these tests. */
const NEVER = 60_000;

describe('options', () => {
  it('rejects invalid options with a TypeError naming the option and the value', () => {
    const p = upstream(double).processor;
    assert.throws(() => new RequestBatcher(p, { maxBatchSize: 0 }), /options\.maxBatchSize .* got 0/);
    assert.throws(() => new RequestBatcher(p, { maxWaitMs: -1 }), /options\.maxWaitMs .* got -1/);
    assert.throws(() => new RequestBatcher(p, { maxConcurrentBatches: 1.5 }), /maxConcurrentBatches .* 1\.5/);
    assert.throws(() => new RequestBatcher(p, { cache: { maxEntries: 0 } }), /options\.cache\.maxEntries/);
    assert.throws(() => new RequestBatcher(null as never), /processor must be a function, got null/);
  });
});

describe('batching', () => {
  it('sends items added together as one batch and gives each caller its own result', async () => {
    const up = upstream(double);
    const b = new RequestBatcher(up.processor, { maxWaitMs: 0 });
    const results = await Promise.all([1, 2, 3, 4].map((n) => b.add(n)));
    assert.deepEqual(results, [2, 4, 6, 8]);
    assert.deepEqual(up.batches, [[1, 2, 3, 4]]);
    await b.close();
  });

  it('sends a batch as soon as it holds maxBatchSize items', async () => {
    const up = upstream(double);
    const b = new RequestBatcher(up.processor, { maxBatchSize: 3, maxWaitMs: NEVER });
    const first = [1, 2, 3].map((n) => b.add(n));
    assert.deepEqual(await Promise.all(first), [2, 4, 6]);
    assert.deepEqual(up.batches, [[1, 2, 3]]);
    const rest = b.add(4);
    await settle();
    assert.equal(up.batches.length, 1, 'a partial batch waits');
    await b.close();
    assert.equal(await rest, 8);
  });

  it('sends a partial batch after maxWaitMs', async () => {
    const up = upstream(double);
    const b = new RequestBatcher(up.processor, { maxBatchSize: 100, maxWaitMs: 5 });
    assert.deepEqual(await Promise.all([b.add(1), b.add(2)]), [2, 4]);
    assert.deepEqual(up.batches, [[1, 2]]);
    await b.close();
  });

  it('flush() sends the forming batch now and resolves when it is done', async () => {
    const up = upstream(double);
    const b = new RequestBatcher(up.processor, { maxWaitMs: NEVER });
    const pending = b.add(21);
    await b.flush();
    assert.equal(await pending, 42);
    await b.close();
  });
});

describe('failures reach each caller (seed: errors resolved as results, short arrays yield undefined)', () => {
  it('a failed batch rejects every caller with BatchItemError carrying the cause', async () => {
    const boom = new Error('upstream 503');
    const b = new RequestBatcher<number, number>(
      async () => {
        throw boom;
      },
      { maxWaitMs: 0 },
    );
    const settled = await Promise.allSettled([b.add(1), b.add(2)]);
    for (const [i, s] of settled.entries()) {
      assert.equal(s.status, 'rejected');
      const error = (s as PromiseRejectedResult).reason;
      assert.ok(error instanceof BatchItemError);
      assert.equal(error.cause, boom);
      assert.equal(error.index, i);
    }
    assert.equal(b.stats().failedBatches, 1);
    await b.close();
  });

  it('a processor that throws synchronously or returns a non-array fails the batch the same way', async () => {
    const sync = new RequestBatcher<number, number>(
      () => {
        throw new Error('sync');
      },
      { maxWaitMs: 0 },
    );
    await assert.rejects(sync.add(1), (e: unknown) => e instanceof BatchItemError && /sync/.test(e.message));
    const notArray = new RequestBatcher<number, number>(async () => ({}) as never, { maxWaitMs: 0 });
    await assert.rejects(
      notArray.add(1),
      (e: unknown) => e instanceof BatchItemError && e.cause instanceof TypeError,
    );
    await Promise.all([sync.close(), notArray.close()]);
  });

  it('a short result array rejects only the callers left without a result', async () => {
    const b = new RequestBatcher<number, number>(async (items) => double(items).slice(0, 2), {
      maxWaitMs: 0,
    });
    const settled = await Promise.allSettled([1, 2, 3, 4].map((n) => b.add(n)));
    assert.deepEqual(
      settled.map((s) => s.status),
      ['fulfilled', 'fulfilled', 'rejected', 'rejected'],
    );
    assert.deepEqual(
      settled.slice(0, 2).map((s) => (s as PromiseFulfilledResult<number>).value),
      [2, 4],
    );
    const missing = (settled[3] as PromiseRejectedResult).reason;
    assert.ok(missing instanceof BatchItemError);
    assert.equal(missing.index, 3);
    assert.equal(b.stats().mismatchedBatches, 1);
    await b.close();
  });

  it('a long result array still gives each caller its own result and is counted', async () => {
    const b = new RequestBatcher<number, number>(async (items) => [...double(items), 99], { maxWaitMs: 0 });
    assert.deepEqual(await Promise.all([b.add(1), b.add(2)]), [2, 4]);
    assert.equal(b.stats().mismatchedBatches, 1);
    await b.close();
  });

  it('an Error in the result array rejects only that caller', async () => {
    const b = new RequestBatcher<number, number>(
      async (items) => items.map((n) => (n === 2 ? new Error('bad input 2') : n * 2)),
      { maxWaitMs: 0 },
    );
    const settled = await Promise.allSettled([1, 2, 3].map((n) => b.add(n)));
    assert.deepEqual(
      settled.map((s) => s.status),
      ['fulfilled', 'rejected', 'fulfilled'],
    );
    assert.match((settled[1] as PromiseRejectedResult).reason.message, /bad input 2/);
    await b.close();
  });
});

describe('concurrency and queue bounds (seed: no cap on concurrent batches)', () => {
  it('runs at most maxConcurrentBatches at once; the rest wait their turn', async () => {
    const up = upstream(double, false);
    const b = new RequestBatcher(up.processor, { maxBatchSize: 1, maxConcurrentBatches: 2, maxWaitMs: 0 });
    const all = [1, 2, 3, 4, 5].map((n) => b.add(n));
    await settle();
    assert.equal(up.batches.length, 2);
    assert.equal(b.stats().running, 2);
    assert.equal(b.stats().pendingBatches, 3);
    assert.equal(b.stats().queued, 3);
    while (up.batches.length < 5 || up.held.length > 0) {
      up.release();
      await settle();
    }
    assert.deepEqual(await Promise.all(all), [2, 4, 6, 8, 10]);
    assert.equal(up.peakInFlight, 2);
    await b.close();
  });

  it('while every slot is busy, the forming batch keeps filling and goes out as one when a slot frees', async () => {
    const up = upstream(double, false);
    const b = new RequestBatcher(up.processor, { maxBatchSize: 10, maxConcurrentBatches: 1, maxWaitMs: 0 });
    const first = b.add(0);
    await settle();
    assert.equal(up.batches.length, 1, 'the first item goes at once: a slot was free');
    // Items arriving over several ticks while the processor is busy: one batch, not one per tick.
    const later: Promise<number>[] = [];
    for (let tick = 1; tick <= 4; tick++) {
      later.push(b.add(tick * 10), b.add(tick * 10 + 1));
      await settle();
    }
    assert.equal(up.batches.length, 1, 'nothing sent while the only slot is busy');
    assert.equal(b.stats().pendingBatches, 0, 'no small batches sealed and queued');
    up.release();
    await settle();
    assert.deepEqual(up.batches[1], [10, 11, 20, 21, 30, 31, 40, 41]);
    // A batch that fills up while waiting is sealed at maxBatchSize and the rest form the next one.
    const more = Array.from({ length: 13 }, (_, i) => b.add(100 + i));
    await settle();
    assert.equal(up.batches.length, 2);
    while (up.held.length > 0 || b.stats().running > 0) {
      up.release();
      await settle();
    }
    assert.deepEqual(
      up.batches.slice(2).map((batch) => batch.length),
      [10, 3],
    );
    assert.equal(await first, 0);
    assert.deepEqual(await Promise.all(later), [20, 22, 40, 42, 60, 62, 80, 82]);
    assert.equal((await Promise.all(more)).length, 13);
    await b.close();
  });

  it('refuses items beyond maxQueueSize at once with OverloadedError', async () => {
    const up = upstream(double, false);
    const b = new RequestBatcher(up.processor, {
      maxBatchSize: 1,
      maxConcurrentBatches: 1,
      maxQueueSize: 2,
      maxWaitMs: 0,
    });
    const accepted = [b.add(1), b.add(2), b.add(3)];
    await assert.rejects(b.add(4), (e: unknown) => e instanceof OverloadedError && e.maxQueueSize === 2);
    await assert.rejects(b.add(5, { timeoutMs: 1_000 }), OverloadedError);
    assert.equal(b.stats().overloaded, 2);
    const closing = b.close();
    while (up.held.length > 0 || b.stats().running > 0) {
      up.release();
      await settle();
    }
    assert.deepEqual(await Promise.all(accepted), [2, 4, 6]);
    await closing;
  });
});

describe('shutdown (seed: nothing flushed on shutdown)', () => {
  it('close() sends what is queued, waits for running batches, then refuses new items', async () => {
    const up = upstream(double, false);
    const b = new RequestBatcher(up.processor, {
      maxBatchSize: 2,
      maxConcurrentBatches: 1,
      maxWaitMs: NEVER,
    });
    const items = [1, 2, 3].map((n) => b.add(n));
    let closed = false;
    const closing = b.close().then(() => {
      closed = true;
    });
    await assert.rejects(b.add(4), ClosedError);
    await settle();
    assert.equal(closed, false);
    while (!closed) {
      up.release();
      await settle();
    }
    await closing;
    assert.deepEqual(await Promise.all(items), [2, 4, 6]);
    assert.deepEqual(up.batches, [[1, 2], [3]]);
    assert.equal(b.close(), b.close(), 'idempotent');
    await assert.rejects(b.load(1), ClosedError);
  });
});

describe('abort and timeout', () => {
  it('aborting a queued item rejects its caller and removes it from the next batch', async () => {
    const up = upstream(double);
    const b = new RequestBatcher(up.processor, { maxWaitMs: NEVER });
    const controller = new AbortController();
    const kept = b.add(1);
    const aborted = b.add(2, { signal: controller.signal });
    controller.abort(new Error('caller left'));
    await assert.rejects(aborted, /caller left/);
    assert.equal(b.stats().queued, 1);
    await b.flush();
    assert.equal(await kept, 2);
    assert.deepEqual(up.batches, [[1]]);
    await assert.rejects(b.add(3, { signal: AbortSignal.abort(new Error('too late')) }), /too late/);
    await assert.rejects(b.add(4, { timeoutMs: -5 }), /timeoutMs must be an integer >= 1 .* got -5/);
    assert.equal(b.stats().queued, 0);
    assert.equal(b.stats().aborted, 2);
    await b.close();
  });

  it('an item times out after timeoutMs, queued or in flight, without disturbing the others', async () => {
    const up = upstream(double, false);
    const b = new RequestBatcher(up.processor, { maxBatchSize: 1, maxConcurrentBatches: 1, maxWaitMs: 0 });
    const inFlight = b.add(1, { timeoutMs: 5 });
    const queued = b.add(2, { timeoutMs: 5 });
    const patient = b.add(3);
    await assert.rejects(inFlight, TimeoutError);
    await assert.rejects(queued, TimeoutError);
    while (b.stats().running > 0 || b.stats().queued > 0) {
      up.release();
      await settle();
    }
    assert.equal(await patient, 6);
    assert.deepEqual(up.batches, [[1], [3]], 'the timed-out queued item was never sent');
    assert.equal(b.stats().timedOut, 2);
    await b.close();
  });
});

describe('deduplication and the result cache (dataloader #13, #128, #194)', () => {
  it('items with the same key in one batch are sent once and every caller gets the result', async () => {
    const up = upstream((items: { id: string }[]) => items.map((i) => i.id.toUpperCase()));
    const b = new RequestBatcher(up.processor, { key: (i) => i.id, maxWaitMs: NEVER });
    const controller = new AbortController();
    const calls = [
      b.add({ id: 'a' }),
      b.add({ id: 'a' }, { signal: controller.signal }),
      b.add({ id: 'b' }),
      b.add({ id: 'a' }),
    ];
    controller.abort(new Error('one caller left'));
    await b.flush();
    const settled = await Promise.allSettled(calls);
    assert.deepEqual(
      settled.map((s) => (s.status === 'fulfilled' ? s.value : 'rejected')),
      ['A', 'rejected', 'B', 'A'],
    );
    assert.deepEqual(up.batches, [[{ id: 'a' }, { id: 'b' }]]);
    assert.equal(b.stats().deduped, 2);
    await b.close();
  });

  it('an item all of whose callers gave up is not sent', async () => {
    const up = upstream(double);
    const b = new RequestBatcher(up.processor, { maxWaitMs: NEVER });
    const controller = new AbortController();
    const first = b.load(7, { signal: controller.signal });
    const second = b.load(7, { signal: controller.signal });
    const other = b.load(8);
    controller.abort(new Error('gone'));
    await assert.rejects(first, /gone/);
    await assert.rejects(second, /gone/);
    await b.flush();
    assert.equal(await other, 16);
    assert.deepEqual(up.batches, [[8]]);
    await b.close();
  });

  it('load() answers a cached key without a batch, keeps the cache bounded and never caches failures', async () => {
    const up = upstream((items: number[]) => items.map((n) => (n < 0 ? new Error('negative') : n * 2)));
    const b = new RequestBatcher(up.processor, { maxWaitMs: 0, cache: { maxEntries: 2 } });
    assert.deepEqual(await Promise.all([b.load(1), b.load(1), b.load(2)]), [2, 2, 4]);
    assert.deepEqual(up.batches, [[1, 2]]);
    assert.equal(await b.load(1), 2);
    assert.equal(up.batches.length, 1, 'served from the cache');
    assert.equal(b.stats().cacheHits, 1);
    await b.load(3);
    assert.equal(b.stats().cacheSize, 2, 'the cache holds at most maxEntries');
    await assert.rejects(b.load(-1), /negative/);
    await assert.rejects(b.load(-1), /negative/);
    assert.equal(up.batches.filter((batch) => batch.includes(-1)).length, 2, 'a failure is not cached');
    b.clearCache(1);
    await b.load(1);
    assert.deepEqual(up.batches.at(-1), [1]);
    await b.close();
  });

  it('cached results expire after ttlMs', async () => {
    const clock = new ManualClock();
    const up = upstream(double);
    const b = new RequestBatcher(up.processor, { maxWaitMs: 0, cache: { ttlMs: 5 }, clock });
    await b.load(1);
    await clock.advance(4);
    await b.load(1);
    assert.equal(up.batches.length, 1, 'still fresh 4 ms later');
    await clock.advance(2);
    await b.load(1);
    assert.equal(up.batches.length, 2, 'expired once older than ttlMs');
    await b.close();
  });
});

describe('timers (seed: timers never cleared)', () => {
  it('a process that batches and never calls close() exits by itself once its callers are answered', () => {
    const source = fileURLToPath(new URL('../../src/concurrency/batcher.ts', import.meta.url));
    const script = `
      import { RequestBatcher } from ${JSON.stringify(source)};
      const b = new RequestBatcher(async (xs) => xs.map((x) => x + 1), { maxBatchSize: 2, maxWaitMs: 600000, timeoutMs: 600000 });
      const r = await Promise.all([b.add(1), b.add(2)]);
      const late = new RequestBatcher(async (xs) => xs, { maxWaitMs: 20 });
      console.log(r.join(','), await late.add('x'));
    `;
    const child = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    assert.equal(child.signal, null, `the script had to be killed: ${child.stderr}`);
    assert.equal(child.status, 0, child.stderr);
    assert.equal(child.stdout.trim(), '2,3 x', 'a pending flush kept the process alive until it answered');
  });
});

describe('tracing', () => {
  it('each batch sent is a span with its size, marked as an error when the batch fails', async () => {
    const exporter = new InMemorySpanExporter();
    const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
    trace.setGlobalTracerProvider(provider);
    try {
      const b = new RequestBatcher<number, number>(
        async (items) => {
          if (items.includes(0)) throw new Error('zero');
          return double(items);
        },
        { maxWaitMs: 0 },
      );
      await Promise.all([b.add(1), b.add(2), b.add(3)]);
      await assert.rejects(b.add(0), BatchItemError);
      await b.close();
      const spans = exporter.getFinishedSpans().filter((s) => s.name === 'clawperf.batcher.batch');
      assert.deepEqual(
        spans.map((s) => [s.attributes['clawperf.batch.size'], s.status.code]),
        [
          [3, SpanStatusCode.UNSET],
          [1, SpanStatusCode.ERROR],
        ],
      );
    } finally {
      trace.disable();
      await provider.shutdown();
    }
  });
});

describe('stats', () => {
  it('holds numbers only and lists its counters', async () => {
    const b = new RequestBatcher(upstream(double).processor, { maxWaitMs: 0 });
    await Promise.all([b.add(1), b.add(2)]);
    const stats = b.stats();
    for (const [k, v] of Object.entries(stats)) assert.equal(typeof v, 'number', k);
    for (const counter of b.statsCounters) assert.ok(counter in stats, counter);
    assert.deepEqual(
      { added: stats.added, batches: stats.batches, batchedItems: stats.batchedItems },
      { added: 2, batches: 1, batchedItems: 2 },
    );
    await b.close();
  });
});
