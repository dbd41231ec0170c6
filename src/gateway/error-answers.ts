/**
 * How failures become OpenAI-style error answers: the status, the body and a `Retry-After` where waiting helps.
 *
 * @module
 */
import { maxHeaderSize } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';
import {
  BatchItemError,
  CircuitOpenError,
  ClawperfError,
  ClosedError,
  OverloadedError,
  QueueTimeoutError,
  RateLimitedError,
  TimeoutError,
  UpstreamError,
} from '../errors.ts';
import { sendAnthropicError } from './anthropic-errors.ts';
import { type ApiError, apiError } from './openai.ts';

/** The cause chain's first error that says something about the upstream or admission. */
export function rootCause(error: unknown): unknown {
  let e = error;
  for (let i = 0; i < 5 && e instanceof BatchItemError && e.cause !== undefined; i++) e = e.cause;
  return e;
}

/** Whole seconds for `Retry-After`, at least 1. */
export function retrySeconds(ms: number | undefined): string {
  return String(Math.max(1, Math.ceil((ms ?? 1000) / 1000)));
}

/** Maps a failure to the OpenAI-style error answer the client gets. */
export function errorAnswer(error: unknown): ApiError {
  const e = rootCause(error);
  if (e instanceof UpstreamError) {
    const answer = e.cause as { status?: number; body?: unknown } | undefined;
    if (e.status !== undefined && e.status < 500 && e.status !== 429 && answer?.body !== undefined) {
      const body = answer.body as {
        error?: { message?: unknown; type?: unknown; code?: unknown; param?: unknown };
      };
      const err = body?.error;
      return apiError(
        e.status,
        typeof err?.message === 'string' ? err.message : `the upstream answered ${e.status}`,
        typeof err?.type === 'string' ? err.type : 'invalid_request_error',
        typeof err?.code === 'string' ? err.code : null,
        typeof err?.param === 'string' ? err.param : null,
      );
    }
    if (e.status === 529) {
      return apiError(
        503,
        'the upstream is overloaded; retry later',
        'server_error',
        'upstream_overloaded',
        null,
        { 'retry-after': retrySeconds(e.retryAfterMs) },
      );
    }
    if (e.status === 429) {
      return apiError(
        429,
        'the upstream is rate limiting; retry later',
        'requests',
        'upstream_rate_limited',
        null,
        {
          'retry-after': retrySeconds(e.retryAfterMs),
        },
      );
    }
    return apiError(502, e.message, 'server_error', 'upstream_error');
  }
  if (e instanceof TimeoutError) return apiError(504, e.message, 'server_error', 'upstream_timeout');
  if (e instanceof CircuitOpenError) {
    return apiError(503, e.message, 'server_error', 'upstream_unavailable', null, {
      'retry-after': retrySeconds(e.retryAfterMs),
    });
  }
  if (e instanceof OverloadedError) {
    return apiError(503, e.message, 'server_error', 'overloaded', null, {
      'retry-after': retrySeconds(e.retryAfterMs),
    });
  }
  if (e instanceof QueueTimeoutError) {
    return apiError(503, e.message, 'server_error', 'overloaded', null, { 'retry-after': '1' });
  }
  if (e instanceof RateLimitedError) {
    return apiError(
      429,
      `the upstream's rate limit is exhausted: ${e.message}`,
      'requests',
      'upstream_rate_limited',
      null,
      {
        'retry-after': retrySeconds(e.retryAfterMs),
      },
    );
  }
  if (e instanceof ClosedError) {
    return apiError(503, 'the gateway is shutting down', 'server_error', 'shutting_down', null, {
      'retry-after': '1',
    });
  }
  return apiError(500, 'internal error', 'server_error', e instanceof ClawperfError ? e.code : null);
}

/**
 * The answer to a request Fastify refused before any route ran: a body too large, of a content-type it
 * cannot parse, or not JSON, a URL it cannot decode. OpenAI's shape, with none of Fastify's own codes.
 */
export function requestErrorAnswer(
  error: Error & { statusCode?: number; code?: string },
  bodyLimitBytes: number,
  contentType: string | undefined,
): ApiError {
  const status = error.statusCode ?? 400;
  switch (error.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return apiError(
        413,
        `the request body is larger than the limit of ${bodyLimitBytes} bytes`,
        'invalid_request_error',
        'request_too_large',
      );
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return apiError(
        415,
        `the content-type ${JSON.stringify(contentType ?? '')} cannot be parsed; send application/json`,
        'invalid_request_error',
        'unsupported_media_type',
      );
    case 'FST_ERR_BAD_URL':
      return apiError(
        400,
        `the URL cannot be decoded: ${error.message}`,
        'invalid_request_error',
        'invalid_url',
      );
  }
  if (error instanceof SyntaxError || /JSON/i.test(error.message)) {
    return apiError(
      status,
      `the request body is not valid JSON: ${error.message}`,
      'invalid_request_error',
      'invalid_json',
      'body',
    );
  }
  const code = error.code === undefined || error.code.startsWith('FST_') ? null : error.code;
  return apiError(status, error.message, 'invalid_request_error', code);
}

/** The answer to a request Node's HTTP parser refused (by `code`) before Fastify saw it. */
export function clientErrorAnswer(code: string | undefined): ApiError {
  if (code === 'HPE_HEADER_OVERFLOW') {
    return apiError(
      431,
      `the request headers are larger than the ${maxHeaderSize} bytes accepted`,
      'invalid_request_error',
      'request_header_fields_too_large',
    );
  }
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') {
    return apiError(408, 'the request did not arrive in time', 'invalid_request_error', 'request_timeout');
  }
  return apiError(400, `the request is not valid HTTP (${code})`, 'invalid_request_error', 'invalid_http');
}

/** Sends an error answer with its headers. */
export function sendError(reply: FastifyReply, error: ApiError): FastifyReply {
  if (error.headers !== undefined) reply.headers(error.headers);
  return reply.code(error.status).send(error.body);
}

/**
 * Sends `error` in the shape of the API the request's path speaks: Anthropic's under `/v1/messages`,
 * OpenAI's everywhere else. For the answers no route's own codec sends: Fastify's refusals, thrown
 * failures, unknown paths.
 */
export function sendErrorFor(request: FastifyRequest, reply: FastifyReply, error: ApiError): FastifyReply {
  return request.url.startsWith('/v1/messages') ? sendAnthropicError(reply, error) : sendError(reply, error);
}

/** Whether a parse or admission result is an error answer. */
export function isApiError(value: unknown): value is ApiError {
  return value !== null && typeof value === 'object' && 'status' in value && 'body' in value;
}
