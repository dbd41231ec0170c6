/**
 * The gateway's deployments, built from its configuration: one per `deployments` entry, and one for each
 * single upstream (`--upstream` builds `openai-default`, `--anthropic-upstream` builds `anthropic-default`,
 * each serving every model of its API), all behind one {@link DeploymentRouter}.
 *
 * A single upstream keeps its own retries (with backoff and `Retry-After`) as before; listed deployments
 * retry nothing themselves: the router moves a failed call to another key or deployment at once, and
 * tries them again after a backoff only when all were tried.
 *
 * @module
 */
import type { Registry } from 'prom-client';
import {
  type ConfiguredLimits,
  OutboundLimiter,
  type OutboundLimiterOptions,
  SharedOutboundLimiter,
} from '../concurrency/index.ts';
import type { RedisClient } from '../internal/redis.ts';
import type { GatewayConfig } from './config.ts';
import { Deployment } from './deployment.ts';
import { DeploymentRouter } from './deployment-router.ts';
import type { DeploymentConfig } from './deployments-config.ts';
import type { Api } from './upstream-interface.ts';

/** The router and what the rest of the gateway reads of the deployments. */
export interface Deployments {
  router: DeploymentRouter;
  /** The single upstream's deployment of each API, if configured. */
  defaults: Partial<Record<Api, Deployment>>;
  /** Every key's outbound pacer, of every deployment. */
  outbounds: (OutboundLimiter | SharedOutboundLimiter)[];
  /** Model names the listed deployments serve, per API (the single upstreams list theirs themselves). */
  listed: Record<Api, string[]>;
}

/** What a deployment's `providerLimits` says of the quotas a call is paced by, per minute. */
function configuredLimits(d: DeploymentConfig): ConfiguredLimits | undefined {
  const p = d.providerLimits;
  if (p === undefined) return undefined;
  // A call's estimate counts its input: the tighter of the total and the input quotas paces it.
  const tokens = Math.min(p.tpm ?? Number.POSITIVE_INFINITY, p.itpm ?? Number.POSITIVE_INFINITY);
  return {
    ...(p.rpm === undefined ? {} : { requests: p.rpm }),
    ...(tokens === Number.POSITIVE_INFINITY ? {} : { tokens }),
    windowMs: 60_000,
  };
}

/**
 * Builds the deployments of `config` behind one router. With `redis`, each key's pacing budget is shared
 * by every node using the same provider URL and key.
 */
export function buildDeployments(
  config: GatewayConfig,
  registry: Registry,
  redis?: RedisClient,
): Deployments {
  const outbounds: (OutboundLimiter | SharedOutboundLimiter)[] = [];
  const defaults: Partial<Record<Api, Deployment>> = {};
  const pacer = (deployment: Deployment, key: number) => {
    const limits = configuredLimits(deployment.config);
    const options: OutboundLimiterOptions = {
      maxWaitMs: config.queueTimeoutMs,
      // Before the key's first answer, at most the deployment's concurrency limit goes at once.
      learningConcurrency: () => deployment.limit.limit,
      ...(limits === undefined ? {} : { limits }),
    };
    const outbound =
      redis === undefined
        ? new OutboundLimiter(options)
        : new SharedOutboundLimiter({
            ...options,
            redis,
            // The provider's budget is the key's at that URL, whichever deployment or node uses it.
            key: `${deployment.config.baseUrl}\n${deployment.config.apiKeys[key] ?? ''}`,
            leaseMs: Math.max(60_000, 2 * config.upstreamTimeoutMs),
          });
    outbounds.push(outbound);
    return outbound;
  };
  const make = (d: DeploymentConfig, single: boolean) => {
    const deployment = new Deployment(d, {
      timeoutMs: config.upstreamTimeoutMs,
      retries: single ? config.upstreamRetries : 0,
      connections: config.upstreamConnections ?? config.maxConcurrency,
      failureThreshold: config.upstreamFailureThreshold,
      cooldownMs: config.upstreamCooldownMs,
      maxQueueSize: config.maxQueueSize,
      queueTimeoutMs: config.queueTimeoutMs,
      pacer,
    });
    return deployment;
  };
  const single = (api: Api, baseUrl: string | undefined, apiKey: string | undefined) => {
    if (baseUrl === undefined) return;
    defaults[api] = make(
      {
        name: `${api}-default`,
        api,
        baseUrl,
        apiKeys: apiKey === undefined ? [] : [apiKey],
        models: undefined,
        priority: 0,
        weight: 1,
        // The gateway's own limit already bounds it.
        maxConcurrency: config.maxConcurrency,
        providerLimits: undefined,
      },
      true,
    );
  };
  single('openai', config.upstreamUrl, config.upstreamApiKey);
  single('anthropic', config.anthropicUpstreamUrl, config.anthropicApiKey);
  const listed: Record<Api, string[]> = { openai: [], anthropic: [] };
  const all: Deployment[] = [...Object.values(defaults)];
  for (const d of config.deployments) {
    all.push(make(d, false));
    for (const model of Object.keys(d.models ?? {}))
      if (!listed[d.api].includes(model)) listed[d.api].push(model);
  }
  const router = new DeploymentRouter(all, { retries: config.upstreamRetries, registry });
  return { router, defaults, outbounds, listed };
}
