/**
 * clawperf/gateway: the performance gateway (`npx clawperf gateway`: OpenAI's chat completions, embeddings
 * and Responses, Anthropic's Messages) as a library, for embedding it in a process of your own or starting
 * it with a configuration built in code.
 *
 * @module
 */
export {
  DEFAULT_BATCH_MAX_SIZE,
  DEFAULT_BATCH_MAX_WAIT_MS,
  DEFAULT_BODY_LIMIT_BYTES,
  DEFAULT_CACHE_TTL_MS,
  DEFAULT_DRAIN_TIMEOUT_MS,
  DEFAULT_HOST,
  DEFAULT_LOCAL_CHAT_LATENCY_MS,
  DEFAULT_PORT,
  DEFAULT_REDIS_COMMAND_TIMEOUT_MS,
  DEFAULT_UPSTREAM_COOLDOWN_MS,
  DEFAULT_UPSTREAM_FAILURE_THRESHOLD,
  DEFAULT_UPSTREAM_RETRIES,
  DEFAULT_UPSTREAM_TIMEOUT_MS,
  defaultCacheDir,
  defaultConfig,
  type GatewayConfig,
  type GatewayLimits,
  helpText,
  loadConfig,
  resolveConfig,
} from './config.ts';
export type { DeploymentConfig, ProviderLimits } from './deployments-config.ts';
export { LOCAL_CHAT_MODEL, LOCAL_EMBED_MODEL, LOCAL_MODELS, localEmbedding } from './local-upstream.ts';
export { DEFAULT_MAX_SESSIONS, SESSION_HEADER } from './prompt-sessions.ts';
export {
  createGateway,
  type Gateway,
  type GatewayOptions,
  type GatewayStats,
  LISTEN_BACKLOG,
  type StartOptions,
  startGateway,
} from './server.ts';
