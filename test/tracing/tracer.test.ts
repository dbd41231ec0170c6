import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setImmediate as nextTick, setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { context, type SpanContext, SpanStatusCode, TraceFlags, trace } from '@opentelemetry/api';
import { ExportResultCode } from '@opentelemetry/core';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';
import { ClosedError } from '../../src/errors.ts';
import { Tracer } from '../../src/tracing/index.ts';
import { freePort } from '../helpers/servers.ts';

const execFileAsync = promisify(execFile);

const memoryTracer = (extra: Partial<ConstructorParameters<typeof Tracer>[0]> = {}) =>
  new Tracer({ serviceName: 'tracer-test', exporter: 'memory', ...extra });

const byName = (spans: ReadableSpan[], name: string): ReadableSpan => {
  const found = spans.find((s) => s.name === name);
  assert.ok(found, `no span named ${name} among ${spans.map((s) => s.name).join(', ')}`);
  return found;
};

const parentOf = (span: ReadableSpan) => span.parentSpanContext?.spanId;
const idOf = (span: ReadableSpan) => span.spanContext().spanId;

describe('nested async work links to its parent without passing it by hand', () => {
  const tracer = memoryTracer();
  after(() => tracer.close());

  it('links children across await, setTimeout, setImmediate and Promise.all', async () => {
    tracer.resetFinishedSpans();
    await tracer.withSpan('root', async () => {
      await tracer.withSpan('after-await', async () => {
        await sleep(1);
      });
      await new Promise<void>((resolve) => {
        setTimeout(() => {
          void tracer.withSpan('in-timer', async () => undefined).then(() => resolve());
        }, 1);
      });
      await nextTick();
      await Promise.all(
        ['a', 'b', 'c'].map((n) =>
          tracer.withSpan(`parallel-${n}`, async () => {
            await sleep(1);
            await tracer.withSpan(`grandchild-${n}`, async () => undefined);
          }),
        ),
      );
    });
    const spans = tracer.getFinishedSpans();
    const root = byName(spans, 'root');
    assert.equal(parentOf(root), undefined);
    for (const name of ['after-await', 'in-timer', 'parallel-a', 'parallel-b', 'parallel-c']) {
      const span = byName(spans, name);
      assert.equal(parentOf(span), idOf(root), `${name} is a child of root`);
      assert.equal(span.spanContext().traceId, root.spanContext().traceId);
    }
    for (const n of ['a', 'b', 'c']) {
      assert.equal(parentOf(byName(spans, `grandchild-${n}`)), idOf(byName(spans, `parallel-${n}`)));
    }
  });

  it('makes startSpan default to the active span as parent', async () => {
    tracer.resetFinishedSpans();
    await tracer.withSpan('outer', async () => {
      await sleep(1);
      tracer.endSpan(tracer.startSpan('manual'));
    });
    const spans = tracer.getFinishedSpans();
    assert.equal(parentOf(byName(spans, 'manual')), idOf(byName(spans, 'outer')));
  });

  it('starts separate traces for separate top-level calls', async () => {
    tracer.resetFinishedSpans();
    await Promise.all([
      tracer.withSpan('one', async () => sleep(1)),
      tracer.withSpan('two', async () => sleep(1)),
    ]);
    const spans = tracer.getFinishedSpans();
    assert.notEqual(byName(spans, 'one').spanContext().traceId, byName(spans, 'two').spanContext().traceId);
    assert.equal(parentOf(byName(spans, 'two')), undefined);
  });

  it('keeps tracers that do not register globally on their own context', async () => {
    const local = memoryTracer({ registerGlobal: false });
    await local.withSpan('local-root', async () => {
      await sleep(1);
      await local.withSpan('local-child', async () => undefined);
    });
    const spans = local.getFinishedSpans();
    assert.equal(parentOf(byName(spans, 'local-child')), idOf(byName(spans, 'local-root')));
    assert.equal(local.isGlobal, false);
    await local.close();
  });
});

