/**
 * Fastify plugin: the same checks, headers and answers as {@link rateLimitMiddleware}, in an `onRequest`
 * hook that applies to every route of the instance it is registered on (it is not encapsulated).
 *
 * The default key is `request.user.id` (as set by e.g. `@fastify/jwt`), then, with `apiKeyHeader`, the
 * hashed API key, then `request.ip`, which follows Fastify's own `trustProxy` setting. Pass our
 * `trustProxy` to read `X-Forwarded-For` here instead.
 *
 * @example
 * const app = Fastify();
 * await app.register(rateLimitPlugin, { limiter });
 */
import type { FastifyInstance, FastifyPluginAsync, FastifyRequest } from 'fastify';
import * as check from '../../internal/options.ts';
import type { RateLimiter } from '../rate-limiter.ts';
import {
  apiKeyKey,
  clientAddress,
  createRateLimitHandler,
  type RateLimitMiddlewareOptions,
  userKey,
} from './http.ts';

export interface RateLimitPluginOptions extends RateLimitMiddlewareOptions<FastifyRequest> {
  limiter: RateLimiter;
}

const plugin: FastifyPluginAsync<RateLimitPluginOptions> = async (
  fastify: FastifyInstance,
  options: RateLimitPluginOptions,
) => {
  const { limiter, ...rest } = options;
  if (limiter === undefined || typeof (limiter as { allow?: unknown }).allow !== 'function') {
    check.invalid('options.limiter', 'a RateLimiter', limiter);
  }
  const handle = createRateLimitHandler<FastifyRequest>(
    limiter,
    rest,
    (request, trustProxy, apiKeyHeader) =>
      userKey(request) ??
      (apiKeyHeader ? apiKeyKey(request.raw) : undefined) ??
      `ip:${trustProxy === false ? normalize(request.ip) : clientAddress(request.raw, trustProxy)}`,
  );
  fastify.addHook('onRequest', async (request, reply) => {
    const decision = await handle(request);
    reply.headers(decision.headers);
    if (decision.status !== 0) {
      return reply.code(decision.status).type('application/json').send(decision.body);
    }
  });
};

function normalize(address: string): string {
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}

// Fastify reads these to skip encapsulation (what fastify-plugin does), so the hook covers sibling routes.
Object.assign(plugin, {
  [Symbol.for('skip-override')]: true,
  [Symbol.for('fastify.display-name')]: 'clawperf-rate-limit',
});

/** Register with `app.register(rateLimitPlugin, { limiter, ...options })`. */
export const rateLimitPlugin = plugin;
