/**
 * Streamed OpenAI Responses: the tap a live stream passes through (its bytes unchanged; usage and the
 * response id read on the side; the whole response taken from `response.completed` for the cache), and a
 * response replayed as the typed events a streaming client expects.
 *
 * @module
 */

import { isObject, type Json } from './context.ts';
import type { ApiError } from './openai.ts';
import { EventTap, type EventTapOptions } from './sse-tap.ts';

/**
 * Sits between a streamed response and the client (see {@link EventTap}: the bytes pass unchanged). It
 * tells `onId` the response's id at `response.created` (so the gateway knows whose it is before the client
 * can ask for it), reads the usage of the terminal event, and keeps the response `response.completed`
 * carries for the cache. The stream is whole at `response.completed`, `response.incomplete` or
 * `response.failed`; it ends with an `error` event (which the SDK raises) when it is not.
 */
export class ResponsesStreamTap extends EventTap {
  readonly #onId: ((id: string) => void) | undefined;
  #completed: Json | undefined;
  #sequence = -1;

  constructor(options: EventTapOptions & { onId?: (id: string) => void }) {
    super(options);
    this.#onId = options.onId;
  }

  protected override errorEvent(failure: ApiError): string {
    const { message, type, code, param } = failure.body.error;
    const data = {
      type: 'error',
      sequence_number: this.#sequence + 1,
      code: code ?? type,
      message,
      param,
      // The OpenAI SDKs raise an event carrying `error`.
      error: failure.body.error,
    };
    return `event: error\ndata: ${JSON.stringify(data)}\n\n`;
  }

  protected override onEvent(name: string | undefined, data: Json): void {
    if (typeof data.sequence_number === 'number') this.#sequence = data.sequence_number;
    const response = isObject(data.response) ? data.response : undefined;
    switch (name ?? data.type) {
      case 'response.created':
        if (typeof response?.id === 'string') this.#onId?.(response.id);
        break;
      case 'response.completed':
        this.done = true;
        if (response !== undefined) {
          if (isObject(response.usage)) this.addUsage(response.usage);
          this.#completed = response;
        }
        break;
      case 'response.incomplete':
      case 'response.failed':
        this.done = true;
        this.assemble = false;
        if (response !== undefined && isObject(response.usage)) this.addUsage(response.usage);
        break;
      case 'error':
        this.upstreamError = true;
        this.assemble = false;
        break;
    }
  }

  override completion(): Record<string, unknown> | undefined {
    if (!this.assemble || this.#completed?.status !== 'completed') return undefined;
    return this.#completed;
  }
}

/** A response as the typed server-sent events of its stream, numbered from 0. */
export function* replayResponse(answer: unknown): Generator<string> {
  const response = (isObject(answer) ? answer : {}) as Json;
  let sequence = 0;
  const event = (type: string, data: Json) =>
    `event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: sequence++, ...data })}\n\n`;
  const pending = { ...response, status: 'in_progress', output: [], usage: null };
  yield event('response.created', { response: pending });
  yield event('response.in_progress', { response: pending });
  const output = Array.isArray(response.output) ? (response.output as Json[]) : [];
  for (let outputIndex = 0; outputIndex < output.length; outputIndex++) {
    const item = output[outputIndex]!;
    const isMessage = item.type === 'message' && Array.isArray(item.content);
    yield event('response.output_item.added', {
      output_index: outputIndex,
      item: isMessage ? { ...item, status: 'in_progress', content: [] } : item,
    });
    if (isMessage) {
      const parts = item.content as Json[];
      for (let contentIndex = 0; contentIndex < parts.length; contentIndex++) {
        const part = parts[contentIndex]!;
        const at = { item_id: item.id, output_index: outputIndex, content_index: contentIndex };
        if (part.type === 'output_text') {
          yield event('response.content_part.added', { ...at, part: { ...part, text: '' } });
          yield event('response.output_text.delta', { ...at, delta: part.text, logprobs: [] });
          yield event('response.output_text.done', { ...at, text: part.text, logprobs: [] });
        } else {
          yield event('response.content_part.added', { ...at, part });
        }
        yield event('response.content_part.done', { ...at, part });
      }
    }
    yield event('response.output_item.done', { output_index: outputIndex, item });
  }
  // The terminal event says how the response ended.
  const terminal =
    response.status === 'incomplete'
      ? 'response.incomplete'
      : response.status === 'failed'
        ? 'response.failed'
        : 'response.completed';
  yield event(terminal, { response });
}
