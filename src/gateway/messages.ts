/**
 * `POST /v1/messages`: the shared completion path (completion-route.ts) speaking Anthropic's Messages API
 * (anthropic-messages.ts); and `POST /v1/messages/count_tokens`, passed to the Anthropic upstream (or
 * answered by `local-chat`) after the same authentication and model check.
 *
 * @module
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { anthropicHeaders, parseMessagesRequest } from './anthropic.ts';
import { sendAnthropicError } from './anthropic-errors.ts';
import { anthropicMessages } from './anthropic-messages.ts';
import { completionRoute } from './completion-route.ts';
import type { GatewayContext } from './context.ts';
import { isApiError } from './error-answers.ts';

/** The `/v1/messages` handler. */
export function messagesHandler(ctx: GatewayContext) {
  return completionRoute(ctx, anthropicMessages({ autoBreakpoints: ctx.config.promptCacheAutoBreakpoints }));
}

/**
 * The `/v1/messages/count_tokens` handler. A count is a request against the tenant's request limit and
 * reserves no tokens; it is not cached (the upstream's count is cheap and exact).
 */
export function countTokensHandler(ctx: GatewayContext) {
  return async (request: FastifyRequest, reply: FastifyReply) => {
    const parsed = parseMessagesRequest(request.body, { countTokens: true });
    if (isApiError(parsed)) return sendAnthropicError(reply, parsed);
    const wrong = ctx.checkModel(parsed.model, 'messages');
    if (wrong !== undefined) return sendAnthropicError(reply, wrong);
    const tenant = ctx.tenantOf(request);
    if (typeof tenant !== 'string') return sendAnthropicError(reply, tenant);
    const admitted = await ctx.admit(request, tenant, 0);
    if (isApiError(admitted)) return sendAnthropicError(reply, admitted);
    const answer = await ctx.timed(request, () =>
      ctx.upstream.call({
        api: 'anthropic',
        operation: 'count_tokens',
        model: parsed.model,
        body: parsed.body,
        headers: anthropicHeaders(request.headers),
        stream: false,
        items: 1,
        tokens: 0,
      }),
    );
    ctx.settle(admitted, 0);
    return answer.json;
  };
}
