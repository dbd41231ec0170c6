/**
 * Error answers in Anthropic's shape, `{"type":"error","error":{"type":...,"message":...}}`, with
 * Anthropic's statuses, so its SDKs raise their matching classes. The gateway decides its answers once (an
 * {@link ApiError}); this is how they read on the Anthropic routes.
 *
 * @module
 */
import type { FastifyReply } from 'fastify';
import type { ApiError } from './openai.ts';

/** The body of an error answer, as Anthropic sends it. */
export interface AnthropicErrorBody {
  type: 'error';
  error: { type: string; message: string };
}

/** Anthropic's error type of each status it uses. */
const TYPE_OF_STATUS: Readonly<Record<number, string>> = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  402: 'billing_error',
  403: 'permission_error',
  404: 'not_found_error',
  409: 'conflict_error',
  413: 'request_too_large',
  429: 'rate_limit_error',
  500: 'api_error',
  504: 'timeout_error',
  529: 'overloaded_error',
};
const ANTHROPIC_TYPES = new Set(Object.values(TYPE_OF_STATUS));

/**
 * `error` as Anthropic would answer it. The status stays, but for two: a rate limit the upstream kept
 * answering is Anthropic's 429 `rate_limit_error`, and every other "retry later" 503 (the gateway's own
 * overload, an open circuit, a shutdown) is its 529 `overloaded_error`. `retry-after` stays with both. The
 * type is Anthropic's for the status; for a status Anthropic does not use, an Anthropic type the error
 * already has (an upstream's own, relayed) is kept.
 */
export function anthropicError(error: ApiError): {
  status: number;
  body: AnthropicErrorBody;
  headers?: Record<string, string>;
} {
  const { message, type, code } = error.body.error;
  let status = error.status;
  if (code === 'upstream_rate_limited') status = 429;
  else if (status === 503) status = 529;
  const kept =
    TYPE_OF_STATUS[status] ??
    (ANTHROPIC_TYPES.has(type) ? type : status >= 500 ? 'api_error' : 'invalid_request_error');
  return { status, body: { type: 'error', error: { type: kept, message } }, headers: error.headers };
}

/** The server-sent event that ends a stream with `error`, as Anthropic's streams do. */
export function anthropicErrorEvent(error: ApiError): string {
  return `event: error\ndata: ${JSON.stringify(anthropicError(error).body)}\n\n`;
}

/** Sends `error` in Anthropic's shape with its headers. */
export function sendAnthropicError(reply: FastifyReply, error: ApiError): FastifyReply {
  const answer = anthropicError(error);
  if (answer.headers !== undefined) reply.headers(answer.headers);
  return reply.code(answer.status).send(answer.body);
}
