/**
 * The built-in LOCAL models, served in process so `clawperf gateway` works with nothing else running.
 * They are not language models: `local-embed` hashes character n-grams into a vector, and `local-chat`
 * answers with text derived from the prompt after a configured latency. Both are deterministic.
 *
 * @module
 */
import { Readable } from 'node:stream';
import { lastUserText, type MessagesRequest, parseMessagesRequest } from './anthropic.ts';
import { delay } from './delay.ts';
import { type LocalAnswer, localCountTokens, localMessage, localMessageStream } from './local-anthropic.ts';
import { LOCAL_PREVIOUS_RESPONSE_ERROR, localResponse, localResponseStream } from './local-responses.ts';
import {
  CHARS_PER_TOKEN,
  type ChatRequest,
  contentText,
  estimateTokens,
  parseChatRequest,
} from './openai.ts';
import { promptBlocks } from './prompt-blocks.ts';
import { lastUserInput, parseResponsesRequest, type ResponsesRequest } from './responses.ts';
import { cachedPart, type PromptCacheFigures, SimulatedPromptCache } from './simulated-prompt-cache.ts';
import type {
  CallOptions,
  Upstream,
  UpstreamIdentity,
  UpstreamReply,
  UpstreamRequest,
} from './upstream-interface.ts';

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
/** Provider recorded on spans and metrics of calls the local models answer. */
export const LOCAL_PROVIDER = 'clawperf.local';

const LOCAL_IDENTITY: UpstreamIdentity = Object.freeze({ provider: LOCAL_PROVIDER });
const JSON_HEADERS = Object.freeze({ 'content-type': 'application/json' });
const SSE_HEADERS = Object.freeze({ 'content-type': 'text/event-stream' });

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

/**
 * The deterministic answer text of `local-chat` for a prompt: the `choice`-th of the `n` a request asks for
 * (each choice words its answer differently), cut to at most `maxTokens` tokens by the project's estimate
 * ({@link estimateTokens}: 4 characters a token).
 */
export function localChatText(prompt: string, maxTokens?: number, choice = 0): string {
  return cutTo(fullChatText(prompt, choice), maxTokens);
}

/** `text` cut to at most `maxTokens` tokens by the estimate. */
function cutTo(text: string, maxTokens: number | undefined): string {
  if (maxTokens === undefined || text.length <= maxTokens * CHARS_PER_TOKEN) return text;
  const cut = text.slice(0, maxTokens * CHARS_PER_TOKEN);
  // Never half a surrogate pair: the cut then keeps one character less.
  return /[\uD800-\uDBFF]$/.test(cut) ? cut.slice(0, -1) : cut;
}

/** The whole answer, before any `max_tokens` cut. */
function fullChatText(prompt: string, choice: number): string {
  let h = fnv1a(prompt, 0, prompt.length);
  if (choice > 0) h = Math.imul(h ^ choice, 0x9e3779b1) >>> 0;
  const words: string[] = [];
  for (let i = 0; i < 12; i++) {
    words.push(WORDS[h % WORDS.length]!);
    h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d) >>> 0;
  }
  const quoted = prompt.length > 60 ? `${prompt.slice(0, 57)}...` : prompt;
  return `This is the local-chat model (a simulation, not a language model) answering "${quoted}": ${words.join(' ')}.`;
}

/** One choice of a `local-chat` answer. */
interface LocalChoice {
  text: string;
  /** `'length'` when `max_tokens` cut the answer, else `'stop'`. */
  finish: 'stop' | 'length';
}

/** The `n` choices (`n` from the request, 1 by default) of the answer to `request`. */
function localChoices(request: ChatRequest): LocalChoice[] {
  const prompt = promptOf(request);
  const n = typeof request.body.n === 'number' ? request.body.n : 1;
  return Array.from({ length: n }, (_, i) => {
    const full = fullChatText(prompt, i);
    const text = cutTo(full, request.maxTokens);
    return { text, finish: text.length < full.length ? 'length' : 'stop' };
  });
}

