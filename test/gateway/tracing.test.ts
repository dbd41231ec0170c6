import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { createGateway } from '../../src/gateway/server.ts';

interface OtlpSpan {
  name: string;
  kind: number;
  traceId: string;
  attributes: { key: string; value: Record<string, unknown> }[];
}

/** A local OTLP/HTTP JSON receiver (the test decodes what the gateway exports). */
let receiver: Server;
let url: string;
const spans: OtlpSpan[] = [];

before(async () => {
  receiver = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => {
      body += c;
    });
    req.on('end', () => {
      const data = JSON.parse(body) as {
        resourceSpans: { scopeSpans: { spans: OtlpSpan[] }[] }[];
      };
      for (const r of data.resourceSpans) for (const s of r.scopeSpans) spans.push(...s.spans);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/v1/traces`;
});
after(() => new Promise<void>((r) => receiver.close(() => r())));

const attr = (span: OtlpSpan, key: string) => {
  const v = span.attributes.find((a) => a.key === key)?.value;
  return v === undefined ? undefined : Object.values(v)[0];
};

describe('tracing', () => {
  it('makes every API request a span with GenAI attributes, and each upstream call a client span', async () => {
    const gw = await createGateway({ cacheDir: false, localChatLatencyMs: 0, otlpUrl: url });
    const res = await gw.app.inject({
      method: 'POST',
      url: '/v1/chat/completions',
      payload: { model: 'local-chat', temperature: 0, messages: [{ role: 'user', content: 'trace me' }] },
    });
    assert.equal(res.statusCode, 200);
    const traceId = String(res.headers.traceparent).split('-')[1];
    await gw.close();
    const server = spans.find((s) => s.name === 'POST /v1/chat/completions');
    assert.ok(server, `spans: ${spans.map((s) => s.name).join(', ')}`);
    assert.equal(server.traceId.toLowerCase(), traceId);
    assert.equal(attr(server, 'gen_ai.operation.name'), 'chat');
    assert.equal(attr(server, 'gen_ai.request.model'), 'local-chat');
    assert.equal(attr(server, 'gen_ai.provider.name'), 'clawperf.local');
    assert.equal(attr(server, 'clawperf.cache'), 'miss');
    assert.ok(Number(attr(server, 'gen_ai.usage.input_tokens')) > 0);
    const client = spans.find((s) => s.name === 'chat local-chat');
    assert.ok(client, 'the upstream call has its own span');
    assert.equal(client.traceId, server.traceId);
  });

  it('gives a streamed local-chat answer its client span too', async () => {
    const gw = await createGateway({ cacheDir: false, localChatLatencyMs: 0, otlpUrl: url });
    const res = await gw.app.inject({
      method: 'POST',
      url: '/v1/chat/completions',
      payload: { model: 'local-chat', stream: true, messages: [{ role: 'user', content: 'stream me' }] },
    });
    assert.equal(res.statusCode, 200);
    const traceId = String(res.headers.traceparent).split('-')[1];
    await gw.close();
    const client = spans.find((s) => s.name === 'chat local-chat' && s.traceId.toLowerCase() === traceId);
    assert.ok(client, 'the streamed call has its own client span in the request trace');
    assert.equal(attr(client, 'gen_ai.provider.name'), 'clawperf.local');
  });
});