describe('asyncContext: false, for services that record no spans or pass parents by hand', () => {
  it('keeps the active span for the synchronous part of withSpan only', async () => {
    const local = memoryTracer({ registerGlobal: false, asyncContext: false });
    await local.withSpan('root', async (root) => {
      await local.withSpan('sync-child', () => undefined);
      await sleep(1);
      await local.withSpan('after-await', () => undefined);
      await local.withSpan('given-parent', () => undefined, { parent: root });
    });
    const spans = local.getFinishedSpans();
    const root = idOf(byName(spans, 'root'));
    assert.equal(parentOf(byName(spans, 'sync-child')), root);
    assert.equal(parentOf(byName(spans, 'after-await')), undefined, 'after an await: a root');
    assert.equal(parentOf(byName(spans, 'given-parent')), root);
    assert.equal(local.activeSpan(), undefined);
    await local.close();
  });

  it('hooks no promise, while the default does (Node 20 AsyncLocalStorage)', async () => {
    const run = async (mode: string) => {
      const fixture = new URL('./fixtures/promise-hooks.ts', import.meta.url).pathname;
      const { stdout } = await execFileAsync(process.execPath, ['--import', 'tsx', fixture, mode]);
      return JSON.parse(stdout) as { before: boolean; after: boolean };
    };
    const [sync, async, gateway] = await Promise.all([
      run('tracer-sync'),
      run('tracer-async'),
      run('gateway'),
    ]);
    assert.deepEqual(sync, { before: false, after: false });
    assert.deepEqual(async, { before: false, after: true }, 'the probe sees hooks when they are on');
    assert.deepEqual(gateway, { before: false, after: false }, 'a gateway without OTLP hooks no promise');
  });

  it('rejects a non-boolean', () => {
    assert.throws(() => memoryTracer({ asyncContext: 'no' as unknown as boolean }), /asyncContext.*"no"/);
  });
});

describe('a child that ends after its root', () => {
  const tracer = memoryTracer();
  after(() => tracer.close());

  it('is exported with its parent link after the root was exported', async () => {
    tracer.resetFinishedSpans();
    let release!: () => void;
    const late = new Promise<void>((resolve) => {
      release = resolve;
    });
    let childDone!: Promise<void>;
    await tracer.withSpan('root', async () => {
      childDone = tracer.withSpan('late-child', () => late);
    });
    assert.deepEqual(
      tracer.getFinishedSpans().map((s) => s.name),
      ['root'],
    );
    release();
    await childDone;
    const spans = tracer.getFinishedSpans();
    assert.equal(parentOf(byName(spans, 'late-child')), idOf(byName(spans, 'root')));
    assert.equal(tracer.stats().spansStarted, tracer.stats().spansEnded);
  });

  it('is not held by the tracer once exported', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    let ref!: WeakRef<object>;
    await (async () => {
      const root = tracer.startSpan('root');
      const child = tracer.startSpan('child', { parent: root });
      tracer.endSpan(root);
      await sleep(1);
      tracer.endSpan(child);
      ref = new WeakRef(child);
    })();
    tracer.resetFinishedSpans();
    await nextTick();
    gc();
    await nextTick();
    gc();
    assert.equal(ref.deref(), undefined);
  });
});

describe('a missing, invalid or ended parent never crashes', () => {
  const tracer = memoryTracer();
  after(() => tracer.close());

  it('starts a span for undefined, null and objects that are not spans', () => {
    const parents = [undefined, null, {}, { traceId: 'nope', spanId: 'nope' }, 42, 'parent-id'] as unknown[];
    for (const parent of parents) {
      const span = tracer.startSpan('orphan', { parent: parent as SpanContext });
      assert.equal(span.isRecording(), true);
      tracer.endSpan(span);
    }
  });

  it('links a child to a parent that already ended', () => {
    tracer.resetFinishedSpans();
    const parent = tracer.startSpan('ended-parent');
    tracer.endSpan(parent);
    tracer.endSpan(tracer.startSpan('child-of-ended', { parent }));
    const spans = tracer.getFinishedSpans();
    assert.equal(parentOf(byName(spans, 'child-of-ended')), idOf(byName(spans, 'ended-parent')));
  });

  it('treats endSpan, setTag and log on nothing or an ended span as harmless', () => {
    const span = tracer.startSpan('twice');
    tracer.endSpan(span);
    tracer.endSpan(span);
    tracer.endSpan(undefined);
    tracer.setTag(undefined, 'k', 'v');
    tracer.setTag(span, 'late', 'v');
    tracer.log(undefined, 'nothing');
    tracer.log(span, 'late');
  });
});

