/**
 * Streamed Anthropic messages: the tap a live stream passes through (its bytes unchanged; usage read on
 * the side for the token limits; the whole message rebuilt for the cache), and a cached message replayed
 * as the event stream Anthropic would have sent.
 *
 * @module
 */
import { type Readable, Transform } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { ClawperfError } from '../errors.ts';
import { totalTokenUsage } from '../tracing/index.ts';
import { anthropicErrorEvent } from './anthropic-errors.ts';
import { errorAnswer } from './error-answers.ts';
import { type ApiError, apiError } from './openai.ts';
import type { ProtocolTap } from './protocol.ts';

/** How much of a bad event an error message quotes. */
const QUOTED_CHARS = 80;

/** A stream that is not Anthropic's server-sent events, as the error the client gets. */
function broken(why: string): ApiError {
  return apiError(502, `the upstream's stream is broken: ${why}`, 'api_error', 'upstream_error');
}

/** The error a client gets when the upstream's stream fails (a reset, a timeout between events). */
function brokeOff(error: unknown): ApiError {
  if (error instanceof ClawperfError) return errorAnswer(error);
  const message = error instanceof Error ? error.message : String(error);
  return apiError(502, `the upstream's stream broke off: ${message}`, 'api_error', 'upstream_error');
}

/** The end of the last whole event in `text` (after its blank line), or -1. */
function lastEventEnd(text: string): number {
  const lf = text.lastIndexOf('\n\n');
  const crlf = text.lastIndexOf('\r\n\r\n');
  return Math.max(lf === -1 ? -1 : lf + 2, crlf === -1 ? -1 : crlf + 4);
}

/** An event's name and data (the data lines joined), or a reason it is not server-sent events. */
function parseEvent(event: string): { name: string | undefined; data: string | undefined } | string {
  let name: string | undefined;
  let data: string | undefined;
  for (const raw of event.split('\n')) {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line === '' || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    const value = colon === -1 ? '' : line.slice(line.charCodeAt(colon + 1) === 32 ? colon + 2 : colon + 1);
    if (field === 'event') name = value;
    else if (field === 'data') data = data === undefined ? value : `${data}\n${value}`;
    else if (field !== 'id' && field !== 'retry')
      return `not server-sent events: ${line.slice(0, QUOTED_CHARS)}`;
  }
  return { name, data };
}

type Json = Record<string, unknown>;

const isObject = (value: unknown): value is Json =>
  value !== null && typeof value === 'object' && !Array.isArray(value);

/**
 * Sits between a streamed Anthropic message and the client. Whole events go on as they come, byte for byte
 * (backpressure is the pipe's). On the side it reads the usage of `message_start` (input and prompt-cache
 * figures) and of the last `message_delta` (cumulative output), and, when `assemble` is set, rebuilds the
 * message of text blocks so it can be cached like a non-streamed one (tool use and thinking are passed on
 * and not rebuilt).
 *
 * A source that fails, sends what is not server-sent events of JSON, or ends before `message_stop` (and
 * without an `error` event of its own) ends the stream with an Anthropic `error` event, which the SDKs
 * raise: the client never gets a silently cut message.
 */
export class AnthropicStreamTap extends Transform implements ProtocolTap {
  total: number | undefined;
  readonly #decoder = new StringDecoder('utf8');
  #tail = '';
  #done = false;
  #upstreamError = false;
  #failure: ApiError | undefined;
  #source: Readable | undefined;
  #assemble: boolean;
  #bytes = 0;
  readonly #maxBytes: number;
  #message: Json | undefined;
  #usage: Json = {};
  readonly #blocks: Json[] = [];
  #stop: Json = {};

  constructor(options: { assemble: boolean; maxBytes: number }) {
    super();
    this.#assemble = options.assemble;
    this.#maxBytes = options.maxBytes;
  }

