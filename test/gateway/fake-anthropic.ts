/**
 * A FAKE Anthropic Messages upstream for the gateway tests (no real provider can be run here). It answers
 * `POST /v1/messages` (also streamed, with Anthropic's real event sequence), `POST
 * /v1/messages/count_tokens` and `GET /v1/models`, records each request's headers and body, reports the
 * usage it is given (prompt-cache figures included) and the rate-limit headers it is given, and can be told
 * to misbehave: answer an error status with Anthropic's error body (429 with `retry-after`, 529, 500, a
 * 4xx), or break a stream off after its first events.
 */
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export type AnthropicFault =
  | { kind: 'status'; status: number; type: string; retryAfter?: string }
  | { kind: 'break-stream' }
  /** Stream the first events, then Anthropic's own `error` event (as it does when overloaded mid-stream). */
  | { kind: 'error-event' };

/** A message's usage as Anthropic reports it. */
export interface FakeUsage {
  input_tokens: number;
  cache_creation_input_tokens: number;
  cache_read_input_tokens: number;
  output_tokens: number;
}

export interface FakeAnthropic {
  /** Base URL as Anthropic's SDK takes it (no `/v1`). */
  url: string;
  /** Requests received, in order. */
  requests: { path: string; headers: IncomingHttpHeaders; body: Record<string, unknown> | undefined }[];
  /** The usage every answer reports. */
  usage: FakeUsage;
  /** Headers every answer carries (rate-limit headers). */
  answerHeaders: Record<string, string>;
  /** The exact bytes of the last stream sent. */
  lastStream: string;
  /** Misbehave for the next `times` calls. */
  fail(fault: AnthropicFault, times?: number): void;
  clear(): void;
  /** Requests received on `path`. */
  total(path: string): number;
  close(): Promise<void>;
}

const TEXT = ['Hello', ' from', ' the', ' fake', ' upstream', '.'];

/** Anthropic's way of writing an event. */
const event = (type: string, data: object) =>
  `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`;

/** The events of one streamed message, as Anthropic sends them. */
function streamOf(id: string, model: string, usage: FakeUsage): string[] {
  return [
    event('message_start', {
      message: {
        id,
        type: 'message',
        role: 'assistant',
        model,
        content: [],
        stop_reason: null,
        stop_sequence: null,
        usage: { ...usage, output_tokens: 1 },
      },
    }),
    event('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }),
    event('ping', {}),
    ...TEXT.map((text) => event('content_block_delta', { index: 0, delta: { type: 'text_delta', text } })),
    event('content_block_stop', { index: 0 }),
    event('message_delta', {
      delta: { stop_reason: 'end_turn', stop_sequence: null },
      usage: { output_tokens: usage.output_tokens },
    }),
    event('message_stop', {}),
  ];
}

/** Starts the fake on a free loopback port. */
export async function startFakeAnthropic(): Promise<FakeAnthropic> {
  let fault: AnthropicFault | undefined;
  let remaining = 0;
  let served = 0;
  const sockets = new Set<import('node:net').Socket>();
  const fake: FakeAnthropic = {
    url: '',
    close: async () => {},
    requests: [],
    usage: { input_tokens: 10, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: 6 },
    answerHeaders: {},
    lastStream: '',
    fail(f, times = Number.POSITIVE_INFINITY) {
      fault = f;
      remaining = times;
    },
    clear() {
      fault = undefined;
      fake.requests.length = 0;
      fake.answerHeaders = {};
      fake.usage = {
        input_tokens: 10,
        cache_creation_input_tokens: 0,
        cache_read_input_tokens: 0,
        output_tokens: 6,
      };
    },
    total(path) {
      return fake.requests.filter((r) => r.path === path).length;
    },
  };

  const server: Server = createServer((req, res) => {
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => {
      text += chunk;
    });
    req.on('end', () => {
      const path = (req.url ?? '').split('?', 1)[0]!;
      const body = text === '' ? undefined : (JSON.parse(text) as Record<string, unknown>);
      fake.requests.push({ path, headers: req.headers, body });
      const active = fault;
      if (active !== undefined && --remaining <= 0) fault = undefined;
      const headers: Record<string, string> = { ...fake.answerHeaders, 'request-id': `req_fake_${++served}` };
      if (active?.kind === 'status') {
        if (active.retryAfter !== undefined) headers['retry-after'] = active.retryAfter;
        res.writeHead(active.status, { ...headers, 'content-type': 'application/json' });
        res.end(
          JSON.stringify({ type: 'error', error: { type: active.type, message: `fake ${active.type}` } }),
        );
        return;
      }
      if (path === '/v1/models') {
        const data = ['claude-fake-1', 'claude-fake-2'].map((id) => ({
          type: 'model',
          id,
          display_name: id,
          created_at: '2026-01-01T00:00:00Z',
        }));
        res.writeHead(200, { ...headers, 'content-type': 'application/json' });
        res.end(JSON.stringify({ data, has_more: false, first_id: data[0]!.id, last_id: data[1]!.id }));
        return;
      }
      if (path === '/v1/messages/count_tokens') {
        res.writeHead(200, { ...headers, 'content-type': 'application/json' });
        res.end(JSON.stringify({ input_tokens: 42 }));
        return;
      }
      if (path !== '/v1/messages') {
        res.writeHead(404, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ type: 'error', error: { type: 'not_found_error', message: 'no route' } }));
        return;
      }
      const model = String(body?.model);
      const id = `msg_fake_${served}`;
      if (body?.stream === true) {
        const events = streamOf(id, model, fake.usage);
        res.writeHead(200, { ...headers, 'content-type': 'text/event-stream; charset=utf-8' });
        if (active?.kind === 'error-event') {
          fake.lastStream = `${events.slice(0, 3).join('')}${event('error', {
            error: { type: 'overloaded_error', message: 'Overloaded' },
          })}`;
          res.end(fake.lastStream);
          return;
        }
        if (active?.kind === 'break-stream') {
          res.write(events.slice(0, 3).join(''));
          setImmediate(() => req.socket.destroy());
          return;
        }
        fake.lastStream = events.join('');
        // Written an event at a time, as a provider does.
        let i = 0;
        const next = () => {
          if (i === events.length) {
            res.end();
            return;
          }
          res.write(events[i++]);
          setImmediate(next);
        };
        next();
        return;
      }
      res.writeHead(200, { ...headers, 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          id,
          type: 'message',
          role: 'assistant',
          model,
          content: [{ type: 'text', text: TEXT.join('') }],
          stop_reason: 'end_turn',
          stop_sequence: null,
          usage: fake.usage,
        }),
      );
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  fake.url = `http://127.0.0.1:${port}`;
  fake.close = async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return fake;
}
