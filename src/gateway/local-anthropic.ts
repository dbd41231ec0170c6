/**
 * `local-chat` speaking Anthropic's Messages API: the answer `local-upstream.ts` words for a prompt, as a
 * message, as its event stream, and the prompt's token count. A simulation, not a language model.
 *
 * @module
 */
import { Readable } from 'node:stream';
import { type MessagesRequest, promptTokens } from './anthropic.ts';
import { anthropicEvent } from './anthropic-stream.ts';
import { delay } from './delay.ts';
import { estimateTokens } from './openai.ts';
import type { PromptCacheFigures } from './simulated-prompt-cache.ts';

/** The model name `local-chat` answers with. */
const MODEL = 'local-chat';

/** What `local-chat` answers to a request: its text, and whether `max_tokens` cut it. */
export interface LocalAnswer {
  /** A stable id for the prompt. */
  id: string;
  text: string;
  cut: boolean;
  /** What the simulated prompt cache read and wrote for the prompt. */
  cache: PromptCacheFigures;
}

type Json = { type: string; [field: string]: unknown };

/** Anthropic's usage: `input_tokens` is the uncached part of the input only. */
function usageOf(answer: LocalAnswer) {
  return {
    input_tokens: answer.cache.uncached,
    cache_creation_input_tokens: answer.cache.write,
    cache_read_input_tokens: answer.cache.read,
    output_tokens: estimateTokens(answer.text),
  };
}

/** The message answering `request`. */
export function localMessage(answer: LocalAnswer): Json {
  return {
    id: `msg_${answer.id}`,
    type: 'message',
    role: 'assistant',
    model: MODEL,
    content: [{ type: 'text', text: answer.text }],
    stop_reason: answer.cut ? 'max_tokens' : 'end_turn',
    stop_sequence: null,
    usage: usageOf(answer),
  };
}

/**
 * The same message as Anthropic's event stream: `message_start`, one text block delivered a word per
 * `content_block_delta` (after a `ping`), `message_delta` with the stop reason and the output tokens, then
 * `message_stop`; the first event after `latencyMs`. Aborting ends it with `signal.reason`.
 */
export function localMessageStream(answer: LocalAnswer, latencyMs: number, signal?: AbortSignal): Readable {
  const { content: _content, stop_reason, usage, ...head } = localMessage(answer);
  const outputTokens = (usage as { output_tokens: number }).output_tokens;
  async function* events(): AsyncGenerator<string> {
    if (latencyMs > 0) await delay(latencyMs, signal);
    yield anthropicEvent({
      type: 'message_start',
      message: {
        ...head,
        content: [],
        stop_reason: null,
        usage: { ...(usage as object), output_tokens: 1 },
      },
    });
    yield anthropicEvent({
      type: 'content_block_start',
      index: 0,
      content_block: { type: 'text', text: '' },
    });
    yield anthropicEvent({ type: 'ping' });
    for (const word of answer.text.split(/(?<= )/)) {
      yield anthropicEvent({
        type: 'content_block_delta',
        index: 0,
        delta: { type: 'text_delta', text: word },
      });
    }
    yield anthropicEvent({ type: 'content_block_stop', index: 0 });
    yield anthropicEvent({
      type: 'message_delta',
      delta: { stop_reason, stop_sequence: null },
      usage: { output_tokens: outputTokens },
    });
    yield anthropicEvent({ type: 'message_stop' });
  }
  return Readable.from(events(), { objectMode: false });
}

/** What `/v1/messages/count_tokens` answers: the prompt's tokens by the documented estimate. */
export function localCountTokens(request: MessagesRequest): { input_tokens: number } {
  return { input_tokens: promptTokens(request) };
}
