/**
 * `GET /v1/models` and `GET /v1/models/{model}`: the built-in local models and the upstreams' own. A client
 * that sends `anthropic-version` (as Anthropic's SDKs do) gets Anthropic's shapes (a page of `{type:
 * "model", id, display_name, created_at}` with `has_more`, `first_id`, `last_id`; `limit`, `after_id` and
 * `before_id` honoured) listing `local-chat` and the Anthropic upstream's models; any other client gets
 * OpenAI's list of the local models and the OpenAI-compatible upstream's. Like the model routes, both need a
 * client key when keys are configured. Each upstream's list is fetched at most once per
 * {@link MODELS_TTL_MS}, so listing models costs an upstream (and the operator's key) one call a minute
 * however often clients ask.
 *
 * @module
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { type Clock, systemClock } from '../internal/clock.ts';
import { anthropicHeaders } from './anthropic.ts';
import { sendAnthropicError } from './anthropic-errors.ts';
import type { GatewayContext } from './context.ts';
import { sendError } from './error-answers.ts';
import { LOCAL_CHAT_MODEL, LOCAL_MODELS, LOCAL_OWNER } from './local-upstream.ts';
import { type ApiError, apiError, invalid } from './openai.ts';
import type { UpstreamClient } from './upstream.ts';
import type { Api } from './upstream-interface.ts';

/** How long an upstream's model list is reused before it is fetched again, ms. @default 60000 */
export const MODELS_TTL_MS = 60_000;
/** Models one Anthropic page holds when the client gives no `limit`. @default 20 */
export const DEFAULT_MODELS_PAGE = 20;
/** Largest Anthropic page. @default 1000 */
export const MAX_MODELS_PAGE = 1000;

/** What the models routes use. */
export interface ModelsOptions extends Pick<GatewayContext, 'tenantOf'> {
  /** The OpenAI-compatible upstream whose models are listed beside the local ones, if any. */
  upstream: UpstreamClient | undefined;
  /** The Anthropic upstream whose models Anthropic clients see beside `local-chat`, if any. */
  anthropic?: UpstreamClient | undefined;
  /** The models listed deployments serve, per API. */
  listed?: Record<Api, string[]>;
  /** Time source of the lists' expiry. @default systemClock */
  clock?: Clock;
  /** How long an upstream's list is reused, ms. @default MODELS_TTL_MS */
  ttlMs?: number;
}

/** One entry of OpenAI's model list. */
interface OpenAIModel {
  id: string;
  object: string;
  created: number;
  owned_by: string;
}

/** One entry of Anthropic's model list. */
interface AnthropicModel {
  type: 'model';
  id: string;
  display_name: string;
  created_at: string;
}

/**
 * An upstream's model list, fetched again once it is `ttlMs` old; concurrent callers share one fetch. When
 * a fetch fails the last list is kept (none at first) until the next one is due: the local models are
 * served whatever the upstream does.
 */
function upstreamList<M extends { id: string }>(
  upstream: UpstreamClient | undefined,
  path: string,
  headers: Record<string, string> | undefined,
  clock: Clock,
  ttlMs: number,
): () => Promise<M[]> {
  let list: M[] = [];
  let dueAt = Number.NEGATIVE_INFINITY;
  let refreshing: Promise<void> | undefined;
  return async () => {
    if (upstream === undefined) return list;
    if (clock.now() >= dueAt) {
      refreshing ??= (async () => {
        try {
          const answer = await upstream.getJson(path, { headers });
          const data = (answer.body as { data?: unknown } | null)?.data;
          if (answer.status < 300 && Array.isArray(data)) list = data.filter(hasId) as M[];
        } catch {
          // Counted by the upstream client; the last list stays.
        } finally {
          dueAt = clock.now() + ttlMs;
          refreshing = undefined;
        }
      })();
      await refreshing;
    }
    return list;
  };
}

