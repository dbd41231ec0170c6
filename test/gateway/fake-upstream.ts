/**
 * A FAKE OpenAI-compatible upstream for the gateway tests (no real provider can be run here). It answers
 * `/v1/embeddings`, `/v1/chat/completions` (also streamed) and `/v1/models`, counts calls, and can be told
 * to misbehave: be slow, answer 500, answer 429 with `Retry-After`, reset the connection, or send invalid
 * JSON, for the next N calls or all of them.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type Fault =
  | { kind: 'slow'; ms: number }
  | { kind: 'status'; status: number; retryAfter?: string; body?: unknown }
  | { kind: 'reset' }
  | { kind: 'invalid-json' };

export interface FakeUpstream {
  /** Base URL including `/v1`. */
  url: string;
  /** Calls per path. */
  calls: Map<string, number>;
  /** Inputs per embeddings call, in order. */
  embedBatches: number[];
  /** The body of the last chat completion request. */
  lastChat: Record<string, unknown> | undefined;
  /** The `authorization` header of every request, in order. */
  keys: (string | undefined)[];
  /** Misbehave for the next `times` calls (default: until `clear()`). */
  fail(fault: Fault, times?: number): void;
  clear(): void;
  total(path: string): number;
  /** Resolves with the path of the next request, as soon as it arrives (before it is answered). */
  nextCall(): Promise<string>;
  close(): Promise<void>;
}

function vectorOf(text: string, dimensions: number): number[] {
  const v = new Array<number>(dimensions).fill(0);
  for (let i = 0; i < text.length; i++) v[i % dimensions]! += text.charCodeAt(i) / 1000;
  return v;
}

/** Starts the fake on a free loopback port. */
export async function startFakeUpstream(): Promise<FakeUpstream> {
  const calls = new Map<string, number>();
  const embedBatches: number[] = [];
  const state: { lastChat: Record<string, unknown> | undefined } = { lastChat: undefined };
  const keys: (string | undefined)[] = [];
  let fault: Fault | undefined;
  let remaining = Number.POSITIVE_INFINITY;
  const sockets = new Set<import('node:net').Socket>();
  let arrivals: ((path: string) => void)[] = [];
  let answers = 0;

  const handle = async (req: IncomingMessage, res: ServerResponse, body: string) => {
    const path = (req.url ?? '').split('?', 1)[0]!;
    calls.set(path, (calls.get(path) ?? 0) + 1);
    keys.push(req.headers.authorization);
    const waiting = arrivals;
    arrivals = [];
    for (const arrived of waiting) arrived(path);
    const active = fault;
    if (active !== undefined && --remaining <= 0) fault = undefined;
    if (active?.kind === 'slow') await new Promise((r) => setTimeout(r, active.ms));
    if (active?.kind === 'reset') {
      req.socket.destroy();
      return;
    }
    if (active?.kind === 'status') {
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      if (active.retryAfter !== undefined) headers['retry-after'] = active.retryAfter;
      res.writeHead(active.status, headers);
      res.end(
        JSON.stringify(
          active.body ?? {
            error: { message: `fake ${active.status}`, type: 'server_error', param: null, code: null },
          },
        ),
      );
      return;
    }
    if (active?.kind === 'invalid-json') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"object": "list", "data": [');
      return;
    }
    const json = (status: number, value: unknown) => {
      res.writeHead(status, {
        'content-type': 'application/json',
        'x-ratelimit-limit-requests': '10000',
        'x-ratelimit-remaining-requests': '9999',
        'x-ratelimit-reset-requests': '6ms',
      });
      res.end(JSON.stringify(value));
    };
    const request = body === '' ? {} : (JSON.parse(body) as Record<string, unknown>);
    if (path === '/v1/models')
      return json(200, {
        object: 'list',
        data: [{ id: 'fake-model', object: 'model', created: 0, owned_by: 'fake' }],
      });
    if (path === '/v1/embeddings') {
      if (request.model !== 'fake-embed') {
        return json(404, {
          error: {
            message: `The model ${request.model} does not exist`,
            type: 'invalid_request_error',
            param: 'model',
            code: 'model_not_found',
          },
        });
      }
      const inputs = Array.isArray(request.input) ? request.input : [request.input];
      embedBatches.push(inputs.length);
      const dims = typeof request.dimensions === 'number' ? request.dimensions : 8;
      return json(200, {
        object: 'list',
        model: 'fake-embed',
        data: inputs.map((t, index) => ({
          object: 'embedding',
          index,
          embedding: vectorOf(String(t), dims),
        })),
        usage: { prompt_tokens: inputs.length * 2, total_tokens: inputs.length * 2 },
      });
    }
    if (path === '/v1/chat/completions') {
      const messages = request.messages as { content: string }[];
      state.lastChat = request;
      const text = `fake answer to ${messages[messages.length - 1]?.content}`;
      if (request.stream === true) {
        // As OpenAI streams: the role first, the words, a chunk with finish_reason, usage only when asked.
        // A prompt containing "tool" streams a tool call; one containing "cut" breaks off half-way.
        const head = {
          id: 'chatcmpl-fake',
          object: 'chat.completion.chunk',
          created: 0,
          model: request.model,
        };
        const event = (choices: unknown[], extra: object = {}) =>
          res.write(`data: ${JSON.stringify({ ...head, choices, ...extra })}\n\n`);
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        event([{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }]);
        const words = text.split(' ');
        for (const [i, word] of words.entries()) {
          if (text.includes('cut') && i === 2) {
            res.socket?.destroy();
            return;
          }
          event([{ index: 0, delta: { content: i === 0 ? word : ` ${word}` }, finish_reason: null }]);
          await new Promise((r) => setTimeout(r, 5));
        }
        if (text.includes('tool')) {
          event([
            {
              index: 0,
              delta: {
                tool_calls: [
                  { index: 0, id: 'call_1', type: 'function', function: { name: 'f', arguments: '{}' } },
                ],
              },
              finish_reason: null,
            },
          ]);
        }
        event([{ index: 0, delta: {}, finish_reason: 'stop' }]);
        if ((request.stream_options as { include_usage?: unknown } | undefined)?.include_usage === true) {
          event([], { usage: { prompt_tokens: 3, completion_tokens: 5, total_tokens: 8 } });
        }
        res.end('data: [DONE]\n\n');
        return;
      }
      // Each answer has its own id, so a test can tell a cached answer from a new one.
      return json(200, {
        id: `chatcmpl-fake-${++answers}`,
        object: 'chat.completion',
        created: 0,
        model: request.model,
        choices: [{ index: 0, message: { role: 'assistant', content: text }, finish_reason: 'stop' }],
        usage: { prompt_tokens: 3, completion_tokens: 5, total_tokens: 8 },
      });
    }
    json(404, {
      error: { message: 'no such route', type: 'invalid_request_error', param: null, code: null },
    });
  };

  const server: Server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => {
      body += c;
    });
    req.on('end', () => {
      handle(req, res, body).catch(() => res.destroy());
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/v1`,
    calls,
    embedBatches,
    keys,
    get lastChat() {
      return state.lastChat;
    },
    nextCall() {
      return new Promise<string>((resolve) => arrivals.push(resolve));
    },
    fail(f, times = Number.POSITIVE_INFINITY) {
      fault = f;
      remaining = times;
    },
    clear() {
      fault = undefined;
    },
    total: (path) => calls.get(path) ?? 0,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