function promptOf(request: ChatRequest): string {
  for (let i = request.messages.length - 1; i >= 0; i--) {
    const m = request.messages[i]!;
    if (m.role === 'user') return contentText(m.content);
  }
  return contentText(request.messages[request.messages.length - 1]?.content);
}

/** The prompt counted once, and every choice's completion. */
/** The prompt counted once, the part of it the simulated prompt cache read, and every choice. */
function chatUsage(
  request: ChatRequest,
  choices: readonly LocalChoice[],
  cache: PromptCacheFigures | undefined,
) {
  const prompt = estimateTokens(request.messages.map((m) => `${m.role}${contentText(m.content)}`).join(''));
  let completion = 0;
  for (const choice of choices) completion += estimateTokens(choice.text);
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: prompt + completion,
    prompt_tokens_details: { cached_tokens: cache === undefined ? 0 : cachedPart(cache, prompt) },
  };
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

/** The local models behind the same {@link Upstream} interface as a remote upstream. */
export class LocalUpstream implements Upstream {
  readonly statsCounters: readonly string[] = ['embedCalls', 'embedInputs', 'chatCalls', 'chatStreams'];
  readonly #latencyMs: number;
  /** A simulation of a provider's prompt cache, so its accounting can be seen with the local model. */
  readonly #promptCache = new SimulatedPromptCache();
  #embedCalls = 0;
  #embedInputs = 0;
  #chatCalls = 0;
  #chatStreams = 0;

  constructor(options: LocalUpstreamOptions) {
    this.#latencyMs = options.chatLatencyMs;
  }

  identity(): UpstreamIdentity {
    return LOCAL_IDENTITY;
  }

  /**
   * Answers `request` as an OpenAI-compatible server would (embeddings, a chat completion or its stream),
   * or as Anthropic would (a message, its stream, a token count).
   */
  async call(request: UpstreamRequest, options: CallOptions = {}): Promise<UpstreamReply> {
    if (request.api === 'anthropic') return this.#anthropic(request, options.signal);
    if (request.operation === 'responses') return this.#responses(request, options.signal);
    if (request.operation === 'embeddings') {
      const body = request.body as { input: (string | number[])[]; dimensions?: number };
      const { vectors, tokens } = this.embed(body.input, body.dimensions);
      let total = 0;
      for (const t of tokens) total += t;
      const json = {
        object: 'list',
        model: request.model,
        data: vectors.map((embedding, index) => ({ object: 'embedding', index, embedding })),
        usage: { prompt_tokens: total, total_tokens: total },
      };
      return { status: 200, headers: JSON_HEADERS, json, stream: undefined };
    }
    // The route validated the body; parsing it again is what a separate server would do.
    const chat = parseChatRequest(request.body) as ChatRequest;
    const cached = this.#promptCache.openai(promptBlocks('openai', chat.body));
    if (request.stream) {
      return {
        status: 200,
        headers: SSE_HEADERS,
        json: undefined,
        stream: this.chatStream(chat, options.signal, cached),
      };
    }
    return {
      status: 200,
      headers: JSON_HEADERS,
      json: await this.chat(chat, options.signal, cached),
      stream: undefined,
    };
  }

  async #responses(request: UpstreamRequest, signal: AbortSignal | undefined): Promise<UpstreamReply> {
    const responses = parseResponsesRequest(request.body) as ResponsesRequest;
    if (responses.previousResponseId !== undefined) {
      return { status: 400, headers: JSON_HEADERS, json: LOCAL_PREVIOUS_RESPONSE_ERROR, stream: undefined };
    }
    const cache = this.#promptCache.openai(promptBlocks('openai', responses.body));
    const response = localResponse(
      responses,
      this.#answer(lastUserInput(responses), responses.maxOutputTokens, cache),
    );
    if (request.stream) {
      this.#chatStreams++;
      const stream = localResponseStream(response, this.#latencyMs, signal);
      return { status: 200, headers: SSE_HEADERS, json: undefined, stream };
    }
    this.#chatCalls++;
    if (this.#latencyMs > 0) await delay(this.#latencyMs, signal);
    return { status: 200, headers: JSON_HEADERS, json: response, stream: undefined };
  }

  /** The answer to `prompt`, cut to `maxTokens`, with a stable id. */
  #answer(prompt: string, maxTokens: number | undefined, cache: PromptCacheFigures): LocalAnswer {
    const text = localChatText(prompt, maxTokens);
    return {
      id: `local_${fnv1a(prompt, 0, prompt.length).toString(16)}`,
      text,
      cut: text.length < localChatText(prompt).length,
      cache,
    };
  }

