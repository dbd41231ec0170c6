/**
 * The `deployments` setting: the upstreams each model runs on, validated like every other setting. An
 * error names the entry and the field (`deployments[1].weight`), and the gateway does not start.
 *
 * @module
 */
import { ConfigError } from '../errors.ts';
import { baseUrl, integer, text } from './config-checks.ts';
import { isObject } from './context.ts';
import type { Api } from './upstream-interface.ts';

/** What a provider allows one deployment, per minute; learned from its headers when absent. */
export interface ProviderLimits {
  rpm?: number;
  /** Input plus output tokens. */
  tpm?: number;
  /** Input tokens (Anthropic's split). */
  itpm?: number;
  /** Output tokens (Anthropic's split). */
  otpm?: number;
}

/** One deployment: an upstream, its keys, and the models it serves. */
export interface DeploymentConfig {
  /** Unique; shown in metrics and the `x-clawperf-deployment` header. */
  name: string;
  /** The protocol the upstream speaks. */
  api: Api;
  /** The base URL: OpenAI-compatible with its version path; Anthropic's as its SDK takes it. */
  baseUrl: string;
  /** Keys used in turn; none for an upstream that needs none. */
  apiKeys: string[];
  /** Gateway model name -> upstream model name; `undefined` serves every model (the default deployments). */
  models: Record<string, string> | undefined;
  /** Lower is tried first; the next priority is the fallback. @default 0 */
  priority: number;
  /** Share among the usable deployments of one priority. @default 1 */
  weight: number;
  /** Calls in flight at once, or `'adaptive'`. @default 'adaptive' */
  maxConcurrency: number | 'adaptive';
  providerLimits: ProviderLimits | undefined;
}

const FIELDS = new Set([
  'name',
  'api',
  'baseUrl',
  'apiKeys',
  'models',
  'priority',
  'weight',
  'maxConcurrency',
  'providerLimits',
]);

function modelsOf(name: string, value: unknown): Record<string, string> {
  const models: Record<string, string> = {};
  if (Array.isArray(value)) {
    value.forEach((m, i) => {
      const model = text(`${name}[${i}]`, m);
      models[model] = model;
    });
  } else if (isObject(value)) {
    for (const [gateway, upstream] of Object.entries(value))
      models[gateway] = text(`${name}.${gateway}`, upstream);
  } else {
    throw new ConfigError(name, 'must be a list of model names or a map { gateway-name: upstream-name }');
  }
  if (Object.keys(models).length === 0) throw new ConfigError(name, 'must name at least one model');
  return models;
}

function limitsOf(name: string, value: unknown): ProviderLimits | undefined {
  if (value === undefined) return undefined;
  if (!isObject(value)) throw new ConfigError(name, 'must be an object { rpm, tpm, itpm, otpm }');
  const limits: ProviderLimits = {};
  for (const [k, v] of Object.entries(value)) {
    if (k !== 'rpm' && k !== 'tpm' && k !== 'itpm' && k !== 'otpm') {
      throw new ConfigError(`${name}.${k}`, 'unknown limit; known: rpm, tpm, itpm, otpm');
    }
    limits[k] = integer(`${name}.${k}`, v, 1);
  }
  return limits;
}

/** One entry of the list, validated. */
function deploymentOf(at: string, raw: unknown): DeploymentConfig {
  if (!isObject(raw)) throw new ConfigError(at, 'must be an object');
  for (const key of Object.keys(raw)) {
    if (!FIELDS.has(key))
      throw new ConfigError(`${at}.${key}`, `unknown field; known: ${[...FIELDS].join(', ')}`);
  }
  const name = text(`${at}.name`, raw.name);
  if (raw.api !== 'openai' && raw.api !== 'anthropic') {
    throw new ConfigError(`${at}.api`, `must be "openai" or "anthropic", got ${JSON.stringify(raw.api)}`);
  }
  const api: Api = raw.api;
  let apiKeys: string[] = [];
  if (raw.apiKeys !== undefined) {
    if (!Array.isArray(raw.apiKeys)) throw new ConfigError(`${at}.apiKeys`, 'must be a list of keys');
    apiKeys = raw.apiKeys.map((k, i) => text(`${at}.apiKeys[${i}]`, k));
  }
  let maxConcurrency: number | 'adaptive' = 'adaptive';
  if (raw.maxConcurrency !== undefined && raw.maxConcurrency !== 'adaptive') {
    maxConcurrency = integer(`${at}.maxConcurrency`, raw.maxConcurrency, 1);
  }
  return {
    name,
    api,
    baseUrl: baseUrl(`${at}.baseUrl`, raw.baseUrl, api),
    apiKeys,
    models: modelsOf(`${at}.models`, raw.models),
    priority: raw.priority === undefined ? 0 : integer(`${at}.priority`, raw.priority, 0),
    weight: raw.weight === undefined ? 1 : integer(`${at}.weight`, raw.weight, 1),
    maxConcurrency,
    providerLimits: limitsOf(`${at}.providerLimits`, raw.providerLimits),
  };
}

/** Validates the `deployments` setting named `name`: a list of entries with unique names. */
export function parseDeployments(name: string, raw: unknown): DeploymentConfig[] {
  if (!Array.isArray(raw)) throw new ConfigError(name, 'must be a list of deployments');
  const deployments = raw.map((entry, i) => deploymentOf(`${name}[${i}]`, entry));
  const seen = new Set<string>();
  deployments.forEach((d, i) => {
    if (seen.has(d.name))
      throw new ConfigError(`${name}[${i}].name`, `${JSON.stringify(d.name)} is used twice`);
    seen.add(d.name);
  });
  return deployments;
}