  relay(source: Readable): this {
    this.#source = source;
    source.on('error', (error) => this.#fail(brokeOff(error)));
    source.pipe(this);
    return this;
  }

  override _transform(chunk: Buffer | string, _encoding: BufferEncoding, callback: () => void): void {
    if (this.#failure !== undefined) {
      callback();
      return;
    }
    const text = this.#tail + (typeof chunk === 'string' ? chunk : this.#decoder.write(chunk));
    const end = lastEventEnd(text);
    if (end === -1) {
      this.#tail = text;
      if (text.length > this.#maxBytes) this.#fail(broken(`no event ends within ${this.#maxBytes} bytes`));
      callback();
      return;
    }
    this.#tail = text.slice(end);
    const whole = text.slice(0, end);
    for (const event of whole.split(/\r?\n\r?\n/)) {
      if (event !== '') this.#event(event);
      if (this.#failure !== undefined) {
        callback();
        return;
      }
    }
    this.push(whole);
    callback();
  }

  override _flush(callback: () => void): void {
    this.#tail += this.#decoder.end();
    if (this.#failure === undefined && this.#tail.trim() !== '') {
      this.#event(this.#tail);
      if (this.#failure === undefined) this.push(this.#tail);
    }
    if (this.#failure === undefined && !this.#done && !this.#upstreamError) {
      this.#failure = broken('it ended before the message was complete');
    }
    if (this.#failure !== undefined) this.push(anthropicErrorEvent(this.#failure));
    callback();
  }

  #fail(failure: ApiError): void {
    if (this.#failure !== undefined || this.destroyed) return;
    this.#failure = failure;
    this.#assemble = false;
    if (this.#source !== undefined) {
      this.#source.unpipe(this);
      this.#source.destroy();
    }
    if (!this.writableEnded) this.end();
  }

  /** Reads one event for usage and the rebuilt message. */
  #event(text: string): void {
    if (this.#assemble) {
      this.#bytes += text.length;
      if (this.#bytes > this.#maxBytes) this.#assemble = false;
    }
    const event = parseEvent(text);
    if (typeof event === 'string') {
      this.#fail(broken(event));
      return;
    }
    if (event.data === undefined) return;
    let data: unknown;
    try {
      data = JSON.parse(event.data);
    } catch {
      this.#fail(broken(`an event's data is not JSON: ${event.data.slice(0, QUOTED_CHARS)}`));
      return;
    }
    if (!isObject(data)) return;
    switch (event.name ?? data.type) {
      case 'message_start':
        if (isObject(data.message)) {
          this.#message = data.message;
          if (isObject(data.message.usage)) this.#addUsage(data.message.usage);
        }
        break;
      case 'message_delta':
        if (isObject(data.usage)) this.#addUsage(data.usage);
        if (isObject(data.delta)) this.#stop = data.delta;
        break;
      case 'content_block_start':
        this.#blockStart(data);
        break;
      case 'content_block_delta':
        this.#blockDelta(data);
        break;
      case 'message_stop':
        this.#done = true;
        break;
      case 'error':
        this.#upstreamError = true;
        this.#assemble = false;
        break;
    }
  }

  /** Usage figures are cumulative: a later event's figure replaces the earlier one. */
  #addUsage(usage: Json): void {
    for (const [field, value] of Object.entries(usage)) if (value !== null) this.#usage[field] = value;
    this.total = totalTokenUsage(this.#usage);
  }

  #blockStart(data: Json): void {
    if (!this.#assemble) return;
    const block = data.content_block;
    if (typeof data.index !== 'number' || !isObject(block) || block.type !== 'text') {
      this.#assemble = false;
      return;
    }
    this.#blocks[data.index] = { ...block, text: typeof block.text === 'string' ? block.text : '' };
  }

  #blockDelta(data: Json): void {
    if (!this.#assemble) return;
    const delta = data.delta;
    const block = typeof data.index === 'number' ? this.#blocks[data.index] : undefined;
    if (
      block === undefined ||
      !isObject(delta) ||
      delta.type !== 'text_delta' ||
      typeof delta.text !== 'string'
    ) {
      this.#assemble = false;
      return;
    }
    block.text += delta.text;
  }

  /** The whole message, when the stream ended with `message_stop` and held text blocks only. */
  completion(): Record<string, unknown> | undefined {
    if (!this.#assemble || !this.#done || this.#message === undefined) return undefined;
    const content = [...this.#blocks];
    if (content.length === 0 || content.some((b) => b === undefined)) return undefined;
    return {
      ...this.#message,
      content,
      stop_reason: this.#stop.stop_reason ?? null,
      stop_sequence: this.#stop.stop_sequence ?? null,
      usage: { ...this.#usage },
    };
  }
}

/** One server-sent event as Anthropic writes it. */
const sse = (data: Json): string => `event: ${data.type as string}\ndata: ${JSON.stringify(data)}\n\n`;

/** A cached message as the event stream a streaming client expects. */
export function* replayMessage(answer: unknown): Generator<string> {
  const message = (isObject(answer) ? answer : {}) as Json;
  const { content, stop_reason, stop_sequence, usage, ...head } = message;
  const u = isObject(usage) ? usage : {};
  yield sse({
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
    yield sse({ type: 'content_block_start', index, content_block: { ...block, text: '' } });
    yield sse({ type: 'content_block_delta', index, delta: { type: 'text_delta', text: block.text } });
    yield sse({ type: 'content_block_stop', index });
  }
  yield sse({
    type: 'message_delta',
    delta: { stop_reason: stop_reason ?? 'end_turn', stop_sequence: stop_sequence ?? null },
    usage: { output_tokens: u.output_tokens ?? 0 },
  });
  yield sse({ type: 'message_stop' });
}
