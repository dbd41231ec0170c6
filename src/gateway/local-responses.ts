/**
 * `local-chat` speaking OpenAI's Responses API: the answer `local-upstream.ts` words for a prompt, as a
 * response object and as its typed event stream. A simulation, not a language model: it keeps no
 * conversation state, so `previous_response_id` is refused with a clear 400.
 *
 * @module
 */
import { Readable } from 'node:stream';
import { delay } from './delay.ts';
import type { LocalAnswer } from './local-anthropic.ts';
import { estimateTokens } from './openai.ts';
import { type ResponsesRequest, responsesPromptTokens } from './responses.ts';
import { replayResponse } from './responses-stream.ts';
import { cachedPart } from './simulated-prompt-cache.ts';

/** The response answering `request`. */
export function localResponse(request: ResponsesRequest, answer: LocalAnswer): Record<string, unknown> {
  const body = request.body;
  const input = responsesPromptTokens(request);
  const output = estimateTokens(answer.text);
  return {
    id: `resp_${answer.id}`,
    object: 'response',
    created_at: Math.floor(Date.now() / 1000),
    status: answer.cut ? 'incomplete' : 'completed',
    error: null,
    incomplete_details: answer.cut ? { reason: 'max_output_tokens' } : null,
    instructions: body.instructions ?? null,
    max_output_tokens: body.max_output_tokens ?? null,
    model: 'local-chat',
    output: [
      {
        type: 'message',
        id: `msg_${answer.id}`,
        status: answer.cut ? 'incomplete' : 'completed',
        role: 'assistant',
        content: [{ type: 'output_text', text: answer.text, annotations: [] }],
      },
    ],
    parallel_tool_calls: true,
    previous_response_id: null,
    store: body.store ?? true,
    temperature: body.temperature ?? 1,
    text: body.text ?? { format: { type: 'text' } },
    tool_choice: body.tool_choice ?? 'auto',
    tools: body.tools ?? [],
    top_p: body.top_p ?? 1,
    usage: {
      input_tokens: input,
      input_tokens_details: { cached_tokens: cachedPart(answer.cache, input) },
      output_tokens: output,
      output_tokens_details: { reasoning_tokens: 0 },
      total_tokens: input + output,
    },
  };
}

/** The same response as its event stream, the first event after `latencyMs`. */
export function localResponseStream(
  response: Record<string, unknown>,
  latencyMs: number,
  signal?: AbortSignal,
): Readable {
  async function* events(): AsyncGenerator<string> {
    if (latencyMs > 0) await delay(latencyMs, signal);
    yield* replayResponse(response);
  }
  return Readable.from(events(), { objectMode: false });
}

/** What `local-chat` answers to a `previous_response_id`. */
export const LOCAL_PREVIOUS_RESPONSE_ERROR = {
  error: {
    message:
      'local-chat keeps no conversation state: previous_response_id is not supported; send the whole conversation as input',
    type: 'invalid_request_error',
    param: 'previous_response_id',
    code: 'unsupported_parameter',
  },
};
