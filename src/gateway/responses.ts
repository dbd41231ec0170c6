/**
 * OpenAI's Responses API as the gateway reads it: request validation (the fields it checks, each error
 * naming its `param`; every other field goes to the upstream untouched) and the prompt text the token
 * estimate counts.
 *
 * @module
 */

import { isObject } from './context.ts';
import { type ApiError, CHARS_PER_TOKEN, contentText, invalid, modelOf } from './openai.ts';

/** A validated Responses request (the original body is forwarded untouched). */
export interface ResponsesRequest {
  body: Record<string, unknown>;
  model: string;
  stream: boolean;
  /** `max_output_tokens`, when given. */
  maxOutputTokens: number | undefined;
  /** The response this one continues, if any. */
  previousResponseId: string | undefined;
  /**
   * Temperature 0, no tools, no `previous_response_id` and `store: false`: the same request gets the same
   * answer, and no stored response's id would be handed to another request.
   */
  deterministic: boolean;
  /** Characters of the instructions, the input and the tools, for the token estimate. */
  promptChars: number;
}

/** Characters the model reads in `input` items: message content, function outputs, tool arguments. */
function itemsChars(items: readonly unknown[]): number {
  let chars = 0;
  for (const item of items) {
    if (!isObject(item)) continue;
    chars += contentText(item.content).length;
    if (typeof item.output === 'string') chars += item.output.length;
    if (typeof item.arguments === 'string') chars += item.arguments.length;
  }
  return chars;
}

const NUMBER_PARAMS: readonly { name: string; integer: boolean; min: number; max: number }[] = [
  { name: 'temperature', integer: false, min: 0, max: 2 },
  { name: 'top_p', integer: false, min: 0, max: 1 },
  { name: 'max_output_tokens', integer: true, min: 1, max: Number.POSITIVE_INFINITY },
];

/** Validates a `/v1/responses` body. */
export function parseResponsesRequest(body: unknown): ResponsesRequest | ApiError {
  if (!isObject(body)) return invalid('body', 'the request body must be a JSON object', 'invalid_type');
  const model = modelOf(body);
  if (typeof model !== 'string') return model;
  let promptChars = 0;
  const input = body.input;
  if (typeof input === 'string') promptChars += input.length;
  else if (Array.isArray(input)) {
    for (let i = 0; i < input.length; i++) {
      const item = input[i] as unknown;
      if (!isObject(item)) {
        return invalid(`input[${i}]`, `input[${i}] must be an object (an input item)`, 'invalid_type');
      }
    }
    promptChars += itemsChars(input);
  } else if (input !== undefined && input !== null) {
    return invalid('input', 'input must be a string or an array of input items', 'invalid_type');
  }
  const instructions = body.instructions;
  if (typeof instructions === 'string') promptChars += instructions.length;
  else if (instructions !== undefined && instructions !== null) {
    return invalid('instructions', 'instructions must be a string', 'invalid_type');
  }
  for (const p of NUMBER_PARAMS) {
    const v = body[p.name];
    if (v === undefined || v === null) continue;
    const kind = p.integer ? 'an integer' : 'a number';
    const range = p.max === Number.POSITIVE_INFINITY ? `>= ${p.min}` : `in [${p.min}, ${p.max}]`;
    if (typeof v !== 'number' || (p.integer && !Number.isInteger(v)) || v < p.min || v > p.max) {
      return invalid(p.name, `${p.name} must be ${kind} ${range}, got ${JSON.stringify(v)}`, 'invalid_type');
    }
  }
  const tools = body.tools;
  if (tools !== undefined && tools !== null) {
    if (!Array.isArray(tools) || !tools.every(isObject)) {
      return invalid('tools', 'tools must be an array of tools', 'invalid_type');
    }
    promptChars += JSON.stringify(tools).length;
  }
  const previous = body.previous_response_id;
  if (previous !== undefined && previous !== null && (typeof previous !== 'string' || previous === '')) {
    return invalid('previous_response_id', 'previous_response_id must be a response id', 'invalid_type');
  }
  for (const field of ['store', 'stream'] as const) {
    const v = body[field];
    if (v !== undefined && v !== null && typeof v !== 'boolean') {
      return invalid(field, `${field} must be a boolean, got ${JSON.stringify(v)}`, 'invalid_type');
    }
  }
  if (body.text !== undefined && body.text !== null && !isObject(body.text)) {
    return invalid('text', 'text must be an object', 'invalid_type');
  }
  const previousResponseId = typeof previous === 'string' ? previous : undefined;
  return {
    body,
    model,
    stream: body.stream === true,
    maxOutputTokens: (body.max_output_tokens ?? undefined) as number | undefined,
    previousResponseId,
    deterministic:
      body.temperature === 0 &&
      (tools === undefined || tools === null || (tools as unknown[]).length === 0) &&
      previousResponseId === undefined &&
      body.store === false,
    promptChars,
  };
}

/** Estimated input tokens of a request: its prompt characters by the documented estimate. */
export function responsesPromptTokens(request: ResponsesRequest): number {
  return Math.ceil(request.promptChars / CHARS_PER_TOKEN);
}

/** The text of the last user input: what `local-chat` answers. */
export function lastUserInput(request: ResponsesRequest): string {
  const input = request.body.input;
  if (typeof input === 'string') return input;
  if (!Array.isArray(input)) return '';
  for (let i = input.length - 1; i >= 0; i--) {
    const item = input[i] as Record<string, unknown>;
    if (item.role === 'user') return contentText(item.content);
  }
  return '';
}
