/**
 * One deployment of a model: an upstream (one connection pool and one circuit breaker), its keys used in
 * turn, the models it serves under their upstream names, its own concurrency limit, and what the router
 * reads to choose it (calls in flight, a moving average of its latency, whether its circuit lets calls
 * through).
 *
 * @module
 */
import { UpstreamError } from '../errors.ts';
import { BackpressureController } from '../resources/index.ts';
import type { DeploymentConfig } from './deployments-config.ts';
import { HttpUpstream } from './http-upstream.ts';
import { type OutboundPacer, UpstreamClient } from './upstream.ts';
import type { Api, UpstreamIdentity, UpstreamReply, UpstreamRequest } from './upstream-interface.ts';

/** Weight of the newest latency in the moving average. */
const EWMA_ALPHA = 0.2;

/** How a deployment's client is made. */
export interface DeploymentOptions {
  timeoutMs: number;
  /** Retries inside the deployment (the router moves to another one instead when it can). */
  retries: number;
  connections: number;
  failureThreshold: number;
  cooldownMs: number;
  /** Callers waiting for one of its slots, and for how long. */
  maxQueueSize: number;
  queueTimeoutMs: number;
  /** The pacer of key `key` (its index), fed by the provider's rate-limit headers to it. */
  pacer?: (deployment: Deployment, key: number) => OutboundPacer;
}

export class Deployment {
  readonly config: DeploymentConfig;
  readonly name: string;
  readonly api: Api;
  readonly client: UpstreamClient;
  readonly limit: BackpressureController;
  readonly #upstream: HttpUpstream;
  /** Each key's pacer: a 429 or an exhausted budget of one key does not hold the others. */
  readonly pacers: OutboundPacer[];
  #nextKey = 0;
  /** Calls in flight now. */
  inFlight = 0;
  /** Moving average of its answers' latency, ms; 0 until it answered. */
  latencyMs = 0;

  constructor(config: DeploymentConfig, options: DeploymentOptions) {
    this.config = config;
    this.name = config.name;
    this.api = config.api;
    this.client = new UpstreamClient({
      baseUrl: config.api === 'anthropic' ? `${config.baseUrl}/v1` : config.baseUrl,
      // A single key is the client's own (its model list is fetched with it too); several go per call.
      ...(config.apiKeys.length === 1
        ? {
            apiKey: config.apiKeys[0],
            auth: config.api === 'anthropic' ? ('x-api-key' as const) : ('bearer' as const),
          }
        : {}),
      timeoutMs: options.timeoutMs,
      retries: options.retries,
      connections: options.connections,
      breaker: { failureThreshold: options.failureThreshold, cooldownMs: options.cooldownMs },
    });
    this.#upstream = new HttpUpstream(this.client, config.api);
    this.limit = new BackpressureController({
      maxConcurrency: config.maxConcurrency,
      // A 503 or Anthropic's 529 under load: an adaptive limit halves.
      overloaded: (error) => error instanceof UpstreamError && (error.status === 503 || error.status === 529),
      maxQueueSize: options.maxQueueSize,
      queueTimeoutMs: options.queueTimeoutMs,
      name: `deployment ${config.name}`,
    });
    const pacer = options.pacer;
    this.pacers = pacer === undefined ? [] : Array.from({ length: this.keys }, (_, key) => pacer(this, key));
  }

  /** Whether it serves `model` in `api`. */
  serves(api: Api, model: string): boolean {
    return api === this.api && (this.config.models === undefined || model in this.config.models);
  }

  /** Whether its circuit lets calls through (closed, or half-open for a probe). */
  get usable(): boolean {
    return this.client.circuitState !== 'open';
  }

  /** How many keys it has (at least 1: an upstream that needs no key). */
  get keys(): number {
    return Math.max(1, this.config.apiKeys.length);
  }

  /** The next key in turn whose pacer would send a call now; the next in turn when every key would wait. */
  nextKey(): number {
    const n = this.keys;
    // One key is the only choice: its pacer decides when the call goes.
    if (n === 1) return 0;
    const start = this.#nextKey;
    for (let i = 0; i < n && this.pacers.length === n; i++) {
      const key = (start + i) % n;
      if (this.pacers[key]!.wouldWait?.() !== true) {
        this.#nextKey = (key + 1) % n;
        return key;
      }
    }
    this.#nextKey = (start + 1) % n;
    return start;
  }

  identity(): UpstreamIdentity {
    return this.#upstream.identity();
  }

  /** The API's key header of key `key` (none for an upstream that needs no key). */
  #auth(key: number): Record<string, string> {
    const secret = this.config.apiKeys[key];
    if (secret === undefined) return {};
    return this.api === 'anthropic' ? { 'x-api-key': secret } : { authorization: `Bearer ${secret}` };
  }

  /** A GET or DELETE of `path` (a stored response) with key `key`. */
  request(method: 'GET' | 'DELETE', path: string, key: number) {
    const options = { headers: this.#auth(key) };
    return method === 'GET' ? this.client.getJson(path, options) : this.client.deleteJson(path, options);
  }

  /** One call with key `key`: the model under its upstream name, the key in the API's header. */
  async call(request: UpstreamRequest, key: number, signal?: AbortSignal): Promise<UpstreamReply> {
    const upstreamModel = this.config.models?.[request.model] ?? request.model;
    const body = upstreamModel === request.model ? request.body : { ...request.body, model: upstreamModel };
    const headers = { ...request.headers, ...this.#auth(key) };
    // In flight counts the calls waiting for one of its slots too: the router weighs the load by it. Its
    // latency is the upstream's alone, from the slot on, so the wait is not counted twice.
    this.inFlight++;
    try {
      return await this.limit.run(async () => {
        const start = performance.now();
        const reply = await this.#upstream.call(
          { ...request, body, headers },
          { signal, pacer: this.pacers[key] },
        );
        const ms = performance.now() - start;
        this.latencyMs = this.latencyMs === 0 ? ms : this.latencyMs + EWMA_ALPHA * (ms - this.latencyMs);
        return reply;
      });
    } finally {
      this.inFlight--;
    }
  }

  async close(): Promise<void> {
    await this.limit.close();
    await this.client.close();
  }
}
