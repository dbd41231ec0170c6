/**
 * `GET /v1/models` and `GET /v1/models/{model}`: the built-in local models and, with an upstream, the
 * upstream's own, in OpenAI's shapes. Like the model routes, both need a client key when keys are configured.
 * The upstream's list is fetched at most once per {@link MODELS_TTL_MS}, so listing models costs the upstream
 * (and the operator's key) one call a minute however often clients ask.
 *
 * @module
 */
import type { FastifyInstance } from 'fastify';
import { type Clock, systemClock } from '../internal/clock.ts';
import type { GatewayContext } from './context.ts';
import { sendError } from './error-answers.ts';
import { LOCAL_MODELS, LOCAL_OWNER } from './local-upstream.ts';
import { apiError } from './openai.ts';
import type { UpstreamClient } from './upstream.ts';

/** How long the upstream's model list is reused before it is fetched again, ms. @default 60000 */
export const MODELS_TTL_MS = 60_000;

/** What the models routes use. */
export interface ModelsOptions extends Pick<GatewayContext, 'tenantOf'> {
  /** The HTTP upstream whose models are listed beside the local ones, if any. */
  upstream: UpstreamClient | undefined;
  /** Time source of the list's expiry. @default systemClock */
  clock?: Clock;
  /** How long the upstream's list is reused, ms. @default MODELS_TTL_MS */
  ttlMs?: number;
}

/** One entry of OpenAI's model list. */
interface Model {
  id: string;
  object: string;
  created: number;
  owned_by: string;
}

/** Registers `GET /v1/models` and `GET /v1/models/*` on `app`. */
export function registerModels(app: FastifyInstance, options: ModelsOptions): void {
  const { upstream, tenantOf } = options;
  const clock = options.clock ?? systemClock;
  const ttlMs = options.ttlMs ?? MODELS_TTL_MS;
  const created = Math.floor(Date.now() / 1000);
  const local: Model[] = LOCAL_MODELS.map((id) => ({ id, object: 'model', created, owned_by: LOCAL_OWNER }));

  let remote: Model[] = [];
  let dueAt = Number.NEGATIVE_INFINITY;
  let refreshing: Promise<void> | undefined;
  /**
   * The upstream's list, fetched again once it is `ttlMs` old; concurrent callers share one fetch. When a
   * fetch fails the last list is kept (none at first) until the next one is due: the local models are served
   * whatever the upstream does.
   */
  const upstreamModels = async (): Promise<Model[]> => {
    if (upstream === undefined) return remote;
    if (clock.now() >= dueAt) {
      refreshing ??= (async () => {
        try {
          const answer = await upstream.getJson('/models');
          const data = (answer.body as { data?: unknown } | null)?.data;
          if (answer.status < 300 && Array.isArray(data)) remote = data.filter(isModel);
        } catch {
          // Counted by the upstream client; the last list stays.
        } finally {
          dueAt = clock.now() + ttlMs;
          refreshing = undefined;
        }
      })();
      await refreshing;
    }
    return remote;
  };

  app.get('/v1/models', async (request, reply) => {
    const tenant = tenantOf(request);
    if (typeof tenant !== 'string') return sendError(reply, tenant);
    return { object: 'list', data: [...local, ...(await upstreamModels())] };
  });

  app.get('/v1/models/*', async (request, reply) => {
    const tenant = tenantOf(request);
    if (typeof tenant !== 'string') return sendError(reply, tenant);
    const id = (request.params as { '*': string })['*'];
    const model = local.find((m) => m.id === id) ?? (await upstreamModels()).find((m) => m.id === id);
    if (model !== undefined) return model;
    return sendError(
      reply,
      apiError(404, `The model '${id}' does not exist`, 'invalid_request_error', 'model_not_found', 'model'),
    );
  });
}

function isModel(value: unknown): value is Model {
  return value !== null && typeof value === 'object' && typeof (value as { id?: unknown }).id === 'string';
}