describe('the seed surface maps onto OpenTelemetry spans', () => {
  const tracer = memoryTracer();
  after(() => tracer.close());

  it('records tags as attributes and logs as timestamped events', () => {
    tracer.resetFinishedSpans();
    const span = tracer.startSpan('tagged');
    tracer.setTag(span, 'cache.hit', true);
    tracer.setTag(span, 'tokens', 42);
    tracer.log(span, 'upstream called', { attempt: 1 });
    tracer.endSpan(span);
    const [done] = tracer.getFinishedSpans();
    assert.equal(done?.attributes['cache.hit'], true);
    assert.equal(done?.attributes.tokens, 42);
    assert.equal(done?.events[0]?.name, 'upstream called');
    assert.equal(done?.events[0]?.attributes?.attempt, 1);
  });

  it('takes times from the OpenTelemetry clock at nanosecond resolution', () => {
    tracer.resetFinishedSpans();
    for (let i = 0; i < 5; i++) tracer.endSpan(tracer.startSpan('timed'));
    const spans = tracer.getFinishedSpans();
    for (const span of spans) {
      assert.equal(span.startTime.length, 2);
      assert.ok(span.duration[0] >= 0 && span.duration[1] >= 0);
    }
    // A millisecond clock would make every nanosecond part a multiple of 1e6.
    assert.ok(spans.some((s) => s.startTime[1] % 1e6 !== 0 || s.duration[1] % 1e6 !== 0));
  });

  it('records a thrown error on the span and passes it on unchanged', async () => {
    tracer.resetFinishedSpans();
    const boom = new RangeError('upstream said no');
    await assert.rejects(
      tracer.withSpan('failing', async () => {
        throw boom;
      }),
      (error) => error === boom,
    );
    await assert.rejects(
      tracer.withSpan('failing-sync', () => {
        throw boom;
      }),
      (error) => error === boom,
    );
    for (const name of ['failing', 'failing-sync']) {
      const span = byName(tracer.getFinishedSpans(), name);
      assert.equal(span.status.code, SpanStatusCode.ERROR);
      assert.equal(span.attributes['error.type'], 'RangeError');
      assert.equal(span.events[0]?.name, 'exception');
    }
  });

  it('returns the result of withSpan and run, keeping run synchronous', async () => {
    assert.equal(await tracer.withSpan('value', () => 7), 7);
    assert.equal(
      tracer.run('sync', () => 'now'),
      'now',
    );
  });
});

describe('head sampling by ratio, parent-based', () => {
  const remoteParent = (sampled: boolean) =>
    trace.setSpanContext(context.active(), {
      traceId: '0af7651916cd43dd8448eb211c80319c',
      spanId: 'b7ad6b7169203331',
      traceFlags: sampled ? TraceFlags.SAMPLED : TraceFlags.NONE,
      isRemote: true,
    });

  it('records nothing at ratio 0 and everything at ratio 1', async () => {
    const none = memoryTracer({ sampleRatio: 0, registerGlobal: false });
    const all = memoryTracer({ sampleRatio: 1, registerGlobal: false });
    for (let i = 0; i < 20; i++) {
      await none.withSpan('dropped', async () => none.withSpan('dropped-child', async () => undefined));
      await all.withSpan('kept', async () => undefined);
    }
    assert.equal(none.getFinishedSpans().length, 0);
    assert.equal(all.getFinishedSpans().length, 20);
    await Promise.all([none.close(), all.close()]);
  });

  it('follows a sampled parent even at ratio 0, and an unsampled one even at ratio 1', async () => {
    const none = memoryTracer({ sampleRatio: 0, registerGlobal: false });
    const all = memoryTracer({ sampleRatio: 1, registerGlobal: false });
    none.endSpan(none.startSpan('child-of-sampled', { parent: remoteParent(true) }));
    all.endSpan(all.startSpan('child-of-unsampled', { parent: remoteParent(false) }));
    assert.deepEqual(
      none.getFinishedSpans().map((s) => s.name),
      ['child-of-sampled'],
    );
    assert.equal(none.getFinishedSpans()[0]?.spanContext().traceId, '0af7651916cd43dd8448eb211c80319c');
    assert.equal(all.getFinishedSpans().length, 0);
    await Promise.all([none.close(), all.close()]);
  });

  it('still runs the work and propagates an unsampled context', async () => {
    const none = memoryTracer({ sampleRatio: 0, registerGlobal: false });
    const result = await none.withSpan('unsampled', async (span) => {
      assert.equal(span.isRecording(), false);
      assert.equal(span.spanContext().traceFlags & TraceFlags.SAMPLED, 0);
      return 'done';
    });
    assert.equal(result, 'done');
    await none.close();
  });
});

