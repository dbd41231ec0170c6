import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type OpenAI from 'openai';
import { APIConnectionError, APIError, APIUserAbortError } from 'openai';
import type { GatewayConfig } from '../../src/gateway/config.ts';
import type { Gateway } from '../../src/gateway/server.ts';
import { serveGateway } from '../helpers/gateway.ts';
import { waitFor } from '../helpers/servers.ts';
import { type FakeUpstream, startFakeUpstream } from './fake-upstream.ts';

/**
 * A FAKE upstream (no real provider runs here) for the answers fake-upstream.ts does not make: each chat
 * request is answered by `answer`, which writes what it likes, holds the request open, or both.
 */
interface ScriptedUpstream {
  url: string;
  answer: (req: IncomingMessage, res: ServerResponse) => void;
  close(): Promise<void>;
}

async function startScriptedUpstream(): Promise<ScriptedUpstream> {
  const sockets = new Set<Socket>();
  const scripted: ScriptedUpstream = {
    url: '',
    answer: (_req, res) => res.writeHead(500).end(),
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  const server = createServer((req, res) => {
    req.resume();
    req.once('end', () => scripted.answer(req, res));
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  scripted.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
  return scripted;
}

const gateways: Gateway[] = [];
let fake: FakeUpstream;
let scripted: ScriptedUpstream;

before(async () => {
  fake = await startFakeUpstream();
  scripted = await startScriptedUpstream();
});
after(async () => {
  await Promise.all(gateways.map((g) => g.close()));
  await Promise.all([fake.close(), scripted.close()]);
});

/** A gateway listening on a free loopback port, and the official SDK pointed at it. */
const serve = (config: Partial<GatewayConfig> = {}) => serveGateway(gateways, config);

describe('a streamed chat from a broken upstream ends in an error the client sees', () => {
  let client: OpenAI;
  let viaScripted: OpenAI;
  before(async () => {
    ({ client } = await serve({ upstreamUrl: fake.url, upstreamRetries: 0 }));
    ({ client: viaScripted } = await serve({ upstreamUrl: scripted.url, upstreamRetries: 0 }));
  });

  /** Streams a chat through `via` and returns the chunks' text and the error that ended the stream. */
  async function streamed(via: OpenAI, content: string) {
    let text = '';
    try {
      const stream = await via.chat.completions.create({
        model: 'fake-chat',
        messages: [{ role: 'user', content }],
        stream: true,
      });
      for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
    } catch (error) {
      return { text, error };
    }
    return { text, error: undefined };
  }

  /** The error is the gateway's answer (an API error of the upstream's), not a broken connection. */
  function assertUpstreamError(error: unknown, status: number | undefined): APIError {
    assert.ok(error instanceof APIError, `expected an APIError, got ${String(error)}`);
    assert.ok(!(error instanceof APIConnectionError), String(error));
    assert.equal(error.status, status, error.message);
    assert.equal(error.type, 'server_error');
    assert.equal(error.code, 'upstream_error');
    return error;
  }

  it('502 before any byte when the upstream answers plain JSON', async () => {
    const completion = {
      id: 'chatcmpl-json',
      object: 'chat.completion',
      created: 0,
      model: 'fake-chat',
      choices: [{ index: 0, message: { role: 'assistant', content: 'not a stream' }, finish_reason: 'stop' }],
    };
    fake.fail({ kind: 'status', status: 200, body: completion }, 1);
    const plain = await streamed(client, 'plain json');
    assert.match(assertUpstreamError(plain.error, 502).message, /application\/json/);
    fake.fail({ kind: 'invalid-json' }, 1);
    assertUpstreamError((await streamed(client, 'broken json')).error, 502);
    fake.clear();
  });

  const broken: [name: string, events: string[]][] = [
    ['data that is not server-sent events', ['{"choices": [{"delta": {"content": "hi"}}]}']],
    ['an event whose data is not JSON', ['data: {"choices": [{"index": 0, "delta": {"content": "par']],
    ['no event at all', []],
    [
      'events that stop before the answer finished',
      [
        'data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"half"},"finish_reason":null}]}\n\n',
      ],
    ],
  ];
  for (const [name, events] of broken) {
    it(`an error event in the stream for ${name}`, async () => {
      scripted.answer = (_req, res) => {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        for (const event of events) res.write(event);
        res.end();
      };
      const { error } = await streamed(viaScripted, name);
      assertUpstreamError(error, undefined);
    });
  }

  it('an error event after the chunks already sent, when good events turn bad', async () => {
    scripted.answer = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8' });
      res.write(
        'data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"first"},"finish_reason":null}]}\r\n\r\n',
      );
      res.end('data: <html>502 Bad Gateway</html>\n\n');
    };
    const { text, error } = await streamed(viaScripted, 'turns bad');
    assert.equal(text, 'first');
    assertUpstreamError(error, undefined);
  });

  it('an error event when the upstream connection breaks off mid-stream', async () => {
    const { text, error } = await streamed(client, 'this will be cut short');
    assert.ok(text.length > 0, 'some chunks arrived first');
    assertUpstreamError(error, undefined);
  });

  it('a whole stream still passes: comments, event fields, data on two lines, CRLF, no final blank line', async () => {
    const chunk = (delta: object, finish: string | null) =>
      JSON.stringify({
        object: 'chat.completion.chunk',
        choices: [{ index: 0, delta, finish_reason: finish }],
      });
    scripted.answer = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(': keep-alive\n\n');
      res.write(`id: 1\ndata: ${chunk({ content: 'who' }, null)}\n\n`);
      res.write(`data: ${chunk({ content: 'le' }, null).replace(',"choices"', ',\r\ndata: "choices"')}\r`);
      res.write('\n\r\n');
      res.write(`data:${chunk({}, 'stop')}\n\n`);
      res.end('data: [DONE]');
    };
    const { text, error } = await streamed(viaScripted, 'whole');
    assert.equal(error, undefined);
    assert.equal(text, 'whole');
  });
  it('a character split between two reads of the upstream arrives whole', async () => {
    const event = (content: string, finish: string | null) =>
      `data: ${JSON.stringify({ object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content }, finish_reason: finish }] })}\n\n`;
    const bytes = Buffer.from(`${event('héllo 你好', null)}${event(' 🙂', 'stop')}data: [DONE]\n\n`);
    // Cut inside the three bytes of 你, and inside the four of 🙂: each half goes in its own read.
    const cuts = [bytes.indexOf(Buffer.from('你')) + 1, bytes.indexOf(Buffer.from('🙂')) + 2, bytes.length];
    scripted.answer = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      let from = 0;
      const next = () => {
        const to = cuts.shift()!;
        res.write(bytes.subarray(from, to));
        from = to;
        if (cuts.length === 0) res.end();
        else setTimeout(next, 20);
      };
      next();
    };
    const { text, error } = await streamed(viaScripted, 'split');
    assert.equal(error, undefined);
    assert.equal(text, 'héllo 你好 🙂');
  });
});

