/**
 * Streamed Anthropic messages: the tap a live stream passes through (its bytes unchanged; usage read on
 * the side for the token limits; the whole message rebuilt for the cache), and a cached message replayed
 * as the event stream Anthropic would have sent.
 *
 * @module
 */
import { anthropicErrorEvent } from './anthropic-errors.ts';
import { isObject, type Json } from './context.ts';
import type { ApiError } from './openai.ts';
import { EventTap } from './sse-tap.ts';

/**
 * Sits between a streamed Anthropic message and the client (see {@link EventTap}: the bytes pass
 * unchanged). It reads the usage of `message_start` (input and prompt-cache figures) and of the last
 * `message_delta` (cumulative output), and, when assembling, rebuilds the message of text blocks so it can
 * be cached like a non-streamed one (tool use and thinking are passed on and not rebuilt). The stream is
 * whole at `message_stop`; it ends with an Anthropic `error` event when it is not.
 */
export class AnthropicStreamTap extends EventTap {
  #message: Json | undefined;
  readonly #blocks: Json[] = [];
  #stop: Json = {};

  protected override errorEvent(failure: ApiError): string {
    return anthropicErrorEvent(failure);
  }

  protected override onEvent(name: string | undefined, data: Json): void {
    switch (name ?? data.type) {
      case 'message_start':
        if (isObject(data.message)) {
          this.#message = data.message;
          if (isObject(data.message.usage)) this.addUsage(data.message.usage);
        }
        break;
      case 'message_delta':
        if (isObject(data.usage)) this.addUsage(data.usage);
        if (isObject(data.delta)) this.#stop = data.delta;
        break;
      case 'content_block_start':
        this.#blockStart(data);
        break;
      case 'content_block_delta':
        this.#blockDelta(data);
        break;
      case 'message_stop':
        this.done = true;
        break;
      case 'error':
        this.upstreamError = true;
        this.assemble = false;
        break;
    }
  }

  #blockStart(data: Json): void {
    if (!this.assemble) return;
    const block = data.content_block;
    if (typeof data.index !== 'number' || !isObject(block) || block.type !== 'text') {
      this.assemble = false;
      return;
    }
    this.#blocks[data.index] = { ...block, text: typeof block.text === 'string' ? block.text : '' };
  }

  #blockDelta(data: Json): void {
    if (!this.assemble) return;
    const delta = data.delta;
    const block = typeof data.index === 'number' ? this.#blocks[data.index] : undefined;
    if (
      block === undefined ||
      !isObject(delta) ||
      delta.type !== 'text_delta' ||
      typeof delta.text !== 'string'
    ) {
      this.assemble = false;
      return;
    }
    block.text += delta.text;
  }

  /** The whole message, when the stream ended with `message_stop` and held text blocks only. */
  override completion(): Record<string, unknown> | undefined {
    if (!this.assemble || !this.done || this.#message === undefined) return undefined;
    const content = [...this.#blocks];
    if (content.length === 0 || content.some((b) => b === undefined)) return undefined;
    return {
      ...this.#message,
      content,
      stop_reason: this.#stop.stop_reason ?? null,
      stop_sequence: this.#stop.stop_sequence ?? null,
      usage: { ...this.reported },
    };
  }
}

/** One server-sent event as Anthropic writes it. */
export const anthropicEvent = (data: Json): string =>
  `event: ${data.type as string}\ndata: ${JSON.stringify(data)}\n\n`;

/** A cached message as the event stream a streaming client expects. */
export function* replayMessage(answer: unknown): Generator<string> {
  const message = (isObject(answer) ? answer : {}) as Json;
  const { content, stop_reason, stop_sequence, usage, ...head } = message;
  const u = isObject(usage) ? usage : {};
  yield anthropicEvent({
    type: 'message_start',
    message: {
      ...head,
      content: [],
      stop_reason: null,
      stop_sequence: null,
      usage: { ...u, output_tokens: 0 },
    },
  });
  const blocks = Array.isArray(content) ? content : [];
  for (let index = 0; index < blocks.length; index++) {
    const block = blocks[index] as Json;
    yield anthropicEvent({ type: 'content_block_start', index, content_block: { ...block, text: '' } });
    yield anthropicEvent({
      type: 'content_block_delta',
      index,
      delta: { type: 'text_delta', text: block.text },
    });
    yield anthropicEvent({ type: 'content_block_stop', index });
  }
  yield anthropicEvent({
    type: 'message_delta',
    delta: { stop_reason: stop_reason ?? 'end_turn', stop_sequence: stop_sequence ?? null },
    usage: { output_tokens: u.output_tokens ?? 0 },
  });
  yield anthropicEvent({ type: 'message_stop' });
}
