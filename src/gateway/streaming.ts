/**
 * Streamed chat completions: a cached answer replayed as server-sent events, and the tap a live stream
 * passes through (usage for the token limit, the whole answer rebuilt for the cache).
 *
 * @module
 */
import { type TokenUsage, tokenUsage } from '../tracing/index.ts';
import type { ApiError } from './openai.ts';
import { Relay } from './relay.ts';
import { broken, brokeOff, PieceText, parseEvent, QUOTED_CHARS } from './sse-tap.ts';

/** A cached chat completion as the server-sent events a streaming client expects. */
export function* replayStream(answer: unknown, streamOptions: unknown): Generator<string> {
  const a = answer as {
    id?: string;
    created?: number;
    model?: string;
    choices?: { index?: number; message?: { role?: string; content?: unknown }; finish_reason?: unknown }[];
    usage?: unknown;
  };
  const head = { id: a.id, object: 'chat.completion.chunk', created: a.created, model: a.model };
  const choices = a.choices ?? [];
  yield `data: ${JSON.stringify({ ...head, choices: choices.map((c, index) => ({ index: c.index ?? index, delta: { role: c.message?.role ?? 'assistant', content: c.message?.content ?? '' }, finish_reason: null })) })}\n\n`;
  yield `data: ${JSON.stringify({ ...head, choices: choices.map((c, index) => ({ index: c.index ?? index, delta: {}, finish_reason: c.finish_reason ?? 'stop' })) })}\n\n`;
  if ((streamOptions as { include_usage?: unknown } | undefined)?.include_usage === true) {
    yield `data: ${JSON.stringify({ ...head, choices: [], usage: a.usage })}\n\n`;
  }
  yield 'data: [DONE]\n\n';
}

interface AssembledChoice {
  index: number;
  role: string;
  content: string;
  finish: unknown;
}

/** A `chat.completion.chunk` as far as the tap reads it. */
interface Chunk {
  id?: unknown;
  created?: unknown;
  model?: unknown;
  system_fingerprint?: unknown;
  choices?: { index?: unknown; delta?: Record<string, unknown>; finish_reason?: unknown }[];
  usage?: unknown;
  error?: unknown;
}

/** The JSON object of an event's data; undefined for anything else. */
function parseChunk(json: string): Chunk | undefined {
  if (!json.startsWith('{')) return undefined;
  try {
    return JSON.parse(json) as Chunk;
  } catch {
    return undefined;
  }
}

/**
 * Sits between a streamed chat completion and the client, event by event (see {@link Relay}): it reads
 * `usage` (for the token limit's settlement), drops the usage-only chunk when the gateway asked for it and
 * the client did not, and, when `assemble` is set, rebuilds the whole `chat.completion` so the answer can be
 * cached like a non-streamed one. Anything it cannot rebuild exactly (tool calls, refusals, a stream without
 * `[DONE]`) is passed on untouched and not assembled. A piece of whole events, all passed on, goes to the
 * client as the very bytes that came.
 *
 * A source that fails, sends what is not server-sent events of JSON chunks, or ends before any choice
 * finished (without `[DONE]`) ends the stream with an OpenAI-shaped error event, which the SDKs raise as
 * an API error: the client never gets a silent empty or cut stream. An error event of the upstream's own
 * is passed on as it is.
 */
export class StreamTap extends Relay {
  total: number | undefined;
  usage: TokenUsage | undefined;
  #tail = '';
  readonly #text = new PieceText();
  #done = false;
  /** Some choice carried a `finish_reason`. */
  #finished = false;
  /** The upstream sent an error event of its own. */
  #upstreamError = false;
  /** The error the stream ends with, once it is known. */
  #failure: ApiError | undefined;
  #assemble: boolean;
  #bytes = 0;
  readonly #dropUsage: boolean;
  readonly #maxBytes: number;
  #head: { id?: unknown; created?: unknown; model?: unknown; system_fingerprint?: unknown } = {};
  #usage: unknown;
  readonly #choices = new Map<number, AssembledChoice>();

  constructor(options: { dropUsage: boolean; assemble: boolean; maxBytes: number }) {
    super();
    this.#dropUsage = options.dropUsage;
    this.#assemble = options.assemble;
    this.#maxBytes = options.maxBytes;
  }