describe('the inFlight gauge returns to 0 however a request ends', () => {
  const settled = (gw: Gateway) =>
    waitFor(() => gw.stats().inFlight === 0, {
      what: 'inFlight to return to 0',
      describe: () => `inFlight: ${gw.stats().inFlight}`,
    });

  /**
   * The scripted upstream holds each chat request (after writing `head`) until `release()`, and emits
   * `arrived` for each. Until the upstream answers, the gateway's outbound limiter lets no other call
   * through: it has not yet learned the upstream's limits.
   */
  function holdRequests(head?: string) {
    const held: ServerResponse[] = [];
    const events = new EventEmitter();
    scripted.answer = (_req, res) => {
      held.push(res);
      if (head !== undefined) {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(head);
      }
      events.emit('arrived');
    };
    return {
      events,
      /** Answers the held requests: a completion, or the end of a stream. */
      release: () => {
        for (const res of held.splice(0)) {
          if (res.headersSent) res.end('data: [DONE]\n\n');
          else
            res.writeHead(200, { 'content-type': 'application/json' }).end(
              JSON.stringify({
                id: 'chatcmpl-late',
                object: 'chat.completion',
                created: 0,
                model: 'fake-chat',
                choices: [
                  { index: 0, message: { role: 'assistant', content: 'late' }, finish_reason: 'stop' },
                ],
              }),
            );
        }
      },
    };
  }

  it('after chat requests the client aborted while the upstream was slow', async () => {
    const { gw, client } = await serve({ upstreamUrl: scripted.url, upstreamRetries: 0 });
    const upstream = holdRequests();
    for (let i = 0; i < 3; i++) {
      const controller = new AbortController();
      const arrived = once(upstream.events, 'arrived');
      const call = client.chat.completions.create(
        { model: 'fake-chat', messages: [{ role: 'user', content: `aborted ${i}` }], temperature: 1 },
        { signal: controller.signal },
      );
      await arrived;
      assert.ok(gw.stats().inFlight >= 1);
      controller.abort();
      await assert.rejects(call, APIUserAbortError);
      upstream.release();
    }
    await settled(gw);
  });

  it('after a streamed chat whose client left mid-stream', async () => {
    const { gw, client } = await serve({ upstreamUrl: scripted.url, upstreamRetries: 0 });
    const upstream = holdRequests(
      'data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"first"},"finish_reason":null}]}\n\n',
    );
    const stream = await client.chat.completions.create({
      model: 'fake-chat',
      messages: [{ role: 'user', content: 'left mid-stream' }],
      stream: true,
    });
    for await (const chunk of stream) {
      assert.equal(chunk.choices[0]?.delta?.content, 'first');
      break;
    }
    await settled(gw);
    upstream.release();
  });

  it('after a dashboard client disconnected', async () => {
    const { gw, base } = await serve();
    const controller = new AbortController();
    const res = await fetch(`${base}/dashboard/events`, { signal: controller.signal });
    const reader = res.body!.getReader();
    assert.match(new TextDecoder().decode((await reader.read()).value), /retry: 1000/);
    assert.equal(gw.stats().inFlight, 1);
    controller.abort();
    await reader.closed.catch(() => {});
    await settled(gw);
  });

  it('after a /debug/eventloop call', async () => {
    const { gw, base } = await serve({ adminToken: 'admin-secret' });
    const res = await fetch(`${base}/debug/eventloop?seconds=0.05`, {
      headers: { authorization: 'Bearer admin-secret' },
    });
    assert.equal(res.status, 200);
    assert.ok('p99' in ((await res.json()) as object));
    await settled(gw);
  });
});