describe('global registration', () => {
  it('sends spans from the OpenTelemetry API to the newest open tracer, then back to the previous', async () => {
    const first = memoryTracer();
    const second = memoryTracer();
    assert.equal(second.isGlobal, true);
    trace.getTracer('other-area').startSpan('to-second').end();
    assert.deepEqual(
      second.getFinishedSpans().map((s) => s.name),
      ['to-second'],
    );
    await second.close();
    assert.equal(first.isGlobal, true);
    trace.getTracer('other-area').startSpan('to-first').end();
    assert.deepEqual(
      first.getFinishedSpans().map((s) => s.name),
      ['to-first'],
    );
    await first.close();
  });

  it('leaves the global API alone with registerGlobal: false', async () => {
    const quiet = memoryTracer({ registerGlobal: false });
    trace.getTracer('other-area').startSpan('not-here').end();
    assert.equal(quiet.getFinishedSpans().length, 0);
    await quiet.close();
  });
});

describe('options are validated at construction', () => {
  const bad: Array<[string, unknown, RegExp]> = [
    ['serviceName', {}, /serviceName must be a non-empty string, got undefined/],
    ['serviceName', { serviceName: '' }, /serviceName must be a non-empty string, got ""/],
    ['exporter', { serviceName: 's', exporter: 'zipkin' }, /exporter must be one of .* got "zipkin"/],
    [
      'sampleRatio',
      { serviceName: 's', sampleRatio: 1.5 },
      /sampleRatio must be a number between 0 and 1, got 1.5/,
    ],
    ['maxQueueSize', { serviceName: 's', maxQueueSize: 0 }, /maxQueueSize must be an integer >= 1, got 0/],
    [
      'maxExportBatchSize',
      { serviceName: 's', maxQueueSize: 10, maxExportBatchSize: 20 },
      /options\.maxExportBatchSize must be <= options\.maxQueueSize \(10\), got 20/,
    ],
    [
      'otlpUrl',
      { serviceName: 's', otlpUrl: 'ftp://x' },
      /otlpUrl must be an http\(s\) URL, got "ftp:\/\/x"/,
    ],
    [
      'registerGlobal',
      { serviceName: 's', registerGlobal: 'yes' },
      /registerGlobal must be a boolean, got "yes"/,
    ],
  ];
  for (const [option, options, message] of bad) {
    it(`rejects a bad ${option} with a TypeError naming it`, () => {
      assert.throws(
        () => new Tracer(options as never),
        (e) => e instanceof TypeError && message.test(e.message),
      );
    });
  }
});

describe('lifecycle and failures', () => {
  it('closes idempotently; flush after close rejects with ClosedError; work still runs', async () => {
    const tracer = memoryTracer({ registerGlobal: false });
    await Promise.all([tracer.close(), tracer.close()]);
    await tracer.close();
    await assert.rejects(tracer.flush(), ClosedError);
    assert.equal(await tracer.withSpan('after-close', async (span) => span.isRecording()), false);
    assert.equal(tracer.getFinishedSpans().length, 0);
  });

  it('contains an exporter that throws or fails, and counts the lost spans', async () => {
    const throwing: SpanExporter = {
      export: () => {
        throw new Error('exporter bug');
      },
      shutdown: () => Promise.resolve(),
    };
    const failing: SpanExporter = {
      export: (_spans, done) =>
        done({ code: ExportResultCode.FAILED, error: new Error('collector said 503') }),
      shutdown: () => Promise.resolve(),
    };
    for (const exporter of [throwing, failing]) {
      for (const processor of ['simple', 'batch'] as const) {
        const tracer = new Tracer({ serviceName: 's', exporter, processor, registerGlobal: false });
        assert.equal(await tracer.withSpan('survives', async () => 'ok'), 'ok');
        await tracer.flush();
        assert.equal(tracer.stats().spansExportFailed, 1);
        assert.equal(tracer.stats().spansExported, 0);
        await tracer.close();
      }
    }
  });

  it('drops spans beyond the bounded batch queue instead of growing', async () => {
    let exported = 0;
    const counting: SpanExporter = {
      export: (spans, done) => {
        exported += spans.length;
        done({ code: ExportResultCode.SUCCESS });
      },
      shutdown: () => Promise.resolve(),
    };
    const tracer = new Tracer({
      serviceName: 's',
      exporter: counting,
      maxQueueSize: 10,
      maxExportBatchSize: 10,
      scheduledDelayMs: 60_000,
      registerGlobal: false,
    });
    for (let i = 0; i < 100; i++) tracer.endSpan(tracer.startSpan('burst'));
    await tracer.flush();
    assert.ok(exported <= 20, `exported ${exported} of 100 with a queue of 10`);
    assert.equal(tracer.stats().spansEnded, 100);
    await tracer.close();
  });
});

