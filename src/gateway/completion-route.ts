/**
 * The path every chat-like route takes, read top to bottom: parse and validate, authenticate the tenant,
 * admit it against its limits, look the answer up in the cache (calling the upstream on a miss), settle the
 * limits from the answer's usage, answer, and record how it went. What differs between APIs is the
 * {@link Protocol}. Deterministic answers are cached whether streamed or not; a live stream is passed
 * through and rebuilt for the cache on the way.
 *
 * @module
 */
import { finished, Readable } from 'node:stream';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Reservation } from '../concurrency/index.ts';
import { type TokenUsage, tokenUsage } from '../tracing/index.ts';
import {
  type CacheState,
  DEPLOYMENT_HEADER,
  ENDPOINT_CALLS,
  type GatewayContext,
  JSON_TYPE,
  JsonMemo,
  sha256,
} from './context.ts';
import { isApiError } from './error-answers.ts';
import type { Protocol, ProtocolRequest } from './protocol.ts';
import type { AnsweredTurn } from './request-steps.ts';
import type { DeploymentKey, UpstreamReply } from './upstream-interface.ts';

/** Each cached answer's JSON text, made at its first answer and sent again by every hit. */
const answerJson = new JsonMemo<object>();

const LOCAL_DEPLOYMENT = 'local';

/** The deployment and key of an upstream's answer, when a router chose them. */
function deploymentKey(reply: UpstreamReply): DeploymentKey | undefined {
  return reply.deployment === undefined ? undefined : { deployment: reply.deployment, key: reply.key ?? 0 };
}

/** Whether a lookup waited for the upstream (anything but a hit). */
const notHit = (found: { cache: CacheState }) => found.cache !== 'hit';

/** A streamed request on its way: everything the stream's steps need. */
interface Streamed<R extends ProtocolRequest> {
  request: FastifyRequest;
  reply: FastifyReply;
  req: R;
  tenant: string;
  admitted: Reservation | undefined;
  /** The cache key of a cacheable request; `undefined` when the answer is not cached. */
  key: string | undefined;
  tags: string[];
}

/** The route handler of `protocol`. */
export function completionRoute<R extends ProtocolRequest>(ctx: GatewayContext, protocol: Protocol<R>) {
  const { endpoint } = protocol;

  /** An answer the provider produced from `body`, for the prompt-cache accounting. */
  const turn = (
    req: R,
    body: Record<string, unknown>,
    tenant: string,
    usage: TokenUsage | undefined,
  ): AnsweredTurn => ({ tenant, api: protocol.api, model: req.model, body, usage });

  /** One upstream call with `body` (the protocol's `upstreamBody`, made once per request). */
  const callUpstream = (req: R, body: Record<string, unknown>, signal?: AbortSignal) =>
    ctx.upstream.call(
      {
        api: protocol.api,
        operation: ENDPOINT_CALLS[endpoint].operation,
        model: req.model,
        body,
        headers: req.headers,
        pin: req.pin,
        stream: req.stream,
        items: 1,
        tokens: req.estimate,
      },
      { signal },
    );

  const stream = async (s: Streamed<R>): Promise<FastifyReply> => {
    const { request, reply, req, key } = s;
    const cached = key === undefined ? undefined : await ctx.cache.get(key).catch(() => undefined);
    reply.header('content-type', 'text/event-stream; charset=utf-8');
    reply.header('cache-control', 'no-cache');
    if (cached !== undefined) {
      request.clawperf.cacheKey = key;
      ctx.settle(s.admitted, 0);
      ctx.record(request, endpoint, req.model, 'hit', 1, cached);
      return reply.send(Readable.from(protocol.replay(cached, req)));
    }
    const abort = new AbortController();
    reply.raw.once('close', () => {
      if (!reply.raw.writableFinished) abort.abort(new Error('the client went away'));
    });
    const body = protocol.upstreamBody(req);
    const answer = await ctx.timed(request, () => callUpstream(req, body, abort.signal));
    if (key !== undefined) request.clawperf.cacheKey = key;
    ctx.record(request, endpoint, req.model, key === undefined ? 'bypass' : 'miss', 1);
    reply.header(DEPLOYMENT_HEADER, answer.deployment ?? LOCAL_DEPLOYMENT);
    const tap = protocol.tap(req, key !== undefined, s.tenant, deploymentKey(answer));
    request.clawperf.streamed = tap;
    finished(tap.relay(answer.stream!), (error) => {
      ctx.settle(s.admitted, tap.total);
      ctx.answered(request, turn(req, body, s.tenant, tap.usage));
      if (error !== undefined || key === undefined) return;
      const completion = tap.completion();
      if (completion !== undefined) ctx.cache.set(key, completion, { tags: s.tags }).catch(() => {});
    });
    return reply.send(tap);
  };

  return async (request: FastifyRequest, reply: FastifyReply) => {
    // Parse and validate.
    const parsed = protocol.parse(request.body, request.headers);
    if (isApiError(parsed)) return protocol.sendError(reply, parsed);
    const req: R = parsed;
    const wrong = ctx.checkModel(req.model, endpoint);
    if (wrong !== undefined) return protocol.sendError(reply, wrong);
    // Authenticate the tenant.
    const tenant = ctx.tenantOf(request);
    if (typeof tenant !== 'string') return protocol.sendError(reply, tenant);
    const refused = await protocol.authorize?.(req, tenant);
    if (refused !== undefined) return protocol.sendError(reply, refused);
    // Admit it against its limits.
    const admitted = await ctx.admit(request, tenant, req.estimate);
    if (isApiError(admitted)) return protocol.sendError(reply, admitted);
    const mode = ctx.cacheMode(request);
    const cacheable = mode === 'force' || (mode === 'auto' && req.deterministic);
    const key = cacheable ? `${endpoint}:${tenant}:${sha256(JSON.stringify(req.identity))}` : undefined;
    const tags = [`tenant:${tenant}`, `model:${req.model}`];
    if (req.stream) return stream({ request, reply, req, tenant, admitted, key, tags });
    // Look the answer up, calling the upstream on a miss.
    /** The call this request made, if it made one (a hit or a coalesced answer did not). */
    let sent: { body: Record<string, unknown>; reply: UpstreamReply } | undefined;
    const call = async () => {
      const body = protocol.upstreamBody(req);
      sent = { body, reply: await callUpstream(req, body) };
      return sent.reply.json;
    };
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
    const produced = cache === 'miss' || cache === 'bypass';
    ctx.settle(admitted, produced ? protocol.usage(answer) : 0);
    // An answer this request produced came from its own call, which knows the deployment and the body.
    if (produced && sent !== undefined) {
      reply.header(DEPLOYMENT_HEADER, sent.reply.deployment ?? LOCAL_DEPLOYMENT);
      protocol.answered?.(req, answer, tenant, deploymentKey(sent.reply));
      const usage = tokenUsage((answer as { usage?: unknown } | null)?.usage);
      ctx.answered(request, turn(req, sent.body, tenant, usage), reply);
    }
    ctx.record(request, endpoint, req.model, cache, 1, answer);
    // Answer.
    if (key === undefined || answer === null || typeof answer !== 'object') return answer;
    reply.type(JSON_TYPE);
    return answerJson.text(answer);
  };
}