  async #anthropic(request: UpstreamRequest, signal: AbortSignal | undefined): Promise<UpstreamReply> {
    // The route validated the body; parsing it again is what a separate server would do.
    const messages = parseMessagesRequest(request.body, {
      countTokens: request.operation === 'count_tokens',
    }) as MessagesRequest;
    if (request.operation === 'count_tokens') {
      return { status: 200, headers: JSON_HEADERS, json: localCountTokens(messages), stream: undefined };
    }
    const cache = this.#promptCache.anthropic(promptBlocks('anthropic', messages.body));
    const answer = this.#answer(lastUserText(messages), messages.maxTokens, cache);
    if (request.stream) {
      this.#chatStreams++;
      const stream = localMessageStream(answer, this.#latencyMs, signal);
      return { status: 200, headers: SSE_HEADERS, json: undefined, stream };
    }
    this.#chatCalls++;
    if (this.#latencyMs > 0) await delay(this.#latencyMs, signal);
    return { status: 200, headers: JSON_HEADERS, json: localMessage(answer), stream: undefined };
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
  async chat(
    request: ChatRequest,
    signal?: AbortSignal,
    cache?: PromptCacheFigures,
  ): Promise<Record<string, unknown>> {
    this.#chatCalls++;
    if (this.#latencyMs > 0) await delay(this.#latencyMs, signal);
    const choices = localChoices(request);
    return {
      id: completionId(request),
      object: 'chat.completion',
      created: Math.floor(Date.now() / 1000),
      model: LOCAL_CHAT_MODEL,
      system_fingerprint: LOCAL_OWNER,
      choices: choices.map((c, index) => ({
        index,
        message: { role: 'assistant', content: c.text },
        logprobs: null,
        finish_reason: c.finish,
      })),
      usage: chatUsage(request, choices, cache),
    };
  }

  /**
   * The same answer as a stream of server-sent events (`chat.completion.chunk` objects, one per word, the
   * words of the `n` choices interleaved and each chunk naming its choice's `index`, then a chunk per choice
   * with its `finish_reason`, then `data: [DONE]`), the first after the configured latency. With
   * `stream_options.include_usage` a last chunk carries `usage`. Aborting ends the stream with
   * `signal.reason`.
   */
  chatStream(request: ChatRequest, signal?: AbortSignal, cache?: PromptCacheFigures): Readable {
    this.#chatStreams++;
    const latencyMs = this.#latencyMs;
    const id = completionId(request);
    const created = Math.floor(Date.now() / 1000);
    const choices = localChoices(request);
    const options = request.body.stream_options as { include_usage?: unknown } | undefined;
    const includeUsage = options?.include_usage === true;
    const usage = chatUsage(request, choices, cache);
    const chunk = (index: number, delta: object, finish: string | null) =>
      `data: ${JSON.stringify({
        id,
        object: 'chat.completion.chunk',
        created,
        model: LOCAL_CHAT_MODEL,
        system_fingerprint: LOCAL_OWNER,
        choices: [{ index, delta, logprobs: null, finish_reason: finish }],
      })}\n\n`;
    async function* events(): AsyncGenerator<string> {
      if (latencyMs > 0) await delay(latencyMs, signal);
      for (let i = 0; i < choices.length; i++) yield chunk(i, { role: 'assistant', content: '' }, null);
      const words = choices.map((c) => c.text.split(/(?<= )/));
      const most = Math.max(...words.map((w) => w.length));
      for (let k = 0; k < most; k++) {
        for (let i = 0; i < choices.length; i++) {
          const word = words[i]![k];
          if (word !== undefined) yield chunk(i, { content: word }, null);
        }
      }
      for (let i = 0; i < choices.length; i++) yield chunk(i, {}, choices[i]!.finish);
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