describe('OTLP/HTTP export', () => {
  let collector: Server;
  let url: string;
  const requests: Array<{ path: string; contentType: string; body: unknown }> = [];

  before(async () => {
    // A fake collector: Debian packages no OpenTelemetry Collector, so the test receives OTLP/HTTP itself.
    collector = createServer(async (req: IncomingMessage, res) => {
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      requests.push({
        path: req.url ?? '',
        contentType: req.headers['content-type'] ?? '',
        body: JSON.parse(Buffer.concat(chunks).toString('utf8')),
      });
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
    collector.listen(0, '127.0.0.1');
    await once(collector, 'listening');
    url = `http://127.0.0.1:${(collector.address() as AddressInfo).port}/v1/traces`;
  });
  after(() => new Promise<void>((resolve) => collector.close(() => resolve())));

  interface OtlpSpan {
    traceId: string;
    spanId: string;
    parentSpanId?: string;
    name: string;
    startTimeUnixNano: string | number;
  }
  interface OtlpBody {
    resourceSpans: Array<{
      resource: { attributes: Array<{ key: string; value: { stringValue?: string } }> };
      scopeSpans: Array<{ scope: { name: string }; spans: OtlpSpan[] }>;
    }>;
  }

  it('sends the spans, their parent links and service.name to the collector as OTLP JSON', async () => {
    const tracer = new Tracer({
      serviceName: 'otlp-test',
      exporter: 'otlp',
      otlpUrl: url,
      registerGlobal: false,
    });
    await tracer.withSpan('request', async () => {
      await sleep(1);
      await tracer.withSpan('upstream', async () => undefined);
    });
    await tracer.flush();
    assert.equal(requests.length, 1);
    const [request] = requests;
    assert.equal(request?.path, '/v1/traces');
    assert.match(request?.contentType ?? '', /application\/json/);
    const body = request?.body as OtlpBody;
    const resource = body.resourceSpans[0]!;
    const serviceName = resource.resource.attributes.find((a) => a.key === 'service.name')?.value.stringValue;
    assert.equal(serviceName, 'otlp-test');
    const spans = resource.scopeSpans.flatMap((s) => s.spans);
    assert.equal(resource.scopeSpans[0]?.scope.name, 'clawperf');
    const root = spans.find((s) => s.name === 'request')!;
    const child = spans.find((s) => s.name === 'upstream')!;
    assert.match(root.traceId, /^[0-9a-f]{32}$/);
    assert.equal(child.traceId, root.traceId);
    assert.equal(child.parentSpanId, root.spanId);
    assert.ok(!root.parentSpanId);
    assert.ok(BigInt(root.startTimeUnixNano) > 0n);
    assert.equal(tracer.stats().spansExported, 2);
    await tracer.close();
  });

  it('counts spans it could not deliver when no collector listens, without throwing', async () => {
    const port = await freePort();
    const tracer = new Tracer({
      serviceName: 'otlp-down',
      otlpUrl: `http://127.0.0.1:${port}/v1/traces`,
      exportTimeoutMs: 2_000,
      registerGlobal: false,
    });
    await tracer.withSpan('lost', async () => undefined);
    await tracer.flush();
    assert.equal(tracer.stats().spansExportFailed, 1);
    await tracer.close();
  });
});
