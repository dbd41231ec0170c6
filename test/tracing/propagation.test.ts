import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, request as httpRequest, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, TraceFlags, trace } from '@opentelemetry/api';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import Fastify, { type FastifyInstance } from 'fastify';
import {
  extractTraceContext,
  fastifyTracing,
  injectTraceContext,
  requestSpan,
  Tracer,
  traceHeaders,
} from '../../src/tracing/index.ts';

const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT_ID = '00f067aa0ba902b7';
const TRACEPARENT = `00-${TRACE_ID}-${PARENT_ID}-01`;

const byName = (spans: ReadableSpan[], name: string): ReadableSpan => {
  const found = spans.find((s) => s.name === name);
  assert.ok(found, `no span named ${name} among ${spans.map((s) => s.name).join(', ')}`);
  return found;
};

async function listen(server: Server): Promise<string> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function get(url: string, headers: Record<string, string>): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        body += chunk;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('extract and inject round trip', () => {
  it('reads traceparent and tracestate from every header shape', () => {
    const shapes = [
      { traceparent: TRACEPARENT, tracestate: 'vendor=a' },
      { Traceparent: TRACEPARENT, TraceState: 'vendor=a' },
      { headers: { traceparent: TRACEPARENT, tracestate: ['vendor=a'] } },
      new Headers({ traceparent: TRACEPARENT, tracestate: 'vendor=a' }),
    ];
    for (const shape of shapes) {
      const span = trace.getSpanContext(extractTraceContext(shape, ROOT_CONTEXT));
      assert.equal(span?.traceId, TRACE_ID);
      assert.equal(span?.spanId, PARENT_ID);
      assert.equal(span?.isRemote, true);
      assert.equal(span?.traceFlags, TraceFlags.SAMPLED);
      assert.equal(span?.traceState?.get('vendor'), 'a');
    }
  });

  it('injects what it extracted into plain objects, Headers and setHeader targets', () => {
    const ctx = extractTraceContext({ traceparent: TRACEPARENT, tracestate: 'vendor=a' }, ROOT_CONTEXT);
    assert.deepEqual(traceHeaders(ctx), { traceparent: TRACEPARENT, tracestate: 'vendor=a' });
    const headers = injectTraceContext(new Headers(), ctx);
    assert.equal(headers.get('traceparent'), TRACEPARENT);
    const written: Record<string, string> = {};
    injectTraceContext({ setHeader: (k: string, v: string) => (written[k] = v) }, ctx);
    assert.equal(written.traceparent, TRACEPARENT);
  });

  it('ignores a missing or malformed traceparent and never throws', () => {
    for (const bad of [
      {},
      { traceparent: 'garbage' },
      { traceparent: `00-${'0'.repeat(32)}-${PARENT_ID}-01` },
    ]) {
      assert.equal(trace.getSpanContext(extractTraceContext(bad, ROOT_CONTEXT)), undefined);
    }
    assert.deepEqual(traceHeaders(ROOT_CONTEXT), {});
    const sent = {
      setHeader: () => {
        throw new Error('ERR_HTTP_HEADERS_SENT');
      },
    };
    const ctx = extractTraceContext({ traceparent: TRACEPARENT }, ROOT_CONTEXT);
    assert.equal(injectTraceContext(sent, ctx), sent);
  });
});

describe('a trace crosses two node:http services', () => {
  let front: Tracer;
  let back: Tracer;
  let frontServer: Server;
  let backServer: Server;
  let frontUrl: string;

  before(async () => {
    front = new Tracer({ serviceName: 'front', exporter: 'memory' });
    back = new Tracer({ serviceName: 'back', exporter: 'memory', registerGlobal: false });
    backServer = createServer((req: IncomingMessage, res) => {
      void back.withSpan(
        'back.handle',
        async () => {
          await sleep(1);
          res.end('from back');
        },
        { kind: SpanKind.SERVER, parent: extractTraceContext(req, ROOT_CONTEXT) },
      );
    });
    const backUrl = await listen(backServer);
    frontServer = createServer((req, res) => {
      void front.withSpan(
        'front.handle',
        async () => {
          // One call with node:http, one with fetch: both carry the trace.
          const viaHttp = await front.withSpan('front.call-http', (span) =>
            get(`${backUrl}/http`, traceHeaders(trace.setSpan(front.activeContext(), span))),
          );
          const viaFetch = await front.withSpan('front.call-fetch', async () => {
            const response = await fetch(`${backUrl}/fetch`, { headers: injectTraceContext(new Headers()) });
            return response.text();
          });
          res.end(`${viaHttp.body}+${viaFetch}`);
        },
        { kind: SpanKind.SERVER, parent: extractTraceContext(req.headers, ROOT_CONTEXT) },
      );
    });
    frontUrl = await listen(frontServer);
  });

  after(async () => {
    await Promise.all([
      new Promise((resolve) => frontServer.close(resolve)),
      new Promise((resolve) => backServer.close(resolve)),
    ]);
    await Promise.all([front.close(), back.close()]);
  });

  it('continues the caller trace in the first service and the first service trace in the second', async () => {
    const response = await get(frontUrl, { traceparent: TRACEPARENT });
    assert.equal(response.body, 'from back+from back');
    const frontSpans = front.getFinishedSpans();
    const backSpans = back.getFinishedSpans();
    const handle = byName(frontSpans, 'front.handle');
    assert.equal(handle.spanContext().traceId, TRACE_ID);
    assert.equal(handle.parentSpanContext?.spanId, PARENT_ID);
    assert.equal(handle.resource.attributes['service.name'], 'front');
    const calls = ['front.call-http', 'front.call-fetch'].map((n) => byName(frontSpans, n));
    assert.equal(backSpans.length, 2);
    for (const backSpan of backSpans) {
      assert.equal(backSpan.resource.attributes['service.name'], 'back');
      assert.equal(backSpan.spanContext().traceId, TRACE_ID);
      assert.equal(backSpan.kind, SpanKind.SERVER);
    }
    const backParents = backSpans.map((s) => s.parentSpanContext?.spanId).sort();
    assert.deepEqual(backParents, calls.map((c) => c.spanContext().spanId).sort());
  });

  it('starts a new trace when the caller sends none', async () => {
    front.resetFinishedSpans();
    await get(frontUrl, {});
    const handle = byName(front.getFinishedSpans(), 'front.handle');
    assert.notEqual(handle.spanContext().traceId, TRACE_ID);
    assert.equal(handle.parentSpanContext, undefined);
  });
});

