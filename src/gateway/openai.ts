/**
 * The OpenAI wire shapes the gateway speaks, request validation, error bodies and the token estimate.
 *
 * @module
 */
import { totalTokenUsage } from '../tracing/index.ts';
import { isObject } from './context.ts';

/** The body of every error answer, as OpenAI sends it. */
export interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

/** An error answer: status, body and extra headers. */
export interface ApiError {
  status: number;
  body: OpenAIErrorBody;
  headers?: Record<string, string>;
}

/** Builds an {@link ApiError}. */
export function apiError(
  status: number,
  message: string,
  type: string,
  code: string | null = null,
  param: string | null = null,
  headers?: Record<string, string>,
): ApiError {
  return { status, body: { error: { message, type, param, code } }, headers };
}

/** A 400 naming the parameter at fault. */
export function invalid(param: string, message: string, code: string | null = 'invalid_value'): ApiError {
  return apiError(400, message, 'invalid_request_error', code, param);
}

/** Characters per token of the documented estimate (OpenAI's rule of thumb for English text). */
export const CHARS_PER_TOKEN = 4;

/**
 * Estimated tokens of `text`: `ceil(characters / 4)`. Used for TPM reservations before the answer's
 * `usage` is known (the reservation is then settled to the real figure), and for the local models' usage.
 */
export function estimateTokens(text: string): number {
  return Math.ceil(text.length / CHARS_PER_TOKEN);
}

/** One chat message as far as the gateway needs to look into it. */
export interface ChatMessage {
  role: string;
  content?: unknown;
  [key: string]: unknown;
}

/** A validated chat completion request (the original body is forwarded untouched). */
export interface ChatRequest {
  body: Record<string, unknown>;
  model: string;
  messages: ChatMessage[];
  stream: boolean;
  /** Temperature 0 and no tools or functions: the same request gets the same answer. */
  deterministic: boolean;
  /** `max_tokens` / `max_completion_tokens`, when given. */
  maxTokens: number | undefined;
  /** Characters of the prompt, for the token estimate. */
  promptChars: number;
}

/** A validated embeddings request. Inputs are strings or token arrays. */
export interface EmbeddingsRequest {
  model: string;
  inputs: (string | number[])[];
  dimensions: number | undefined;
  encodingFormat: 'float' | 'base64';
  user: string | undefined;
  /** Estimated input tokens: {@link estimateTokens} of each string, the length of each token array. */
  tokens: number;
}

/** Text of a message's `content` (a string or an array of parts). */
export function contentText(content: unknown): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    let text = '';
    for (const part of content) {
      if (isObject(part) && typeof part.text === 'string') text += part.text;
    }
    return text;
  }
  return '';
}

/** The `model` of a body, or the 400 naming it. */
export function modelOf(body: Record<string, unknown>): string | ApiError {
  if (body.model === undefined)
    return invalid('model', 'you must provide a model parameter', 'missing_required_parameter');
  if (typeof body.model !== 'string' || body.model === '') {
    return invalid(
      'model',
      `model must be a non-empty string, got ${JSON.stringify(body.model)}`,
      'invalid_type',
    );
  }
  return body.model;
}

/** A numeric chat parameter and OpenAI's bounds for it. */
interface NumberParam {
  name: string;
  integer: boolean;
  min: number;
  max: number;
  /** What the error message says it must be. */
  expected: string;
}

function numberParam(
  name: string,
  integer: boolean,
  min: number,
  max = Number.POSITIVE_INFINITY,
): NumberParam {
  const kind = integer ? 'an integer' : 'a number';
  const range = max === Number.POSITIVE_INFINITY ? ` >= ${min}` : ` in [${min}, ${max}]`;
  return { name, integer, min, max, expected: kind + range };
}

/**
 * The chat parameters checked, with OpenAI's bounds. Any other field goes to the upstream unchecked:
 * OpenAI-compatible servers accept more than OpenAI does (`top_k`, `min_p`, ...). `null` counts as absent.
 */
const CHAT_NUMBER_PARAMS: readonly NumberParam[] = [
  numberParam('n', true, 1, 128),
  numberParam('temperature', false, 0, 2),
  numberParam('top_p', false, 0, 1),
  numberParam('max_tokens', true, 1),
  numberParam('max_completion_tokens', true, 1),
  numberParam('presence_penalty', false, -2, 2),
  numberParam('frequency_penalty', false, -2, 2),
  numberParam('top_logprobs', true, 0, 20),
];

