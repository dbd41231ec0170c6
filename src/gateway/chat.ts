/**
 * `POST /v1/chat/completions`: deterministic answers cached (streamed or not), streams passed through with
 * backpressure and rebuilt for the cache on the way.
 *
 * @module
 */
import { finished, Readable } from 'node:stream';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { DEFAULT_MAX_VALUE_BYTES } from '../cache/index.ts';
import type { Reservation } from '../concurrency/index.ts';
import { UpstreamError } from '../errors.ts';
import { DEFAULT_COMPLETION_ESTIMATE, type GatewayContext, JSON_TYPE, JsonMemo, sha256 } from './context.ts';
import { isApiError, sendError } from './error-answers.ts';
import { LOCAL_CHAT_MODEL } from './local-upstream.ts';
import { CHARS_PER_TOKEN, type ChatRequest, parseChatRequest, totalTokens } from './openai.ts';
import { replayStream, StreamTap } from './streaming.ts';

/** Each cached answer's JSON text, made at its first answer and sent again by every hit. */
const answerJson = new JsonMemo<object>();

/** The route handler. */
export function chatHandler(ctx: GatewayContext) {
  const chatOnce = async (req: ChatRequest, estimate: number): Promise<Record<string, unknown>> => {
    if (req.model === LOCAL_CHAT_MODEL)
      return ctx.upstreamCall('chat', req.model, 1, () => ctx.local.chat(req));
    return ctx.upstreamCall('chat', req.model, 1, async () =>
      ctx.expectSuccess(await ctx.upstream!.postJson('/chat/completions', req.body, { tokens: estimate })),
    ) as Promise<Record<string, unknown>>;
  };

  const streamChat = async (
    request: FastifyRequest,
    reply: FastifyReply,
    req: ChatRequest,
    admitted: Reservation | undefined,
    estimate: number,
    key: string | undefined,
    tags: string[],
  ): Promise<FastifyReply> => {
    request.clawperf.cache = key === undefined ? 'bypass' : 'miss';
    if (key === undefined) ctx.counts.cacheBypass++;
    else {
      request.clawperf.cacheKey = key;
      ctx.counts.cacheMisses++;
    }
    const abort = new AbortController();
    reply.raw.once('close', () => {
      if (!reply.raw.writableFinished) abort.abort(new Error('the client went away'));
    });
    // The token limit settles from `usage`, so the gateway asks for it; a client that did not ask never sees it.
    const options = req.body.stream_options as Record<string, unknown> | undefined;
    const clientWantsUsage = options?.include_usage === true;
    const withUsage: ChatRequest = clientWantsUsage
      ? req
      : { ...req, body: { ...req.body, stream_options: { ...options, include_usage: true } } };
    let body: Readable;
    if (req.model === LOCAL_CHAT_MODEL) {
      ctx.counts.upstreamCalls++;
      ctx.counts.upstreamItems++;
      body = ctx.local.chatStream(withUsage, abort.signal);
    } else {
      const answer = await ctx.timed(request, () =>
        ctx.upstreamCall('chat', req.model, 1, () =>
          ctx.upstream!.postStream('/chat/completions', withUsage.body, {
            tokens: estimate,
            signal: abort.signal,
          }),
        ),
      );
      if (answer.status >= 300) {
        ctx.expectSuccess(answer);
      }
      body = answer.body as Readable;
      // Nothing is sent yet: a success that is not a stream (a server ignoring `stream`) is a 502 now.
      const type = answer.headers['content-type'];
      if (type !== undefined && !type.includes('text/event-stream')) {
        body.on('error', () => {}).destroy();
        const why = `the upstream answered a streamed request with ${type}, not server-sent events`;
        throw new UpstreamError(why, { status: answer.status });
      }
    }
    ctx.counts.servedItems++;
    ctx.answered('chat', request.clawperf.cache);
    const tap = new StreamTap({
      dropUsage: !clientWantsUsage,
      assemble: key !== undefined,
      maxBytes: DEFAULT_MAX_VALUE_BYTES,
    });
    finished(tap.relay(body), (error) => {
      ctx.settle(admitted, tap.total);
      if (error !== undefined || key === undefined) return;
      const completion = tap.completion();
      if (completion !== undefined) ctx.cache.set(key, completion, { tags }).catch(() => {});
    });
    reply.header('content-type', 'text/event-stream; charset=utf-8');
    reply.header('cache-control', 'no-cache');
    return reply.send(tap);
  };

  return async (request: FastifyRequest, reply: FastifyReply) => {
    const parsed = parseChatRequest(request.body);
    if (isApiError(parsed)) return sendError(reply, parsed);
    const req: ChatRequest = parsed;
    const wrong = ctx.checkModel(req.model, 'chat');
    if (wrong !== undefined) return sendError(reply, wrong);
    const tenant = ctx.tenantOf(request);
    if (typeof tenant !== 'string') return sendError(reply, tenant);
    const estimate =
      Math.ceil(req.promptChars / CHARS_PER_TOKEN) + (req.maxTokens ?? DEFAULT_COMPLETION_ESTIMATE);
    const admitted = await ctx.admit(request, tenant, estimate);
    if (isApiError(admitted)) return sendError(reply, admitted);
    ctx.setSpan(request, 'chat', req.model);
    const mode = ctx.cacheMode(request);
    const cacheable = mode === 'force' || (mode === 'auto' && req.deterministic);
    const { stream: _stream, stream_options: _options, user: _user, ...identity } = req.body;
    const key = cacheable ? `chat:${tenant}:${sha256(JSON.stringify(identity))}` : undefined;
    const tags = [`tenant:${tenant}`, `model:${req.model}`];
    if (req.stream) {
      const cached = key === undefined ? undefined : await ctx.safeGet(key);
      if (cached === undefined) return streamChat(request, reply, req, admitted, estimate, key, tags);
      request.clawperf.cache = 'hit';
      request.clawperf.cacheKey = key;
      ctx.counts.cacheHits++;
      ctx.counts.servedItems++;
      ctx.answered('chat', 'hit');
      ctx.settle(admitted, 0);
      reply.header('content-type', 'text/event-stream; charset=utf-8');
      reply.header('cache-control', 'no-cache');
      return reply.send(Readable.from(replayStream(cached, req.body.stream_options)));
    }
    let answer: unknown;
    if (key === undefined) {
      request.clawperf.cache = 'bypass';
      ctx.counts.cacheBypass++;
      answer = await ctx.timed(request, () => chatOnce(req, estimate));
    } else {
      request.clawperf.cacheKey = key;
      answer = await ctx.safeGet(key);
      if (answer !== undefined) {
        request.clawperf.cache = 'hit';
        ctx.counts.cacheHits++;
      } else {
        request.clawperf.cache = 'miss';
        ctx.counts.cacheMisses++;
        answer = await ctx.timed(request, () => ctx.loadThrough(key, () => chatOnce(req, estimate), tags));
      }
    }
    ctx.counts.servedItems++;
    ctx.answered('chat', request.clawperf.cache);
    ctx.settle(admitted, request.clawperf.cache === 'hit' ? 0 : totalTokens(answer));
    ctx.setSpan(request, 'chat', req.model, answer);
    if (key === undefined || answer === null || typeof answer !== 'object') return answer;
    reply.type(JSON_TYPE);
    return answerJson.text(answer);
  };
}