describe('Fastify plugin', () => {
  let tracer: Tracer;
  let app: FastifyInstance;
  let url: string;

  before(async () => {
    tracer = new Tracer({ serviceName: 'fastify-test', exporter: 'memory' });
    app = Fastify();
    await app.register(fastifyTracing, { tracer });
    app.get('/items/:id', async (request) => {
      await sleep(1);
      const row = await tracer.withSpan('db.query', async () => ({
        id: (request.params as { id: string }).id,
      }));
      return { ...row, span: requestSpan(request)?.spanContext().spanId };
    });
    app.post('/echo', async (request) => tracer.withSpan('echo.work', async () => request.body));
    app.get('/fail', async () => {
      throw new Error('handler failed');
    });
    url = await app.listen({ port: 0, host: '127.0.0.1' });
  });

  after(async () => {
    await app.close();
    await tracer.close();
  });

  it('runs the handler in a server span that continues the incoming traceparent and sends its own back', async () => {
    tracer.resetFinishedSpans();
    const response = await fetch(`${url}/items/7?secret=1`, { headers: { traceparent: TRACEPARENT } });
    const body = (await response.json()) as { id: string; span: string };
    assert.equal(body.id, '7');
    const spans = tracer.getFinishedSpans();
    const server = byName(spans, 'GET /items/:id');
    assert.equal(server.kind, SpanKind.SERVER);
    assert.equal(server.spanContext().traceId, TRACE_ID);
    assert.equal(server.parentSpanContext?.spanId, PARENT_ID);
    assert.equal(server.attributes['http.route'], '/items/:id');
    assert.equal(server.attributes['url.path'], '/items/7');
    assert.equal(server.attributes['http.response.status_code'], 200);
    assert.equal(body.span, server.spanContext().spanId);
    assert.equal(byName(spans, 'db.query').parentSpanContext?.spanId, server.spanContext().spanId);
    assert.equal(response.headers.get('traceparent'), `00-${TRACE_ID}-${server.spanContext().spanId}-01`);
  });

  it('keeps the server span active in a handler that receives a body', async () => {
    tracer.resetFinishedSpans();
    const response = await fetch(`${url}/echo`, {
      method: 'POST',
      headers: { traceparent: TRACEPARENT, 'content-type': 'application/json' },
      body: JSON.stringify({ hello: 'world' }),
    });
    assert.deepEqual(await response.json(), { hello: 'world' });
    const spans = tracer.getFinishedSpans();
    const server = byName(spans, 'POST /echo');
    assert.equal(byName(spans, 'echo.work').parentSpanContext?.spanId, server.spanContext().spanId);
  });

  it('keeps the server span active when the body arrives after the headers', async () => {
    tracer.resetFinishedSpans();
    const { port } = new URL(url);
    const text = await new Promise<string>((resolve, reject) => {
      const req = httpRequest({ host: '127.0.0.1', port, path: '/echo', method: 'POST' }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          body += chunk;
        });
        res.on('end', () => resolve(body));
      });
      req.on('error', reject);
      req.setHeader('traceparent', TRACEPARENT);
      req.setHeader('content-type', 'application/json');
      req.flushHeaders();
      setTimeout(() => req.end('{"late":true}'), 20);
    });
    assert.deepEqual(JSON.parse(text), { late: true });
    const spans = tracer.getFinishedSpans();
    const server = byName(spans, 'POST /echo');
    assert.equal(byName(spans, 'echo.work').parentSpanContext?.spanId, server.spanContext().spanId);
  });

  it('records a failing handler on the server span', async () => {
    tracer.resetFinishedSpans();
    const response = await fetch(`${url}/fail`);
    assert.equal(response.status, 500);
    const server = byName(tracer.getFinishedSpans(), 'GET /fail');
    assert.equal(server.status.code, SpanStatusCode.ERROR);
    assert.equal(server.attributes['http.response.status_code'], 500);
    assert.equal(server.events[0]?.name, 'exception');
    assert.notEqual(server.spanContext().traceId, TRACE_ID);
  });
});
