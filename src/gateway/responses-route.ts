/**
 * `POST /v1/responses`: the shared completion path (completion-route.ts) speaking OpenAI's Responses API
 * (openai-responses.ts). `GET` and `DELETE /v1/responses/{id}`: passed to the OpenAI-compatible upstream,
 * but only for the tenant that created the response; for any other tenant the id does not exist (404), and
 * the upstream is not asked.
 *
 * @module
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { completionRoute } from './completion-route.ts';
import { DEPLOYMENT_HEADER, type GatewayContext } from './context.ts';
import type { DeploymentRouter } from './deployment-router.ts';
import { sendError } from './error-answers.ts';
import { apiError, invalid } from './openai.ts';
import { openAIResponses } from './openai-responses.ts';
import type { ResponseOwners } from './response-owners.ts';

/** What the Responses routes use. */
export interface ResponsesRoutesOptions {
  ctx: GatewayContext;
  owners: ResponseOwners;
  /** The deployments; a stored response is asked of the one (and the key) that stored it. */
  router: DeploymentRouter;
}

/** Registers `POST /v1/responses`, `GET` and `DELETE /v1/responses/:id`. */
export function registerResponses(app: FastifyInstance, options: ResponsesRoutesOptions): void {
  const { ctx, owners, router } = options;
  app.post('/v1/responses', completionRoute(ctx, openAIResponses(owners)));

  /** The stored response `id` of the request's tenant, asked of the deployment and key that stored it. */
  const stored = (method: 'GET' | 'DELETE') => async (request: FastifyRequest, reply: FastifyReply) => {
    const tenant = ctx.tenantOf(request);
    if (typeof tenant !== 'string') return sendError(reply, tenant);
    const { id } = request.params as { id: string };
    const query = request.query as Record<string, unknown>;
    if (query.stream === 'true') {
      return sendError(
        reply,
        invalid('stream', 'this gateway does not stream a stored response again; ask without stream'),
      );
    }
    const at = await owners.find(id, tenant);
    const deployment =
      at === false
        ? undefined
        : at === undefined
          ? router.deployments.find((d) => d.api === 'openai' && d.config.models === undefined)
          : router.deployments.find((d) => d.name === at.deployment);
    if (deployment === undefined) {
      return sendError(
        reply,
        apiError(404, `Response with id '${id}' not found.`, 'invalid_request_error', 'not_found'),
      );
    }
    const search = request.url.includes('?') ? request.url.slice(request.url.indexOf('?')) : '';
    const path = `/responses/${encodeURIComponent(id)}${search}`;
    const answer = await ctx.timed(request, () => deployment.request(method, path, at ? at.key : 0));
    if (method === 'DELETE' && answer.status < 300) owners.forget(id);
    reply.header(DEPLOYMENT_HEADER, deployment.name);
    return reply.code(answer.status).send(answer.body);
  };

  app.get('/v1/responses/:id', stored('GET'));
  app.delete('/v1/responses/:id', stored('DELETE'));
}
