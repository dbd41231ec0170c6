import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import Fastify from 'fastify';
import { childTraceparent, fastifyTraceparent } from '../../src/tracing/traceparent.ts';

const FORM = /^00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])$/;
const CALLER = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

describe('childTraceparent', () => {
  it("continues a caller's trace with a span id of its own, sampled as the caller sampled", () => {
    const [, trace, span, flags] = FORM.exec(childTraceparent(CALLER))!;
    assert.equal(trace, '4bf92f3577b34da6a3ce929d0e0e4736');
    assert.notEqual(span, '00f067aa0ba902b7');
    assert.equal(flags, '01');
    assert.equal(FORM.exec(childTraceparent(CALLER.replace(/-01$/, '-00')))![3], '00');
  });

  it('starts a new unsampled trace without a valid parent', () => {
    const invalid = [
      undefined,
      '',
      'garbage',
      ['00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'],
      '00-00000000000000000000000000000000-00f067aa0ba902b7-01',
      '00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01',
      'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
      '00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01',
    ];
    const traces = new Set<string>();
    for (const incoming of invalid) {
      const match = FORM.exec(childTraceparent(incoming));
      assert.ok(match, String(incoming));
      assert.notEqual(match[1], '4bf92f3577b34da6a3ce929d0e0e4736');
      assert.equal(match[3], '00');
      traces.add(match[1]!);
    }
    assert.equal(traces.size, invalid.length, 'each new trace has its own id');
  });
});

describe('fastifyTraceparent', () => {
  it("answers every route with a traceparent, and the caller's tracestate when it continues its trace", async () => {
    const app = Fastify();
    await app.register(fastifyTraceparent);
    app.get('/a', async () => 'ok');
    try {
      const fresh = await app.inject({ method: 'GET', url: '/a', headers: { tracestate: 'k=v' } });
      assert.match(String(fresh.headers.traceparent), FORM);
      assert.equal(fresh.headers.tracestate, undefined, 'no trace to continue, no state');
      const continued = await app.inject({
        method: 'GET',
        url: '/a',
        headers: { traceparent: CALLER, tracestate: 'k=v' },
      });
      assert.equal(String(continued.headers.traceparent).slice(3, 35), '4bf92f3577b34da6a3ce929d0e0e4736');
      assert.equal(continued.headers.tracestate, 'k=v');
      const missing = await app.inject({ method: 'GET', url: '/nowhere' });
      assert.equal(missing.statusCode, 404);
      assert.match(String(missing.headers.traceparent), FORM);
    } finally {
      await app.close();
    }
  });
});
