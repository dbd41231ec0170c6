/**
 * An OpenAI-compatible HTTP upstream as an {@link Upstream}: the operation picks the path, a stream is
 * asked for when wanted, and a streamed success that is not server-sent events is refused before any byte
 * reaches the client.
 *
 * @module
 */
import type { Readable } from 'node:stream';
import { UpstreamError } from '../errors.ts';
import type { UpstreamClient } from './upstream.ts';
import type {
  CallOptions,
  Upstream,
  UpstreamIdentity,
  UpstreamReply,
  UpstreamRequest,
} from './upstream-interface.ts';

const PATHS = { chat: '/chat/completions', embeddings: '/embeddings' } as const;

export class HttpUpstream implements Upstream {
  readonly #client: UpstreamClient;
  readonly #identity: UpstreamIdentity;

  constructor(client: UpstreamClient) {
    this.#client = client;
    this.#identity = { provider: 'openai', serverAddress: client.host, serverPort: client.port };
  }

  identity(): UpstreamIdentity {
    return this.#identity;
  }

  async call(request: UpstreamRequest, options: CallOptions = {}): Promise<UpstreamReply> {
    const path = PATHS[request.operation];
    const callOptions = { tokens: request.tokens, signal: options.signal };
    if (!request.stream) {
      const answer = await this.#client.postJson(path, request.body, callOptions);
      return { status: answer.status, headers: answer.headers, json: answer.body, stream: undefined };
    }
    const answer = await this.#client.postStream(path, request.body, callOptions);
    if (answer.status >= 300) {
      return { status: answer.status, headers: answer.headers, json: answer.body, stream: undefined };
    }
    const stream = answer.body as Readable;
    // Nothing is sent yet: a success that is not a stream (a server ignoring `stream`) is a 502 now.
    const type = answer.headers['content-type'];
    if (type !== undefined && !type.includes('text/event-stream')) {
      stream.on('error', () => {}).destroy();
      throw new UpstreamError(
        `the upstream answered a streamed request with ${type}, not server-sent events`,
        {
          status: answer.status,
        },
      );
    }
    return { status: answer.status, headers: answer.headers, json: undefined, stream };
  }
}
