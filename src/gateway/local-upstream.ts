/**
 * The built-in LOCAL models, served in process so `clawperf gateway` works with nothing else running.
 * They are not language models: `local-embed` hashes character n-grams into a vector, and `local-chat`
 * answers with text derived from the prompt after a configured latency. Both are deterministic.
 *
 * @module
 */
import { Readable } from 'node:stream';
import { delay } from './delay.ts';
import { type ChatRequest, type ChatUsage, contentText, estimateTokens } from './openai.ts';

/** Name of the local embedding model. */
export const LOCAL_EMBED_MODEL = 'local-embed';
/** Name of the local chat model. */
export const LOCAL_CHAT_MODEL = 'local-chat';
/** The models served locally. */
export const LOCAL_MODELS: readonly string[] = [LOCAL_EMBED_MODEL, LOCAL_CHAT_MODEL];
/** Vector length of `local-embed` when the request gives no `dimensions`. @default 256 */
export const DEFAULT_LOCAL_EMBED_DIMENSIONS = 256;
/** Lengths of the character n-grams hashed into a `local-embed` vector. */
const NGRAMS = [2, 3, 4] as const;
/** Owner reported for the local models in `/v1/models`. */
export const LOCAL_OWNER = 'clawperf-local';

/** FNV-1a, 32 bits, over UTF-16 code units. */
function fnv1a(text: string, start: number, end: number): number {
  let h = 0x811c9dc5;
  for (let i = start; i < end; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/**
 * A deterministic embedding of `input` by feature hashing: every character 2-, 3- and 4-gram of the
 * lower-cased text (padded with spaces) adds ±1 to one of `dimensions` buckets (the hash picks bucket and
 * sign), and the vector is L2-normalised. Texts sharing many n-grams get vectors with a high cosine
 * similarity. A token array is embedded as its space-joined ids.
 */
export function localEmbedding(
  input: string | readonly number[],
  dimensions = DEFAULT_LOCAL_EMBED_DIMENSIONS,
): number[] {
  const text = ` ${(typeof input === 'string' ? input : input.join(' ')).toLowerCase()} `;
  const vector = new Float64Array(dimensions);
  for (const n of NGRAMS) {
    for (let i = 0; i + n <= text.length; i++) {
      const h = fnv1a(text, i, i + n);
      vector[h % dimensions]! += h & 0x80000000 ? -1 : 1;
    }
  }
  let norm = 0;
  for (let i = 0; i < dimensions; i++) norm += vector[i]! * vector[i]!;
  norm = Math.sqrt(norm);
  const out = new Array<number>(dimensions);
  for (let i = 0; i < dimensions; i++) out[i] = norm === 0 ? 0 : vector[i]! / norm;
  return out;
}

/** Tokens of one embedding input by the documented estimate (a token array counts its length). */
export function inputTokens(input: string | readonly number[]): number {
  return typeof input === 'string' ? estimateTokens(input) : input.length;
}

const WORDS = [
  'latency',
  'cache',
  'token',
  'stream',
  'batch',
  'limit',
  'queue',
  'metric',
  'trace',
  'gateway',
  'upstream',
  'model',
  'vector',
  'signal',
  'budget',
  'window',
  'answer',
  'request',
  'prompt',
  'result',
];

/** The deterministic answer text of `local-chat` for a prompt, at most `maxTokens` tokens long. */
export function localChatText(prompt: string, maxTokens?: number): string {
  let h = fnv1a(prompt, 0, prompt.length);
  const words: string[] = [];
  for (let i = 0; i < 12; i++) {
    words.push(WORDS[h % WORDS.length]!);
    h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d) >>> 0;
  }
  const quoted = prompt.length > 60 ? `${prompt.slice(0, 57)}...` : prompt;
  const text = `This is the local-chat model (a simulation, not a language model) answering "${quoted}": ${words.join(' ')}.`;
  if (maxTokens === undefined) return text;
  return text.slice(0, maxTokens * 4);
}

function promptOf(request: ChatRequest): string {
  for (let i = request.messages.length - 1; i >= 0; i--) {
    const m = request.messages[i]!;
    if (m.role === 'user') return contentText(m.content);
  }
  return contentText(request.messages[request.messages.length - 1]?.content);
}

function chatUsage(request: ChatRequest, text: string): ChatUsage {
  const prompt = estimateTokens(request.messages.map((m) => `${m.role}${contentText(m.content)}`).join(''));
  const completion = estimateTokens(text);
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

function completionId(request: ChatRequest): string {
  const prompt = promptOf(request);
  return `chatcmpl-local-${fnv1a(prompt, 0, prompt.length).toString(16)}`;
}

/** Options of {@link LocalUpstream}. */
export interface LocalUpstreamOptions {
  /** Latency of `local-chat` before its answer (or first chunk), ms. */
  chatLatencyMs: number;
}

/** The local models behind the same calls the gateway makes to a remote upstream. */
export class LocalUpstream {
  readonly statsCounters: readonly string[] = ['embedCalls', 'embedInputs', 'chatCalls', 'chatStreams'];
  readonly #latencyMs: number;
  #embedCalls = 0;
  #embedInputs = 0;
  #chatCalls = 0;
  #chatStreams = 0;

  constructor(options: LocalUpstreamOptions) {
    this.#latencyMs = options.chatLatencyMs;
  }

  /** Embeds a batch of inputs, in order, with the estimated tokens of each. */
  embed(
    inputs: readonly (string | readonly number[])[],
    dimensions?: number,
  ): { vectors: number[][]; tokens: number[] } {
    this.#embedCalls++;
    this.#embedInputs += inputs.length;
    return {
      vectors: inputs.map((input) => localEmbedding(input, dimensions)),
      tokens: inputs.map(inputTokens),
    };
  }

  /** A chat completion in OpenAI's shape, after the configured latency. Rejects with `signal.reason` on abort. */
  async chat(request: ChatRequest, signal?: AbortSignal): Promise<Record<string, unknown>> {
    this.#chatCalls++;
    if (this.#latencyMs > 0) await delay(this.#latencyMs, signal);
    const text = localChatText(promptOf(request), request.maxTokens);
    return {
      id: completionId(request),
      object: 'chat.completion',
      created: Math.floor(Date.now() / 1000),
      model: LOCAL_CHAT_MODEL,
      system_fingerprint: LOCAL_OWNER,
      choices: [
        { index: 0, message: { role: 'assistant', content: text }, logprobs: null, finish_reason: 'stop' },
      ],
      usage: chatUsage(request, text),
    };
  }

  /**
   * The same answer as a stream of server-sent events (`chat.completion.chunk` objects, one per word, then
   * `data: [DONE]`), the first after the configured latency. With `stream_options.include_usage` a last
   * chunk carries `usage`. Aborting ends the stream with `signal.reason`.
   */
  chatStream(request: ChatRequest, signal?: AbortSignal): Readable {
    this.#chatStreams++;
    const latencyMs = this.#latencyMs;
    const id = completionId(request);
    const created = Math.floor(Date.now() / 1000);
    const text = localChatText(promptOf(request), request.maxTokens);
    const options = request.body.stream_options as { include_usage?: unknown } | undefined;
    const includeUsage = options?.include_usage === true;
    const usage = chatUsage(request, text);
    const chunk = (delta: object, finish: string | null, extra: object = {}) =>
      `data: ${JSON.stringify({
        id,
        object: 'chat.completion.chunk',
        created,
        model: LOCAL_CHAT_MODEL,
        system_fingerprint: LOCAL_OWNER,
        choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
        ...extra,
      })}\n\n`;
    async function* events(): AsyncGenerator<string> {
      if (latencyMs > 0) await delay(latencyMs, signal);
      yield chunk({ role: 'assistant', content: '' }, null);
      const words = text.split(/(?<= )/);
      for (const word of words) yield chunk({ content: word }, null);
      yield chunk({}, 'stop');
      if (includeUsage) {
        yield `data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created, model: LOCAL_CHAT_MODEL, choices: [], usage })}\n\n`;
      }
      yield 'data: [DONE]\n\n';
    }
    return Readable.from(events(), { objectMode: false });
  }

  stats(): Record<string, number> {
    return {
      embedCalls: this.#embedCalls,
      embedInputs: this.#embedInputs,
      chatCalls: this.#chatCalls,
      chatStreams: this.#chatStreams,
    };
  }
}
