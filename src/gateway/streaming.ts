/**
 * Streamed chat completions: a cached answer replayed as server-sent events, and the tap a live stream
 * passes through (usage for the token limit, the whole answer rebuilt for the cache).
 *
 * @module
 */
import { Transform } from 'node:stream';
import { totalTokens } from './openai.ts';

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
}

/**
 * Sits between a streamed chat completion and the client, event by event (backpressure is the pipe's): it
 * reads `usage` (for the token limit's settlement), drops the usage-only chunk when the gateway asked for it
 * and the client did not, and, when `assemble` is set, rebuilds the whole `chat.completion` so the answer
 * can be cached like a non-streamed one. Anything it cannot rebuild exactly (tool calls, refusals, a stream
 * without `[DONE]`) is passed on untouched and not assembled.
 */
export class StreamTap extends Transform {
  total: number | undefined;
  #tail = '';
  #done = false;
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

  override _transform(chunk: Buffer | string, _encoding: BufferEncoding, callback: () => void): void {
    const text = this.#tail + (typeof chunk === 'string' ? chunk : chunk.toString('utf8'));
    const end = text.lastIndexOf('\n\n');
    if (end === -1) {
      this.#tail = text;
      callback();
      return;
    }
    this.#tail = text.slice(end + 2);
    let out = '';
    for (const event of text.slice(0, end).split('\n\n')) {
      if (this.#event(event)) out += `${event}\n\n`;
    }
    if (out !== '') this.push(out);
    callback();
  }

  override _flush(callback: () => void): void {
    if (this.#tail !== '') {
      if (this.#event(this.#tail)) this.push(this.#tail);
      this.#tail = '';
    }
    callback();
  }

  /** Reads one event; false when it is to be dropped. */
  #event(event: string): boolean {
    if (this.#assemble) {
      this.#bytes += event.length;
      if (this.#bytes > this.#maxBytes) this.#assemble = false;
    }
    const data = event.startsWith('data: ') ? event.slice(6).trim() : undefined;
    if (data === undefined) return true;
    if (data === '[DONE]') {
      this.#done = true;
      return true;
    }
    if (!data.startsWith('{')) return true;
    let chunk: Chunk;
    try {
      chunk = JSON.parse(data);
    } catch {
      // A chunk that is not JSON is passed on untouched; nothing is assembled from such a stream.
      this.#assemble = false;
      return true;
    }
    const usageOnly = chunk.usage != null && Array.isArray(chunk.choices) && chunk.choices.length === 0;
    if (chunk.usage != null) {
      const t = totalTokens(chunk);
      if (t !== undefined) this.total = t;
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
