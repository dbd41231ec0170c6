/**
 * OpenAI's chat completions as a {@link Protocol}: the request as `parseChatRequest` validates it, `usage`
 * from `total_tokens`, streams of `chat.completion.chunk` events, errors in OpenAI's shape.
 *
 * @module
 */
import { DEFAULT_MAX_VALUE_BYTES } from '../cache/index.ts';
import { DEFAULT_COMPLETION_ESTIMATE } from './context.ts';
import { isApiError, sendError } from './error-answers.ts';
import { type ApiError, CHARS_PER_TOKEN, type ChatRequest, parseChatRequest, totalTokens } from './openai.ts';
import type { Protocol, ProtocolRequest } from './protocol.ts';
import { replayStream, StreamTap } from './streaming.ts';

/** A chat completion request, parsed, with what the shared path needs. */
export interface OpenAIChatRequest extends ProtocolRequest {
  chat: ChatRequest;
  /** The client asked for the usage chunk of a stream (`stream_options.include_usage`). */
  wantsUsage: boolean;
}

export const openAIChat: Protocol<OpenAIChatRequest> = {
  endpoint: 'chat',
  api: 'openai',

  parse(body: unknown): OpenAIChatRequest | ApiError {
    const chat = parseChatRequest(body);
    if (isApiError(chat)) return chat;
    // The answer does not depend on whether it is streamed, nor on who asks.
    const { stream: _stream, stream_options: _options, user: _user, ...identity } = chat.body;
    const options = chat.body.stream_options as { include_usage?: unknown } | undefined;
    return {
      chat,
      model: chat.model,
      stream: chat.stream,
      deterministic: chat.deterministic,
      estimate:
        Math.ceil(chat.promptChars / CHARS_PER_TOKEN) + (chat.maxTokens ?? DEFAULT_COMPLETION_ESTIMATE),
      identity,
      wantsUsage: options?.include_usage === true,
    };
  },

  upstreamBody(request: OpenAIChatRequest): Record<string, unknown> {
    const body = request.chat.body;
    if (!request.stream || request.wantsUsage) return body;
    // The token limit settles from `usage`, so the gateway asks for it; the tap drops it for this client.
    return {
      ...body,
      stream_options: { ...(body.stream_options as object | undefined), include_usage: true },
    };
  },

  usage: totalTokens,

  replay(answer: unknown, request: OpenAIChatRequest): Iterable<string> {
    return replayStream(answer, request.chat.body.stream_options);
  },

  tap(request: OpenAIChatRequest, assemble: boolean): StreamTap {
    return new StreamTap({ dropUsage: !request.wantsUsage, assemble, maxBytes: DEFAULT_MAX_VALUE_BYTES });
  },

  sendError,
};