/** Validates a `/v1/chat/completions` body. */
export function parseChatRequest(body: unknown): ChatRequest | ApiError {
  if (!isObject(body)) return invalid('body', 'the request body must be a JSON object', 'invalid_type');
  const model = modelOf(body);
  if (typeof model !== 'string') return model;
  const messages = body.messages;
  if (!Array.isArray(messages) || messages.length === 0) {
    return invalid('messages', 'messages must be a non-empty array of messages', 'invalid_type');
  }
  let promptChars = 0;
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i] as unknown;
    if (!isObject(m) || typeof m.role !== 'string') {
      return invalid(`messages[${i}]`, `messages[${i}] must be an object with a string role`, 'invalid_type');
    }
    if (
      m.content !== undefined &&
      m.content !== null &&
      typeof m.content !== 'string' &&
      !Array.isArray(m.content)
    ) {
      return invalid(
        `messages[${i}].content`,
        `messages[${i}].content must be a string or an array`,
        'invalid_type',
      );
    }
    promptChars += contentText(m.content).length + m.role.length;
  }
  if (body.stream !== undefined && typeof body.stream !== 'boolean') {
    return invalid('stream', `stream must be a boolean, got ${JSON.stringify(body.stream)}`, 'invalid_type');
  }
  for (const p of CHAT_NUMBER_PARAMS) {
    const v = body[p.name];
    if (v === undefined || v === null) continue;
    if (typeof v !== 'number' || (p.integer && !Number.isInteger(v))) {
      return invalid(p.name, `${p.name} must be ${p.expected}, got ${JSON.stringify(v)}`, 'invalid_type');
    }
    if (v < p.min || v > p.max) {
      return invalid(p.name, `${p.name} must be ${p.expected}, got ${v}`, 'invalid_value');
    }
  }
  if (body.logprobs !== undefined && body.logprobs !== null && typeof body.logprobs !== 'boolean') {
    return invalid(
      'logprobs',
      `logprobs must be a boolean, got ${JSON.stringify(body.logprobs)}`,
      'invalid_type',
    );
  }
  const maxTokens = (body.max_completion_tokens ?? body.max_tokens ?? undefined) as number | undefined;
  const hasTools =
    (Array.isArray(body.tools) && body.tools.length > 0) ||
    (Array.isArray(body.functions) && body.functions.length > 0);
  return {
    body,
    model,
    messages: messages as ChatMessage[],
    stream: body.stream === true,
    deterministic: body.temperature === 0 && !hasTools && (body.n == null || body.n === 1),
    maxTokens,
    promptChars,
  };
}

/** Largest `dimensions` accepted. */
export const MAX_DIMENSIONS = 8192;

/**
 * Estimated input tokens one embeddings request may carry (OpenAI's own per-request bound), counted as
 * {@link EmbeddingsRequest.tokens}; more get 400. @default 300000
 */
export const MAX_EMBEDDING_REQUEST_TOKENS = 300_000;

/** Validates a `/v1/embeddings` body of at most `maxInputs` inputs and {@link MAX_EMBEDDING_REQUEST_TOKENS}. */
export function parseEmbeddingsRequest(body: unknown, maxInputs: number): EmbeddingsRequest | ApiError {
  if (!isObject(body)) return invalid('body', 'the request body must be a JSON object', 'invalid_type');
  const model = modelOf(body);
  if (typeof model !== 'string') return model;
  const input = body.input;
  let inputs: (string | number[])[];
  if (typeof input === 'string') inputs = [input];
  else if (Array.isArray(input) && input.length > 0 && input.every((t) => typeof t === 'number')) {
    inputs = [input as number[]];
  } else if (Array.isArray(input)) inputs = input as (string | number[])[];
  else {
    return invalid(
      'input',
      'input must be a string, an array of strings or an array of token arrays',
      'invalid_type',
    );
  }
  if (inputs.length === 0) return invalid('input', 'input must not be empty', 'invalid_value');
  if (inputs.length > maxInputs) {
    return invalid(
      'input',
      `input holds ${inputs.length} items; at most ${maxInputs} are allowed per request`,
      'invalid_value',
    );
  }
  let tokens = 0;
  for (let i = 0; i < inputs.length; i++) {
    const item = inputs[i];
    if (typeof item === 'string') {
      if (item.length === 0) return invalid(`input[${i}]`, `input[${i}] must not be an empty string`);
      tokens += estimateTokens(item);
    } else if (Array.isArray(item)) {
      if (item.length === 0 || !item.every((t) => Number.isInteger(t) && (t as number) >= 0)) {
        return invalid(`input[${i}]`, `input[${i}] must be a non-empty array of token ids`, 'invalid_type');
      }
      tokens += item.length;
    } else {
      return invalid(`input[${i}]`, `input[${i}] must be a string or an array of token ids`, 'invalid_type');
    }
    if (tokens > MAX_EMBEDDING_REQUEST_TOKENS) {
      return invalid(
        'input',
        `input holds more than ${MAX_EMBEDDING_REQUEST_TOKENS} tokens (estimated: characters / ${CHARS_PER_TOKEN}, or the length of a token array); at most ${MAX_EMBEDDING_REQUEST_TOKENS} are allowed per request`,
        'invalid_value',
      );
    }
  }
  let dimensions: number | undefined;
  if (body.dimensions !== undefined && body.dimensions !== null) {
    const d = body.dimensions;
    if (typeof d !== 'number' || !Number.isInteger(d) || d < 1 || d > MAX_DIMENSIONS) {
      return invalid(
        'dimensions',
        `dimensions must be an integer in [1, ${MAX_DIMENSIONS}], got ${JSON.stringify(d)}`,
        'invalid_type',
      );
    }
    dimensions = d;
  }
  const format = body.encoding_format ?? 'float';
  if (format !== 'float' && format !== 'base64') {
    return invalid(
      'encoding_format',
      `encoding_format must be "float" or "base64", got ${JSON.stringify(format)}`,
    );
  }
  if (body.user !== undefined && typeof body.user !== 'string') {
    return invalid('user', 'user must be a string', 'invalid_type');
  }
  return {
    model,
    inputs,
    dimensions,
    encodingFormat: format,
    user: body.user as string | undefined,
    tokens,
  };
}

/** An embedding vector as OpenAI's `base64` encoding sends it: little-endian float32 bytes. */
export function toBase64(vector: readonly number[]): string {
  const floats = Float32Array.from(vector);
  return Buffer.from(floats.buffer, floats.byteOffset, floats.byteLength).toString('base64');
}

/** Tokens an answer used, input and output (see {@link totalTokenUsage}), when it reports them. */
export function totalTokens(answer: unknown): number | undefined {
  return isObject(answer) ? totalTokenUsage(answer.usage) : undefined;
}
