/**
 * clawperf/concurrency: spending scarce things well. `ConnectionPool` (bounded, validated, drainable
 * pools), `RateLimiter` (five algorithms, several policies per key checked all-or-nothing, reserve then
 * settle, exact on Redis) with node:http/Express and Fastify middleware, `OutboundLimiter` (slows down
 * before a provider says 429, from its rate-limit headers; `SharedOutboundLimiter` shares that budget
 * across nodes on Redis) and `RequestBatcher` (batching with per-caller results).
 *
 * @module
 */
export * from './batcher.ts';
export * from './connection-pool.ts';
export * from './middleware/fastify.ts';
export * from './middleware/http.ts';
export * from './provider-limits.ts';
export * from './rate-limiter.ts';
export * from './shared-outbound.ts';
export * from './stores/memory-store.ts';
export * from './stores/redis-store.ts';
export type { RateLimitStore } from './stores/store.ts';
