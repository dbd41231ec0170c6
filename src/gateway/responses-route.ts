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
import type { GatewayContext } from './context.ts';
import { sendError } from './error-answers.ts';
import { apiError, invalid } from './openai.ts';
import { openAIResponses } from './openai-responses.ts';
import type { ResponseOwners } from './response-owners.ts';
import type { UpstreamClient } from './upstream.ts';

/** What the Responses routes use. */
export interface ResponsesRoutesOptions {
  ctx: GatewayContext;
  owners: ResponseOwners;
  /** The OpenAI-compatible upstream that stores responses; without one no stored response exists. */
  upstream: UpstreamClient | undefined;
}

/** Registers `POST /v1/responses`, `GET` and `DELETE /v1/responses/:id`. */
export function registerResponses(app: FastifyInstance, options: ResponsesRoutesOptions): void {
  const { ctx, owners, upstream } = options;
  app.post('/v1/responses', completionRoute(ctx, openAIResponses(owners)));

  /** The stored response `id` of the request's tenant, passed to the upstream by `call`. */
  const stored =
    (
      call: (client: UpstreamClient, path: string) => Promise<{ status: number; body: unknown }>,
      forget: boolean,
    ) =>
    async (request: FastifyRequest, reply: FastifyReply) => {
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
      if (upstream === undefined || !(await owners.owns(id, tenant))) {
        return sendError(
          reply,
          apiError(404, `Response with id '${id}' not found.`, 'invalid_request_error', 'not_found'),
        );
      }
      const search = request.url.includes('?') ? request.url.slice(request.url.indexOf('?')) : '';
      const answer = await ctx.timed(request, () =>
        call(upstream, `/responses/${encodeURIComponent(id)}${search}`),
      );
      if (forget && answer.status < 300) owners.forget(id);
      return reply.code(answer.status).send(answer.body);
    };

  app.get(
    '/v1/responses/:id',
    stored((client, path) => client.getJson(path), false),
  );
  app.delete(
    '/v1/responses/:id',
    stored((client, path) => client.deleteJson(path), true),
  );
}
