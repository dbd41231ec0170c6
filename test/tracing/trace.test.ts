import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { SpanStatusCode, trace } from '@opentelemetry/api';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import ts from 'typescript';
import { Trace, Tracer } from '../../src/tracing/index.ts';
import type { defineLegacyService } from './fixtures/legacy-service.ts';

const here = dirname(fileURLToPath(import.meta.url));

const byName = (spans: ReadableSpan[], name: string): ReadableSpan => {
  const found = spans.find((s) => s.name === name);
  assert.ok(found, `no span named ${name} among ${spans.map((s) => s.name).join(', ')}`);
  return found;
};

/** Everything a span carries that an exporter would send, as one string. */
const exported = (spans: ReadableSpan[]) =>
  JSON.stringify(
    spans.map((s) => ({
      name: s.name,
      attributes: s.attributes,
      events: s.events,
      status: s.status,
      links: s.links,
      resource: s.resource.attributes,
    })),
    (_key, value) => (typeof value === 'bigint' ? value.toString() : value),
  );

// Decorated with no tracer: spans go to the global OpenTelemetry API, whatever is registered at call time.
class Gateway {
  calls = 0;

  @Trace()
  async complete(request: { model: string; apiKey: string; user: { email: string } }): Promise<string> {
    this.calls++;
    await sleep(1);
    return this.render(request.model);
  }

  @Trace('gateway.render')
  render(model: string): string {
    return `answer from ${model}`;
  }

  @Trace()
  async reject(): Promise<void> {
    await sleep(1);
    throw new RangeError('quota exceeded');
  }

  @Trace()
  explode(): number {
    throw new Error('sync failure');
  }

  @Trace('gateway.pick', {
    attributes: (request: { model: string; apiKey: string }, retries: number) => ({
      'gen_ai.request.model': request.model,
      retries,
      nested: { apiKey: request.apiKey } as never,
      nothing: undefined,
    }),
  })
  pick(request: { model: string; apiKey: string }, retries: number): string {
    return `${request.model}:${retries}`;
  }

  @Trace('gateway.brokenPicker', {
    attributes: (): Record<string, string> => {
      throw new Error('picker bug');
    },
  })
  brokenPicker(value: number): number {
    return value + 1;
  }

  @Trace()
  takesAnything(..._args: unknown[]): string {
    return 'ok';
  }

  @Trace()
  static create(): Gateway {
    return new Gateway();
  }
}

describe('before any tracer is configured', () => {
  it('runs decorated methods unchanged with no-op spans', async () => {
    // Importing clawperf/tracing registered nothing: the global API is still the no-op one.
    assert.equal(trace.getTracer('probe').startSpan('probe').isRecording(), false);
    const gateway = new Gateway();
    assert.equal(await gateway.complete({ model: 'm', apiKey: 'k', user: { email: 'e' } }), 'answer from m');
    assert.equal(gateway.render('x'), 'answer from x');
    assert.throws(() => gateway.explode(), /sync failure/);
  });
});

