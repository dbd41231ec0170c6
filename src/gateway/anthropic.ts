/**
 * Anthropic's Messages API as the gateway reads it: request validation (the fields it checks, each error
 * naming the field; every other field goes to the upstream untouched), the prompt text the token estimate
 * counts, and the headers passed on.
 *
 * @module
 */
import type { IncomingHttpHeaders } from 'node:http';
import { isObject } from './context.ts';
import { type ApiError, CHARS_PER_TOKEN, contentText, invalid } from './openai.ts';

/** The `anthropic-version` the upstream gets when the client sends none. */
export const DEFAULT_ANTHROPIC_VERSION = '2023-06-01';

/** One message of a Messages request. */
export interface AnthropicMessage {
  role: 'user' | 'assistant';
  content: string | Record<string, unknown>[];
}

/** A validated Messages request (the original body is forwarded untouched). */
export interface MessagesRequest {
  body: Record<string, unknown>;
  model: string;
  maxTokens: number;
  messages: AnthropicMessage[];
  stream: boolean;
  /** Temperature 0, no tools and no extended thinking: the same request gets the same answer. */
  deterministic: boolean;
  /** Characters of the system prompt, the messages and the tools, for the token estimate. */
  promptChars: number;
}

const typeError = (field: string, message: string): ApiError =>
  invalid(field, `${field}: ${message}`, 'invalid_type');
const required = (field: string): ApiError =>
  invalid(field, `${field}: Field required`, 'missing_required_parameter');

/** Text the model reads in a list of content blocks: text, tool results and tool inputs. */
function blocksChars(blocks: readonly unknown[]): number {
  let chars = 0;
  for (const block of blocks) {
    if (!isObject(block)) continue;
    if (typeof block.text === 'string') chars += block.text.length;
    if (block.input !== undefined) chars += JSON.stringify(block.input).length;
    if (block.content !== undefined) {
      chars += Array.isArray(block.content) ? blocksChars(block.content) : contentText(block.content).length;
    }
  }
  return chars;
}

/** Validates a list of content blocks at `field`: objects with a string `type`. */
function checkBlocks(field: string, blocks: readonly unknown[]): ApiError | undefined {
  for (let i = 0; i < blocks.length; i++) {
    const block = blocks[i];
    if (!isObject(block) || typeof block.type !== 'string') {
      return typeError(`${field}.${i}`, 'a content block must be an object with a string type');
    }
  }
  return undefined;
}

/** A numeric Messages parameter and its bounds. */
const NUMBER_PARAMS: readonly { name: string; integer: boolean; min: number; max: number }[] = [
  { name: 'temperature', integer: false, min: 0, max: 1 },
  { name: 'top_p', integer: false, min: 0, max: 1 },
  { name: 'top_k', integer: true, min: 0, max: Number.POSITIVE_INFINITY },
];

