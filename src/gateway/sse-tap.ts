/**
 * The tap of a typed event stream (Anthropic's messages, OpenAI's Responses): whole events go to the client
 * as they came, byte for byte (at the client's pace: see {@link Relay}), while a subclass reads each event
 * on the side for usage and to rebuild the answer for the cache. A source that fails, sends what is not
 * server-sent events of JSON, or ends before the subclass saw its last event (and without an error event of
 * its own) ends the stream with the API's error event, which the SDKs raise: the client never gets a
 * silently cut answer.
 *
 * @module
 */
import { StringDecoder } from 'node:string_decoder';
import { ClawperfError } from '../errors.ts';
import { type TokenUsage, tokenUsage } from '../tracing/index.ts';
import { isObject, type Json } from './context.ts';
import { errorAnswer } from './error-answers.ts';
import { type ApiError, apiError } from './openai.ts';
import type { ProtocolTap } from './protocol.ts';
import { Relay } from './relay.ts';

/** How much of a bad event an error message quotes. */
export const QUOTED_CHARS = 80;

/** A stream that is not server-sent events of JSON, as the error the client gets. */
export function broken(why: string): ApiError {
  return apiError(502, `the upstream's stream is broken: ${why}`, 'server_error', 'upstream_error');
}

/** The error a client gets when the upstream's stream fails (a reset, a timeout between events). */
export function brokeOff(error: unknown): ApiError {
  if (error instanceof ClawperfError) return errorAnswer(error);
  const message = error instanceof Error ? error.message : String(error);
  return apiError(502, `the upstream's stream broke off: ${message}`, 'server_error', 'upstream_error');
}

/**
 * The text of a stream's pieces as they are read. A character split between two reads waits in the decoder
 * for its other bytes; a piece that ends in a newline (the usual one: whole events) while nothing waits
 * needs no decoder.
 */
export class PieceText {
  readonly #decoder = new StringDecoder('utf8');
  /** The decoder may hold the first bytes of a character split between reads. */
  #held = false;

  /** Nothing waits from the pieces before: the next piece's text is its bytes' alone. */
  get clear(): boolean {
    return !this.#held;
  }

  of(chunk: Buffer | string): string {
    if (typeof chunk === 'string') return chunk;
    if (!this.#held && chunk[chunk.length - 1] === 0x0a) return chunk.toString('utf8');
    this.#held = chunk.length > 0 && chunk[chunk.length - 1]! >= 0x80;
    return this.#decoder.write(chunk);
  }

  /** What is left when the stream ends (a cut character as U+FFFD). */
  end(): string {
    return this.#decoder.end();
  }
}

/** The end of the last whole event in `text` (after its blank line), or -1. */
function lastEventEnd(text: string): number {
  const lf = text.lastIndexOf('\n\n');
  const crlf = text.lastIndexOf('\r\n\r\n');
  return Math.max(lf === -1 ? -1 : lf + 2, crlf === -1 ? -1 : crlf + 4);
}

/** An event's name and data (its data lines joined), or why it is not server-sent events. */
export function parseEvent(event: string): { name: string | undefined; data: string | undefined } | string {
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

/** What a subclass gives the tap. */
export interface EventTapOptions {
  /** Rebuild the answer for the cache. */
  assemble: boolean;
  /** The most bytes an event may take, and the answer rebuilt. */
  maxBytes: number;
}

export abstract class EventTap extends Relay implements ProtocolTap {
  /** The answer's usage, once an event reported it. */
  usage: TokenUsage | undefined;
  /** The usage object as reported so far: later figures replace earlier ones (they are cumulative). */
  protected readonly reported: Json = {};
  /** The stream reached its last event. */
  protected done = false;
  /** The upstream sent an error event of its own. */
  protected upstreamError = false;
  /** Still rebuilding the answer for the cache. */
  protected assemble: boolean;
  readonly #text = new PieceText();
  readonly #maxBytes: number;
  #tail = '';
  #bytes = 0;
  #failure: ApiError | undefined;

  constructor(options: EventTapOptions) {
    super();
    this.assemble = options.assemble;
    this.#maxBytes = options.maxBytes;
  }

  /** Tokens the stream used, once its usage was seen. */
  get total(): number | undefined {
    return this.usage === undefined ? undefined : this.usage.input + this.usage.output;
  }

  /** Reads one event of the stream: its name (or its data's `type`) and its data. */
  protected abstract onEvent(name: string | undefined, data: Json): void;

  /** The event that ends the stream with `failure`, in the API's shape. */
  protected abstract errorEvent(failure: ApiError): string;

  /** The whole answer rebuilt from the stream, when it could be rebuilt exactly. */
  abstract completion(): Record<string, unknown> | undefined;

  /** Adds reported usage figures. */
  protected addUsage(usage: Json): void {
    for (const [field, value] of Object.entries(usage)) if (value !== null) this.reported[field] = value;
    this.usage = tokenUsage(this.reported);
  }

  protected override piece(chunk: Buffer | string): void {
    if (this.#failure !== undefined) return;
    const fresh = this.#tail === '' && this.#text.clear;
    const text = this.#tail + this.#text.of(chunk);
    const end = lastEventEnd(text);
    if (end === -1) {
      this.#tail = text;
      if (text.length > this.#maxBytes) this.#fail(broken(`no event ends within ${this.#maxBytes} bytes`));
      return;
    }
    this.#tail = text.slice(end);
    const whole = text.slice(0, end);
    for (const event of whole.split(/\r?\n\r?\n/)) {
      if (event !== '') this.#event(event);
      // A failure ended the stream with its error event, without this piece.
      if (this.#failure !== undefined) return;
    }
    // The common piece (whole events that came in one read) goes on as the very bytes that came.
    this.give(fresh && this.#text.clear && this.#tail === '' ? chunk : whole);
  }

  protected override ended(): void {
    this.#tail += this.#text.end();
    if (this.#failure === undefined && this.#tail.trim() !== '') {
      this.#event(this.#tail);
      if (this.#failure === undefined) this.give(this.#tail);
    }
    if (this.#failure === undefined && !this.done && !this.upstreamError) {
      this.#failure = broken('it ended before the answer was complete');
    }
    if (this.#failure !== undefined) this.give(this.errorEvent(this.#failure));
  }

  protected override failed(error: unknown): void {
    this.#fail(brokeOff(error));
  }

  /** Ends the stream with `failure` at once, and stops reading the source. */
  #fail(failure: ApiError): void {
    if (this.#failure !== undefined) return;
    this.#failure = failure;
    this.assemble = false;
    this.finish(this.errorEvent(failure));
  }

  #event(text: string): void {
    if (this.assemble) {
      this.#bytes += text.length;
      if (this.#bytes > this.#maxBytes) this.assemble = false;
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
    if (isObject(data)) this.onEvent(event.name, data);
  }
}
