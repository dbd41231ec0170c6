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
import { OutboundLimiter } from '../concurrency/index.ts';
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
  outbounds: OutboundLimiter[];
  /** Model names the listed deployments serve, per API (the single upstreams list theirs themselves). */
  listed: Record<Api, string[]>;
}

export function buildDeployments(config: GatewayConfig, registry: Registry): Deployments {
  const outbounds: OutboundLimiter[] = [];
  const defaults: Partial<Record<Api, Deployment>> = {};
  const make = (d: DeploymentConfig, single: boolean) => {
    const deployment = new Deployment(d, {
      timeoutMs: config.upstreamTimeoutMs,
      retries: single ? config.upstreamRetries : 0,
      connections: config.upstreamConnections,
      failureThreshold: config.upstreamFailureThreshold,
      cooldownMs: config.upstreamCooldownMs,
      maxQueueSize: config.maxQueueSize,
      queueTimeoutMs: config.queueTimeoutMs,
      pacer: () => {
        const outbound = new OutboundLimiter({ maxWaitMs: config.queueTimeoutMs });
        outbounds.push(outbound);
        return outbound;
      },
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