describe('@Trace as a standard (TC39) decorator', () => {
  let tracer: Tracer;
  before(() => {
    tracer = new Tracer({ serviceName: 'trace-test', exporter: 'memory' });
  });
  after(() => tracer.close());

  it('wraps async and sync methods, names spans Class.method, and keeps this', async () => {
    tracer.resetFinishedSpans();
    const gateway = new Gateway();
    assert.equal(
      await gateway.complete({ model: 'gpt', apiKey: 'k', user: { email: 'e' } }),
      'answer from gpt',
    );
    assert.equal(gateway.calls, 1);
    assert.ok(Gateway.create() instanceof Gateway);
    const spans = tracer.getFinishedSpans();
    const complete = byName(spans, 'Gateway.complete');
    assert.equal(byName(spans, 'gateway.render').parentSpanContext?.spanId, complete.spanContext().spanId);
    byName(spans, 'Gateway.create');
    assert.equal(Gateway.prototype.complete.name, 'complete');
  });

  it('records a rejection or a throw with ERROR status and passes the error on', async () => {
    tracer.resetFinishedSpans();
    const gateway = new Gateway();
    await assert.rejects(gateway.reject(), RangeError);
    assert.throws(() => gateway.explode(), /sync failure/);
    const spans = tracer.getFinishedSpans();
    const rejected = byName(spans, 'Gateway.reject');
    assert.equal(rejected.status.code, SpanStatusCode.ERROR);
    assert.equal(rejected.attributes['error.type'], 'RangeError');
    assert.equal(byName(spans, 'Gateway.explode').status.code, SpanStatusCode.ERROR);
  });

  it('makes a decorated method called inside withSpan a child of that span', async () => {
    tracer.resetFinishedSpans();
    const gateway = new Gateway();
    await tracer.withSpan('http.request', async () => {
      await sleep(1);
      await gateway.complete({ model: 'm', apiKey: 'k', user: { email: 'e' } });
    });
    const spans = tracer.getFinishedSpans();
    const request = byName(spans, 'http.request');
    const complete = byName(spans, 'Gateway.complete');
    assert.equal(complete.parentSpanContext?.spanId, request.spanContext().spanId);
    assert.equal(complete.spanContext().traceId, request.spanContext().traceId);
    assert.equal(byName(spans, 'gateway.render').parentSpanContext?.spanId, complete.spanContext().spanId);
  });
});

describe('arguments are never recorded unless attributes picks them', () => {
  let tracer: Tracer;
  before(() => {
    tracer = new Tracer({ serviceName: 'trace-test', exporter: 'memory' });
  });
  after(() => tracer.close());

  it('keeps a secret argument out of every span attribute, event and status', async () => {
    tracer.resetFinishedSpans();
    const gateway = new Gateway();
    await gateway.complete({
      model: 'gpt',
      apiKey: 'sk-live-SECRET-1234',
      user: { email: 'alice@example.com' },
    });
    gateway.takesAnything('sk-live-SECRET-5678', { password: 'hunter2' });
    gateway.pick({ model: 'gpt', apiKey: 'sk-live-SECRET-9999' }, 2);
    const text = exported(tracer.getFinishedSpans());
    assert.equal(tracer.getFinishedSpans().length, 4);
    for (const secret of ['SECRET', 'alice@example.com', 'hunter2']) {
      assert.ok(!text.includes(secret), `${secret} leaked into ${text}`);
    }
  });

  it('records exactly the picked primitive values', () => {
    tracer.resetFinishedSpans();
    new Gateway().pick({ model: 'gpt-4o', apiKey: 'sk-x' }, 3);
    const span = byName(tracer.getFinishedSpans(), 'gateway.pick');
    assert.deepEqual(span.attributes, { 'gen_ai.request.model': 'gpt-4o', retries: 3 });
  });

  it('contains an attributes picker that throws: the method runs, the span has no picked attributes', () => {
    tracer.resetFinishedSpans();
    assert.equal(new Gateway().brokenPicker(1), 2);
    assert.deepEqual(byName(tracer.getFinishedSpans(), 'gateway.brokenPicker').attributes, {});
  });

  it('accepts circular and BigInt arguments without throwing', () => {
    tracer.resetFinishedSpans();
    const circular: Record<string, unknown> = { name: 'loop' };
    circular.self = circular;
    assert.equal(
      new Gateway().takesAnything(circular, 10n ** 30n, Symbol('s'), () => 1),
      'ok',
    );
    assert.equal(tracer.getFinishedSpans().length, 1);
  });
});