/** Registers `GET /v1/models` and `GET /v1/models/*` on `app`. */
export function registerModels(app: FastifyInstance, options: ModelsOptions): void {
  const { tenantOf } = options;
  const clock = options.clock ?? systemClock;
  const ttlMs = options.ttlMs ?? MODELS_TTL_MS;
  const started = new Date();
  const created = Math.floor(started.getTime() / 1000);
  const openAIKnown: OpenAIModel[] = LOCAL_MODELS.map((id) => ({
    id,
    object: 'model',
    created,
    owned_by: LOCAL_OWNER,
  }));
  const anthropicKnown: AnthropicModel[] = [
    {
      type: 'model',
      id: LOCAL_CHAT_MODEL,
      display_name: 'local-chat (a clawperf simulation, not a language model)',
      created_at: started.toISOString(),
    },
  ];
  const listed = options.listed ?? { openai: [], anthropic: [] };
  for (const id of listed.openai)
    openAIKnown.push({ id, object: 'model', created, owned_by: 'clawperf-deployments' });
  for (const id of listed.anthropic) {
    anthropicKnown.push({ type: 'model', id, display_name: id, created_at: started.toISOString() });
  }
  const openAIModels = upstreamList<OpenAIModel>(options.upstream, '/models', undefined, clock, ttlMs);
  // Anthropic lists at most 1000 models a page: one page holds them all.
  const anthropicModels = upstreamList<AnthropicModel>(
    options.anthropic,
    `/models?limit=${MAX_MODELS_PAGE}`,
    anthropicHeaders({}),
    clock,
    ttlMs,
  );
  const speaksAnthropic = (request: FastifyRequest) => request.headers['anthropic-version'] !== undefined;
  const fail = (request: FastifyRequest, reply: FastifyReply, error: ApiError) =>
    speaksAnthropic(request) ? sendAnthropicError(reply, error) : sendError(reply, error);

  app.get('/v1/models', async (request, reply) => {
    const tenant = tenantOf(request);
    if (typeof tenant !== 'string') return fail(request, reply, tenant);
    if (!speaksAnthropic(request))
      return { object: 'list', data: [...openAIKnown, ...(await openAIModels())] };
    const page = anthropicPage(
      [...anthropicKnown, ...(await anthropicModels())],
      request.query as Record<string, unknown>,
    );
    return 'status' in page ? fail(request, reply, page) : page;
  });

  app.get('/v1/models/*', async (request, reply) => {
    const tenant = tenantOf(request);
    if (typeof tenant !== 'string') return fail(request, reply, tenant);
    const id = (request.params as { '*': string })['*'];
    const model = speaksAnthropic(request)
      ? [...anthropicKnown, ...(await anthropicModels())].find((m) => m.id === id)
      : (openAIKnown.find((m) => m.id === id) ?? (await openAIModels()).find((m) => m.id === id));
    if (model !== undefined) return model;
    return fail(
      request,
      reply,
      apiError(404, `The model '${id}' does not exist`, 'invalid_request_error', 'model_not_found', 'model'),
    );
  });
}

/** The page of `models` Anthropic's `limit`, `after_id` and `before_id` ask for. */
function anthropicPage(
  models: AnthropicModel[],
  query: Record<string, unknown>,
): { data: AnthropicModel[]; has_more: boolean; first_id: string | null; last_id: string | null } | ApiError {
  let limit = DEFAULT_MODELS_PAGE;
  if (query.limit !== undefined) {
    limit = Number(query.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_MODELS_PAGE) {
      return invalid(
        'limit',
        `limit: must be an integer in [1, ${MAX_MODELS_PAGE}], got ${String(query.limit)}`,
      );
    }
  }
  let start = 0;
  let end = models.length;
  const after = query.after_id;
  const before = query.before_id;
  if (typeof after === 'string') start = models.findIndex((m) => m.id === after) + 1;
  if (typeof before === 'string') {
    const at = models.findIndex((m) => m.id === before);
    end = at === -1 ? models.length : at;
  }
  // Paging backwards (`before_id` alone) takes the models just before the cursor.
  const backwards = typeof before === 'string' && typeof after !== 'string';
  const from = backwards ? Math.max(start, end - limit) : start;
  const to = backwards ? end : Math.min(end, start + limit);
  const data = models.slice(from, Math.max(from, to));
  return {
    data,
    has_more: backwards ? from > start : to < end,
    first_id: data[0]?.id ?? null,
    last_id: data[data.length - 1]?.id ?? null,
  };
}

function hasId(value: unknown): boolean {
  return value !== null && typeof value === 'object' && typeof (value as { id?: unknown }).id === 'string';
}