  protected override piece(chunk: Buffer | string): void {
    if (this.#failure !== undefined) return;
    const fresh = this.#tail === '' && this.#text.clear;
    let text = this.#tail + this.#text.of(chunk);
    // Server-sent events may end lines with CRLF or CR; the client gets LF. A CR that ends the chunk waits
    // for the next, which may start with its LF.
    const cr = text.includes('\r');
    if (cr) text = text.replace(/\r\n|\r(?!$)/g, '\n');
    const end = text.lastIndexOf('\n\n');
    if (end === -1) {
      this.#tail = text;
      if (text.length > this.#maxBytes) {
        this.#fail(broken(`no event ends within ${this.#maxBytes} bytes`));
        this.#stop();
      }
      return;
    }
    this.#tail = text.slice(end + 2);
    let out = '';
    let all = true;
    for (const event of text.slice(0, end).split('\n\n')) {
      if (this.#event(event)) out += `${event}\n\n`;
      else all = false;
      if (this.#failure !== undefined) break;
    }
    // The common piece (whole events that came in one read, all kept, no character cut at its end) goes on
    // as it came.
    // (An event that fails is not kept, so `all` also says none failed.)
    if (all && fresh && this.#text.clear && !cr && this.#tail === '') this.give(chunk);
    else if (out !== '') this.give(out);
    if (this.#failure !== undefined) this.#stop();
  }

  protected override ended(): void {
    this.#tail += this.#text.end();
    if (this.#failure === undefined && this.#tail !== '') {
      if (this.#event(this.#tail)) this.give(`${this.#tail}\n\n`);
      this.#tail = '';
    }
    if (this.#failure === undefined && !this.#done && !this.#finished && !this.#upstreamError) {
      this.#failure = broken('it ended before the answer was complete');
    }
    if (this.#failure !== undefined) this.give(this.#errorEvent(this.#failure));
  }

  protected override failed(error: unknown): void {
    this.#fail(brokeOff(error));
    this.#stop();
  }

  #errorEvent(failure: ApiError): string {
    return `data: ${JSON.stringify(failure.body)}\n\n`;
  }

  /** The stream is to end with `failure` (the first one found), after the events before it. */
  #fail(failure: ApiError): void {
    if (this.#failure !== undefined) return;
    this.#failure = failure;
    this.#assemble = false;
  }

  /** Stops reading the source and ends the stream with its failure's error event. */
  #stop(): void {
    this.finish(this.#errorEvent(this.#failure!));
  }

  /** Reads one event; false when it is to be dropped. */
  #event(event: string): boolean {
    if (event === '') return false;
    if (this.#assemble) {
      this.#bytes += event.length;
      if (this.#bytes > this.#maxBytes) this.#assemble = false;
    }
    let data: string | undefined;
    if (event.startsWith('data: ') && !event.includes('\n')) data = event.slice(6);
    else {
      const parsed = parseEvent(event);
      if (typeof parsed === 'string') {
        this.#fail(broken(parsed));
        return false;
      }
      data = parsed.data;
    }
    // An event without data (a comment, an `id`) goes on as it is.
    if (data === undefined) return true;
    const json = data.trim();
    if (json === '[DONE]') {
      this.#done = true;
      return true;
    }
    const chunk = parseChunk(json);
    if (chunk === undefined) {
      this.#fail(broken(`an event's data is not a JSON object: ${json.slice(0, QUOTED_CHARS)}`));
      return false;
    }
    if (chunk.error != null) {
      this.#upstreamError = true;
      this.#assemble = false;
      return true;
    }
    if (!this.#finished && Array.isArray(chunk.choices)) {
      for (const c of chunk.choices) if (c?.finish_reason != null) this.#finished = true;
    }
    const usageOnly = chunk.usage != null && Array.isArray(chunk.choices) && chunk.choices.length === 0;
    if (chunk.usage != null) {
      this.usage = tokenUsage(chunk.usage);
      if (this.usage !== undefined) this.total = this.usage.input + this.usage.output;
      this.#usage = chunk.usage;
    }
    if (this.#assemble) this.#collect(chunk);
    return !(usageOnly && this.#dropUsage);
  }

  #collect(chunk: Chunk): void {
    const head = this.#head;
    head.id ??= chunk.id;
    head.created ??= chunk.created;
    head.model ??= chunk.model;
    head.system_fingerprint ??= chunk.system_fingerprint;
    for (const c of chunk.choices ?? []) {
      const index = typeof c.index === 'number' ? c.index : 0;
      let choice = this.#choices.get(index);
      if (choice === undefined) {
        choice = { index, role: 'assistant', content: '', finish: null };
        this.#choices.set(index, choice);
      }
      for (const [field, value] of Object.entries(c.delta ?? {})) {
        if (value == null) continue;
        if (field === 'role' && typeof value === 'string') choice.role = value;
        else if (field === 'content' && typeof value === 'string') choice.content += value;
        // Tool calls, refusals, audio: not rebuilt, so not cached.
        else this.#assemble = false;
      }
      if (c.finish_reason != null) choice.finish = c.finish_reason;
    }
  }

  /** The whole completion, when the stream ended with `[DONE]` and every choice finished. */
  completion(): Record<string, unknown> | undefined {
    const choices = [...this.#choices.values()].sort((a, b) => a.index - b.index);
    if (!this.#assemble || !this.#done || choices.length === 0) return undefined;
    if (choices.some((c) => c.finish === null)) return undefined;
    return {
      id: this.#head.id,
      object: 'chat.completion',
      created: this.#head.created,
      model: this.#head.model,
      ...(this.#head.system_fingerprint == null ? {} : { system_fingerprint: this.#head.system_fingerprint }),
      choices: choices.map((c) => ({
        index: c.index,
        message: { role: c.role, content: c.content },
        logprobs: null,
        finish_reason: c.finish,
      })),
      ...(this.#usage === undefined ? {} : { usage: this.#usage }),
    };
  }
}
