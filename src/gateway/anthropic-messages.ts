/**
 * Anthropic's Messages API as a {@link Protocol}: the request as `parseMessagesRequest` validates it, the
 * client's `anthropic-version` and `anthropic-beta` passed on, usage by the one token definition (cache
 * reads and writes are input), streams passed through unchanged, errors in Anthropic's shape.
 *
 * @module
 */
import { DEFAULT_MAX_VALUE_BYTES } from '../cache/index.ts';
import { anthropicHeaders, type MessagesRequest, parseMessagesRequest, promptTokens } from './anthropic.ts';
import { sendAnthropicError } from './anthropic-errors.ts';
import { AnthropicStreamTap, replayMessage } from './anthropic-stream.ts';
import { withAutoBreakpoints } from './auto-breakpoints.ts';
import { isApiError } from './error-answers.ts';
import { type ApiError, totalTokens } from './openai.ts';
import type { Protocol, ProtocolRequest } from './protocol.ts';

/** A Messages request, parsed, with what the shared path needs. */
export interface AnthropicMessagesRequest extends ProtocolRequest {
  messages: MessagesRequest;
  headers: Record<string, string>;
}

/** Options of the protocol. */
export interface AnthropicMessagesOptions {
  /** Place cache breakpoints where the client's leave the history uncached (auto-breakpoints.ts). */
  autoBreakpoints?: boolean;
}

/** The Messages protocol. */
export const anthropicMessages = (
  options: AnthropicMessagesOptions = {},
): Protocol<AnthropicMessagesRequest> => ({
  endpoint: 'messages',
  api: 'anthropic',

  parse(body, headers): AnthropicMessagesRequest | ApiError {
    const messages = parseMessagesRequest(body);
    if (isApiError(messages)) return messages;
    const forwarded = anthropicHeaders(headers);
    // The answer does not depend on whether it is streamed, nor on who asks; it does on the API version
    // and the beta features asked for.
    const { stream: _stream, metadata: _metadata, ...rest } = messages.body;
    return {
      messages,
      model: messages.model,
      stream: messages.stream,
      deterministic: messages.deterministic,
      estimate: promptTokens(messages) + messages.maxTokens,
      identity: { headers: forwarded, body: rest },
      headers: forwarded,
    };
  },

  upstreamBody(request: AnthropicMessagesRequest): Record<string, unknown> {
    // A stream always carries its usage: nothing to ask for, nothing to drop.
    const body = request.messages.body;
    return options.autoBreakpoints === true ? withAutoBreakpoints(body) : body;
  },

  usage: totalTokens,

  replay: replayMessage,

  tap(_request: AnthropicMessagesRequest, assemble: boolean): AnthropicStreamTap {
    return new AnthropicStreamTap({ assemble, maxBytes: DEFAULT_MAX_VALUE_BYTES });
  },

  sendError: sendAnthropicError,
});
