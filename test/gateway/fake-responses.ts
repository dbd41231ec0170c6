/**
 * A FAKE OpenAI Responses upstream for the gateway tests (no real provider can be run here). It answers
 * `POST /v1/responses` (also streamed, as OpenAI's typed events with `sequence_number`), stores a response
 * unless `store: false`, answers `GET` and `DELETE /v1/responses/{id}` for stored ones (404 otherwise), and
 * reports the usage it is given (cached input tokens included). It records every request.
 */
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeResponses {
  /** Base URL including `/v1`. */
  url: string;
  requests: {
    method: string;
    path: string;
    headers: IncomingHttpHeaders;
    body: Record<string, unknown> | undefined;
  }[];
  /** Input tokens each answer reports, and the cached part of them. */
  usage: { input_tokens: number; cached_tokens: number; output_tokens: number };
  /** Requests received on `path` (any method). */
  total(path: string, method?: string): number;
  clear(): void;
  close(): Promise<void>;
}

/** Starts the fake on a free loopback port. */
export async function startFakeResponses(): Promise<FakeResponses> {
  const stored = new Map<string, Record<string, unknown>>();
  const sockets = new Set<import('node:net').Socket>();
  let made = 0;
  const fake: FakeResponses = {
    url: '',
    requests: [],
    usage: { input_tokens: 20, cached_tokens: 0, output_tokens: 5 },
    total(path, method) {
      return fake.requests.filter((r) => r.path === path && (method === undefined || r.method === method))
        .length;
    },
    clear() {
      fake.requests.length = 0;
      fake.usage = { input_tokens: 20, cached_tokens: 0, output_tokens: 5 };
    },
    close: async () => {},
  };
  const json = (res: import('node:http').ServerResponse, status: number, value: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(value));
  };
  const notFound = (res: import('node:http').ServerResponse, id: string) =>
    json(res, 404, {
      error: {
        message: `No response found with id '${id}'.`,
        type: 'invalid_request_error',
        param: null,
        code: null,
      },
    });

  const server: Server = createServer((req, res) => {
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => {
      text += chunk;
    });
    req.on('end', () => {
      const path = (req.url ?? '').split('?', 1)[0]!;
      const body = text === '' ? undefined : (JSON.parse(text) as Record<string, unknown>);
      fake.requests.push({ method: req.method ?? '', path, headers: req.headers, body });
      const idMatch = /^\/v1\/responses\/([^/]+)$/.exec(path);
      if (idMatch !== null) {
        const id = decodeURIComponent(idMatch[1]!);
        const response = stored.get(id);
        if (response === undefined) return notFound(res, id);
        if (req.method === 'DELETE') {
          stored.delete(id);
          return json(res, 200, { id, object: 'response', deleted: true });
        }
        return json(res, 200, response);
      }
      if (path !== '/v1/responses' || req.method !== 'POST' || body === undefined) {
        return json(res, 404, {
          error: { message: 'no route', type: 'invalid_request_error', param: null, code: null },
        });
      }
      const id = `resp_fake_${++made}`;
      const { input_tokens, cached_tokens, output_tokens } = fake.usage;
      const response = {
        id,
        object: 'response',
        created_at: 0,
        status: 'completed',
        error: null,
        incomplete_details: null,
        model: body.model,
        previous_response_id: body.previous_response_id ?? null,
        store: body.store ?? true,
        output: [
          {
            type: 'message',
            id: `msg_fake_${made}`,
            status: 'completed',
            role: 'assistant',
            content: [{ type: 'output_text', text: `fake answer ${made}`, annotations: [] }],
          },
        ],
        usage: {
          input_tokens,
          input_tokens_details: { cached_tokens },
          output_tokens,
          output_tokens_details: { reasoning_tokens: 0 },
          total_tokens: input_tokens + output_tokens,
        },
      };
      if (body.store !== false) stored.set(id, response);
      if (body.stream !== true) return json(res, 200, response);
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      let sequence = 0;
      const event = (type: string, data: object) =>
        res.write(
          `event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: sequence++, ...data })}\n\n`,
        );
      const pending = { ...response, status: 'in_progress', output: [], usage: null };
      event('response.created', { response: pending });
      event('response.in_progress', { response: pending });
      const item = response.output[0]!;
      const at = { item_id: item.id, output_index: 0, content_index: 0 };
      event('response.output_item.added', {
        output_index: 0,
        item: { ...item, status: 'in_progress', content: [] },
      });
      event('response.content_part.added', {
        ...at,
        part: { type: 'output_text', text: '', annotations: [] },
      });
      for (const word of item.content[0]!.text.split(/(?<= )/)) {
        event('response.output_text.delta', { ...at, delta: word, logprobs: [] });
      }
      event('response.output_text.done', { ...at, text: item.content[0]!.text, logprobs: [] });
      event('response.content_part.done', { ...at, part: item.content[0] });
      event('response.output_item.done', { output_index: 0, item });
      event('response.completed', { response });
      res.end();
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  fake.url = `http://127.0.0.1:${port}/v1`;
  fake.close = async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return fake;
}
