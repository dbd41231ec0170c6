/**
 * The W3C `traceparent` of a server whose spans nothing records: every answer still names its place in the
 * caller's trace (the caller's trace id, or a new one, and a span id of its own), without starting a span.
 * A recording server uses {@link fastifyTracing} instead; the header it sends has the same form: a span
 * whose parent was sampled is sampled (flags `01`), any other is not (`00`), as a parent-based sampler that
 * samples no root decides.
 *
 * @module
 */
import { randomUUID } from 'node:crypto';
import type { FastifyPluginCallback } from 'fastify';

/** A valid version-00 `traceparent`, as the W3C Trace Context grammar gives it. */
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const ZERO_TRACE = '0'.repeat(32);
const ZERO_SPAN = '0'.repeat(16);

/**
 * A new trace id (32 hex digits) or span id (16), never all zero: a random UUID's digits, which Node draws
 * from a cached pool of random bytes (ids need to be unique, not secret).
 */
function randomId(digits: 32 | 16): string {
  const uuid = randomUUID();
  const id = `${uuid.slice(0, 8)}${uuid.slice(9, 13)}${uuid.slice(14, 18)}${uuid.slice(19, 23)}${uuid.slice(24)}`;
  return digits === 32 ? id : id.slice(16);
}

/** The caller's trace id and whether it sampled the trace, when `incoming` is a valid `traceparent`. */
function parentOf(
  incoming: string | string[] | undefined,
): { traceId: string; sampled: boolean } | undefined {
  const match = typeof incoming === 'string' ? TRACEPARENT.exec(incoming.trim()) : null;
  if (match === null || match[1] === ZERO_TRACE || match[2] === ZERO_SPAN) return undefined;
  return { traceId: match[1]!, sampled: (Number.parseInt(match[3]!, 16) & 1) === 1 };
}

/** The `traceparent` of a new span under `parent`, or of one that starts a trace. */
function childOf(parent: { traceId: string; sampled: boolean } | undefined): string {
  return `00-${parent?.traceId ?? randomId(32)}-${randomId(16)}-${parent?.sampled === true ? '01' : '00'}`;
}

/** The `traceparent` of a new span that continues `incoming` (a request's header), or starts a trace. */
export function childTraceparent(incoming: string | string[] | undefined): string {
  return childOf(parentOf(incoming));
}

/** Sends every answer a `traceparent`, and the caller's `tracestate` with it when it continues its trace. */
export const fastifyTraceparent: FastifyPluginCallback = (fastify, _options, done) => {
  fastify.addHook('onRequest', (request, reply, next) => {
    const parent = parentOf(request.headers.traceparent);
    reply.header('traceparent', childOf(parent));
    const state = request.headers.tracestate;
    if (parent !== undefined && typeof state === 'string' && state !== '') reply.header('tracestate', state);
    next();
  });
  done();
};

// What `fastify-plugin` does: run in the parent scope, so the hook covers routes registered beside it.
Object.assign(fastifyTraceparent, {
  [Symbol.for('skip-override')]: true,
  [Symbol.for('fastify.display-name')]: 'clawperf-traceparent',
});
