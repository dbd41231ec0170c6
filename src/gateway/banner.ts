/**
 * What `clawperf gateway` prints when it starts: where it listens and what is on (models, cache levels,
 * Redis, limits, deployments, workers, auth, the log), so an operator reads the running configuration
 * instead of guessing it. No key and no URL's credentials are printed.
 *
 * @module
 */
import type { GatewayConfig } from './config.ts';
import { LOCAL_MODELS } from './local-upstream.ts';

/** A URL as the banner shows it: without its user and password. */
export function shownUrl(raw: string): string {
  try {
    const url = new URL(raw);
    if (url.username === '' && url.password === '') return raw;
    url.username = '';
    url.password = '';
    return url.toString();
  } catch {
    return '(invalid URL)';
  }
}

/** The startup lines of a gateway listening on `address` with `config`. */
export function bannerLines(config: GatewayConfig, address: string): string[] {
  const local = `${LOCAL_MODELS.join(', ')} (LOCAL models: simulations, not language models)`;
  const singles: string[] = [];
  if (config.upstreamUrl !== undefined) {
    singles.push(`every other OpenAI model via ${shownUrl(config.upstreamUrl)} (openai-default)`);
  }
  if (config.anthropicUpstreamUrl !== undefined) {
    singles.push(
      `every other /v1/messages model via ${shownUrl(config.anthropicUpstreamUrl)} (anthropic-default)`,
    );
  }
  const listed = [...new Set(config.deployments.flatMap((d) => Object.keys(d.models ?? {})))];
  if (listed.length > 0) singles.push(`${listed.join(', ')} on deployments`);
  const levels = [`memory (${config.l1MaxEntries} entries)`];
  if (config.cacheDir !== false) levels.push(`disk (${config.cacheDir})`);
  if (config.redisUrl !== undefined) levels.push('Redis');
  const lines = [
    `clawperf gateway listening on ${address}`,
    `models: ${[local, ...singles].join('; ')}`,
    `cache: ${levels.join(' + ')}, answers kept ${config.cacheTtlMs} ms`,
    config.redisUrl === undefined
      ? 'redis: none (cache, limits and invalidation in this process only)'
      : `redis: ${shownUrl(config.redisUrl)} (L2 cache, invalidation bus, global limits)`,
    config.limits === undefined
      ? 'limits: off'
      : `limits per tenant: ${Object.entries(config.limits)
          .map(([k, v]) => `${k}=${v}`)
          .join(', ')}; upstream calls at once ${config.maxConcurrency}, queue ${config.maxQueueSize}`,
    config.deployments.length === 0
      ? 'deployments: none'
      : `deployments: ${config.deployments
          .map(
            (d) =>
              `${d.name} (${d.api}, ${shownUrl(d.baseUrl)}, ${Object.keys(d.models ?? {}).join(', ')}; priority ${d.priority}, weight ${d.weight}, ${d.apiKeys.length} key${d.apiKeys.length === 1 ? '' : 's'})`,
          )
          .join('; ')}`,
    config.workers === 1
      ? 'workers: 1'
      : `workers: ${config.workers} on one port, sharing state on Redis${config.redisUrl?.startsWith('redis+unix://') ? ' (private)' : ''}`,
    Object.keys(config.apiKeys).length === 0
      ? 'auth: no API keys configured (GATEWAY_API_KEYS): open, to clients on loopback only'
      : `auth: ${Object.keys(config.apiKeys).length} API keys, ${new Set(Object.values(config.apiKeys)).size} tenants`,
    `admin and debug endpoints: ${config.adminToken === undefined ? 'disabled (no CLAWPERF_ADMIN_TOKEN)' : 'enabled'}`,
    `log: ${config.logLevel}${config.logLevel === 'info' || config.logLevel === 'debug' || config.logLevel === 'trace' ? ' (a line per request)' : ''}, ${config.logFormat}`,
    `try: curl ${address}/v1/embeddings -H 'content-type: application/json' -d '{"model":"local-embed","input":"hello"}'`,
  ];
  return lines;
}
