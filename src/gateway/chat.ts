/**
 * `POST /v1/chat/completions`, read top to bottom: parse and validate, authenticate the tenant, admit it
 * against its limits, look the answer up in the cache (calling the upstream on a miss), settle the limits
 * from the answer's `usage`, answer, and record how it went. Deterministic answers are cached whether
 * streamed or not; a live stream is passed through and rebuilt for the cache on the way.
 *
 * @module
 */
import { finished, Readable } from 'node:stream';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { DEFAULT_MAX_VALUE_BYTES } from '../cache/index.ts';
import type { Reservation } from '../concurrency/index.ts';
import {
  type CacheState,
  DEFAULT_COMPLETION_ESTIMATE,
  type GatewayContext,
  JSON_TYPE,
  JsonMemo,
  sha256,
} from './context.ts';
import { isApiError, sendError } from './error-answers.ts';
import { CHARS_PER_TOKEN, type ChatRequest, parseChatRequest, totalTokens } from './openai.ts';
import { replayStream, StreamTap } from './streaming.ts';

/** Each cached answer's JSON text, made at its first answer and sent again by every hit. */
const answerJson = new JsonMemo<object>();

/** Whether a lookup waited for the upstream (anything but a hit). */
const notHit = (found: { cache: CacheState }) => found.cache !== 'hit';

/** A streamed chat request on its way: everything the stream's steps need. */
interface StreamedChat {
  request: FastifyRequest;
  reply: FastifyReply;
  req: ChatRequest;
  admitted: Reservation | undefined;
  estimate: number;
  /** The cache key of a deterministic request; `undefined` when the answer is not cached. */
  key: string | undefined;
  tags: string[];
}

/** The route handler. */
export function chatHandler(ctx: GatewayContext) {
  /** One upstream call for `req`: the local model or the HTTP upstream, guarded alike. */
  const callUpstream = (
    req: ChatRequest,
    body: Record<string, unknown>,
    estimate: number,
    signal?: AbortSignal,
  ) =>
    ctx.upstream.call(
      { operation: 'chat', model: req.model, body, stream: req.stream, items: 1, tokens: estimate },
      { signal },
    );

  const streamChat = async (s: StreamedChat): Promise<FastifyReply> => {
    const { request, reply, req, key } = s;
    const cached = key === undefined ? undefined : await ctx.cache.get(key).catch(() => undefined);
    reply.header('content-type', 'text/event-stream; charset=utf-8');
    reply.header('cache-control', 'no-cache');
    if (cached !== undefined) {
      request.clawperf.cacheKey = key;
      ctx.settle(s.admitted, 0);
      ctx.record(request, 'chat', req.model, 'hit', 1);
      return reply.send(Readable.from(replayStream(cached, req.body.stream_options)));
    }
    const abort = new AbortController();
    reply.raw.once('close', () => {
      if (!reply.raw.writableFinished) abort.abort(new Error('the client went away'));
    });
    // The token limit settles from `usage`, so the gateway asks for it; a client that did not ask never sees it.
    const options = req.body.stream_options as Record<string, unknown> | undefined;
    const clientWantsUsage = options?.include_usage === true;
    const body = clientWantsUsage
      ? req.body
      : { ...req.body, stream_options: { ...options, include_usage: true } };
    const answer = await ctx.timed(request, () => callUpstream(req, body, s.estimate, abort.signal));
    if (key !== undefined) request.clawperf.cacheKey = key;
    ctx.record(request, 'chat', req.model, key === undefined ? 'bypass' : 'miss', 1);
    const tap = new StreamTap({
      dropUsage: !clientWantsUsage,
      assemble: key !== undefined,
      maxBytes: DEFAULT_MAX_VALUE_BYTES,
    });
    finished(tap.relay(answer.stream!), (error) => {
      ctx.settle(s.admitted, tap.total);
      if (error !== undefined || key === undefined) return;
      const completion = tap.completion();
      if (completion !== undefined) ctx.cache.set(key, completion, { tags: s.tags }).catch(() => {});
    });
    return reply.send(tap);
  };

  return async (request: FastifyRequest, reply: FastifyReply) => {
    // Parse and validate.
    const parsed = parseChatRequest(request.body);
    if (isApiError(parsed)) return sendError(reply, parsed);
    const req: ChatRequest = parsed;
    const wrong = ctx.checkModel(req.model, 'chat');
    if (wrong !== undefined) return sendError(reply, wrong);
    // Authenticate the tenant.
    const tenant = ctx.tenantOf(request);
    if (typeof tenant !== 'string') return sendError(reply, tenant);
    // Admit it against its limits.
    const estimate =
      Math.ceil(req.promptChars / CHARS_PER_TOKEN) + (req.maxTokens ?? DEFAULT_COMPLETION_ESTIMATE);
    const admitted = await ctx.admit(request, tenant, estimate);
    if (isApiError(admitted)) return sendError(reply, admitted);
    const mode = ctx.cacheMode(request);
    const cacheable = mode === 'force' || (mode === 'auto' && req.deterministic);
    const { stream: _stream, stream_options: _options, user: _user, ...identity } = req.body;
    const key = cacheable ? `chat:${tenant}:${sha256(JSON.stringify(identity))}` : undefined;
    const tags = [`tenant:${tenant}`, `model:${req.model}`];
    if (req.stream) return streamChat({ request, reply, req, admitted, estimate, key, tags });
    // Look the answer up, calling the upstream on a miss.
    const call = async () => (await callUpstream(req, req.body, estimate)).json;
    let answer: unknown;
    let cache: CacheState;
    if (key === undefined) {
      answer = await ctx.timed(request, call);
      cache = 'bypass';
    } else {
      request.clawperf.cacheKey = key;
      ({ value: answer, cache } = await ctx.timed(request, () => ctx.lookup(key, call, tags), notHit));
    }
    // Settle the limits from the answer's usage: only an answer this request produced used tokens.
    ctx.settle(admitted, cache === 'miss' || cache === 'bypass' ? totalTokens(answer) : 0);
    ctx.record(request, 'chat', req.model, cache, 1, answer);
    // Answer.
    if (key === undefined || answer === null || typeof answer !== 'object') return answer;
    reply.type(JSON_TYPE);
    return answerJson.text(answer);
  };
}