/** Validates a `/v1/messages` (or `/v1/messages/count_tokens`, without `max_tokens`) body. */
export function parseMessagesRequest(
  body: unknown,
  options: { countTokens?: boolean } = {},
): MessagesRequest | ApiError {
  if (!isObject(body)) return invalid('body', 'the request body must be a JSON object', 'invalid_type');
  if (body.model === undefined) return required('model');
  if (typeof body.model !== 'string' || body.model === '') {
    return typeError('model', `must be a non-empty string, got ${JSON.stringify(body.model)}`);
  }
  let maxTokens = 0;
  if (options.countTokens !== true || body.max_tokens !== undefined) {
    const m = body.max_tokens;
    if (m === undefined) return required('max_tokens');
    if (typeof m !== 'number' || !Number.isInteger(m) || m < 1) {
      return typeError('max_tokens', `must be an integer >= 1, got ${JSON.stringify(m)}`);
    }
    maxTokens = m;
  }
  const messages = body.messages;
  if (messages === undefined) return required('messages');
  if (!Array.isArray(messages) || messages.length === 0) {
    return typeError('messages', 'must be a non-empty array of messages');
  }
  let promptChars = 0;
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i] as unknown;
    if (!isObject(m) || (m.role !== 'user' && m.role !== 'assistant')) {
      return typeError(`messages.${i}.role`, 'must be "user" or "assistant"');
    }
    if (typeof m.content === 'string') promptChars += m.content.length;
    else if (Array.isArray(m.content)) {
      const wrong = checkBlocks(`messages.${i}.content`, m.content);
      if (wrong !== undefined) return wrong;
      promptChars += blocksChars(m.content);
    } else {
      return typeError(`messages.${i}.content`, 'must be a string or an array of content blocks');
    }
  }
  const system = body.system;
  if (typeof system === 'string') promptChars += system.length;
  else if (Array.isArray(system)) {
    const wrong = checkBlocks('system', system);
    if (wrong !== undefined) return wrong;
    promptChars += blocksChars(system);
  } else if (system !== undefined) {
    return typeError('system', 'must be a string or an array of text blocks');
  }
  for (const p of NUMBER_PARAMS) {
    const v = body[p.name];
    if (v === undefined) continue;
    const kind = p.integer ? 'an integer' : 'a number';
    const range = p.max === Number.POSITIVE_INFINITY ? `>= ${p.min}` : `in [${p.min}, ${p.max}]`;
    if (typeof v !== 'number' || (p.integer && !Number.isInteger(v)) || v < p.min || v > p.max) {
      return typeError(p.name, `must be ${kind} ${range}, got ${JSON.stringify(v)}`);
    }
  }
  const stops = body.stop_sequences;
  if (stops !== undefined && (!Array.isArray(stops) || !stops.every((s) => typeof s === 'string'))) {
    return typeError('stop_sequences', 'must be an array of strings');
  }
  const tools = body.tools;
  if (tools !== undefined) {
    if (!Array.isArray(tools) || !tools.every(isObject))
      return typeError('tools', 'must be an array of tools');
    promptChars += JSON.stringify(tools).length;
  }
  for (const field of ['tool_choice', 'thinking'] as const) {
    const v = body[field];
    if (v !== undefined && (!isObject(v) || typeof v.type !== 'string')) {
      return typeError(field, 'must be an object with a string type');
    }
  }
  const metadata = body.metadata;
  if (metadata !== undefined) {
    if (!isObject(metadata)) return typeError('metadata', 'must be an object');
    const user = metadata.user_id;
    if (user !== undefined && user !== null && typeof user !== 'string') {
      return typeError('metadata.user_id', 'must be a string');
    }
  }
  if (body.stream !== undefined && typeof body.stream !== 'boolean') {
    return typeError('stream', `must be a boolean, got ${JSON.stringify(body.stream)}`);
  }
  const thinking = body.thinking as { type?: unknown } | undefined;
  return {
    body,
    model: body.model,
    maxTokens,
    messages: messages as AnthropicMessage[],
    stream: body.stream === true,
    deterministic:
      body.temperature === 0 &&
      (tools === undefined || (tools as unknown[]).length === 0) &&
      (thinking === undefined || thinking.type === 'disabled'),
    promptChars,
  };
}

/** Estimated input tokens of a request: its prompt characters by the documented estimate. */
export function promptTokens(request: MessagesRequest): number {
  return Math.ceil(request.promptChars / CHARS_PER_TOKEN);
}

/**
 * The client's headers the Anthropic upstream gets: `anthropic-version` (the default when absent) and
 * `anthropic-beta`. Never its key: the upstream gets the operator's.
 */
export function anthropicHeaders(headers: IncomingHttpHeaders): Record<string, string> {
  const version = headers['anthropic-version'];
  const out: Record<string, string> = {
    'anthropic-version': typeof version === 'string' && version !== '' ? version : DEFAULT_ANTHROPIC_VERSION,
  };
  const beta = headers['anthropic-beta'];
  if (typeof beta === 'string' && beta !== '') out['anthropic-beta'] = beta;
  else if (Array.isArray(beta) && beta.length > 0) out['anthropic-beta'] = beta.join(',');
  return out;
}

/** Text of the last user message: what `local-chat` answers. */
export function lastUserText(request: Pick<MessagesRequest, 'messages'>): string {
  for (let i = request.messages.length - 1; i >= 0; i--) {
    const m = request.messages[i]!;
    if (m.role === 'user') return typeof m.content === 'string' ? m.content : contentText(m.content);
  }
  return '';
}