describe('@Trace options', () => {
  it('sends spans to the tracer given as { tracer }', async () => {
    const global = new Tracer({ serviceName: 'global', exporter: 'memory' });
    const own = new Tracer({ serviceName: 'own', exporter: 'memory', registerGlobal: false });
    class Worker {
      @Trace('worker.run', { tracer: own })
      async run(): Promise<string> {
        await sleep(1);
        return own.activeSpan() === undefined ? 'no span' : 'in span';
      }
    }
    assert.equal(await new Worker().run(), 'in span');
    assert.deepEqual(
      own.getFinishedSpans().map((s) => s.name),
      ['worker.run'],
    );
    assert.equal(global.getFinishedSpans().length, 0);
    await Promise.all([global.close(), own.close()]);
  });

  it('rejects bad options with a TypeError naming the option', () => {
    assert.throws(() => Trace(''), /name must be a non-empty string, got ""/);
    assert.throws(
      () => Trace('x', { attributes: 'model' as never }),
      /attributes must be a function, got "model"/,
    );
    assert.throws(() => Trace('x', { tracer: 42 as never }), /tracer must be a Tracer/);
  });

  it('refuses to decorate something that is not a method', () => {
    assert.throws(
      () => Trace()(undefined as never, { kind: 'field', name: 'f' } as never),
      /@Trace decorates methods, not a field/,
    );
    assert.throws(() => Trace()({}, 'prop', undefined as never), /@Trace decorates methods/);
  });
});

describe('@Trace as a legacy experimentalDecorators decorator', () => {
  let tracer: Tracer;
  let dir: string;
  let define: typeof defineLegacyService;
  before(async () => {
    tracer = new Tracer({ serviceName: 'legacy-test', exporter: 'memory', registerGlobal: false });
    const source = await readFile(join(here, 'fixtures', 'legacy-service.ts'), 'utf8');
    const { outputText } = ts.transpileModule(source, {
      compilerOptions: {
        experimentalDecorators: true,
        target: ts.ScriptTarget.ES2022,
        module: ts.ModuleKind.ESNext,
      },
    });
    assert.match(outputText, /__decorate\(/, 'compiled with legacy decorators');
    dir = await mkdtemp(join(tmpdir(), 'clawperf-legacy-'));
    const file = join(dir, 'legacy-service.mjs');
    await writeFile(file, outputText);
    ({ defineLegacyService: define } = (await import(pathToFileURL(file).href)) as {
      defineLegacyService: typeof defineLegacyService;
    });
  });
  after(async () => {
    await tracer.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('wraps sync and async methods compiled with experimentalDecorators', async () => {
    tracer.resetFinishedSpans();
    const Service = define(Trace, tracer);
    const service = new Service();
    await tracer.withSpan('outer', async () => {
      assert.equal(await service.lookup('sk-legacy-SECRET'), 'found with 16 chars');
      assert.equal(service.multiply(4), 12);
      assert.throws(() => service.fail(), TypeError);
    });
    const spans = tracer.getFinishedSpans();
    const outer = byName(spans, 'outer');
    for (const name of ['LegacyService.lookup', 'legacy.multiply', 'LegacyService.fail']) {
      assert.equal(byName(spans, name).parentSpanContext?.spanId, outer.spanContext().spanId);
    }
    assert.deepEqual(byName(spans, 'legacy.multiply').attributes, { 'input.n': 4 });
    assert.equal(byName(spans, 'LegacyService.fail').status.code, SpanStatusCode.ERROR);
    assert.ok(!exported(spans).includes('SECRET'));
  });

  it('works when called directly with (target, key, descriptor)', () => {
    tracer.resetFinishedSpans();
    class Plain {
      value(): number {
        return 5;
      }
    }
    const descriptor = Object.getOwnPropertyDescriptor(Plain.prototype, 'value')!;
    const result = Trace(undefined, { tracer })(Plain.prototype, 'value', descriptor);
    Object.defineProperty(Plain.prototype, 'value', result);
    assert.equal(new Plain().value(), 5);
    assert.equal(tracer.getFinishedSpans()[0]?.name, 'Plain.value');
  });
});
