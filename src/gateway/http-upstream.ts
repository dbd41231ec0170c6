/**
 * An HTTP upstream as an {@link Upstream}, OpenAI-compatible or Anthropic: the API and the operation pick
 * the path, a stream is asked for when wanted, and a streamed success that is not server-sent events is
 * refused before any byte reaches the client.
 *
 * @module
 */
import type { Readable } from 'node:stream';
import { UpstreamError } from '../errors.ts';
import type { UpstreamClient } from './upstream.ts';
import type {
  Api,
  CallOptions,
  Operation,
  Upstream,
  UpstreamIdentity,
  UpstreamReply,
  UpstreamRequest,
} from './upstream-interface.ts';

/** The path of each operation an API has, below the client's base URL (which ends with `/v1`). */
const PATHS: Readonly<Record<Api, Partial<Record<Operation, string>>>> = {
  openai: { chat: '/chat/completions', embeddings: '/embeddings', responses: '/responses' },
  anthropic: { chat: '/messages', count_tokens: '/messages/count_tokens' },
};

export class HttpUpstream implements Upstream {
  readonly #client: UpstreamClient;
  readonly #api: Api;
  readonly #identity: UpstreamIdentity;

  /** An upstream speaking `api` through `client`. */
  constructor(client: UpstreamClient, api: Api = 'openai') {
    this.#client = client;
    this.#api = api;
    this.#identity = { provider: api, serverAddress: client.host, serverPort: client.port };
  }

  identity(): UpstreamIdentity {
    return this.#identity;
  }

  async call(request: UpstreamRequest, options: CallOptions = {}): Promise<UpstreamReply> {
    const path = PATHS[this.#api][request.operation];
    if (path === undefined || request.api !== this.#api) {
      throw new TypeError(`a ${this.#api} upstream has no ${request.api} ${request.operation} operation`);
    }
    const callOptions = {
      tokens: request.tokens,
      signal: options.signal,
      headers: request.headers,
      outbound: options.pacer,
    };
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
