/**
 * The checks settings are read with, written once for the flat settings (config-values.ts) and the
 * `deployments` list (deployments-config.ts): each throws {@link ConfigError} naming the setting or field.
 *
 * @module
 */
import { ConfigError } from '../errors.ts';
import { parseRedisUrl } from '../internal/redis.ts';
import type { Api } from './upstream-interface.ts';

/** An integer of at least `min`. */
export function integer(name: string, value: unknown, min = 1): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
    throw new ConfigError(name, `must be an integer >= ${min}, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** A non-empty string. */
export function text(name: string, value: unknown): string {
  if (typeof value !== 'string' || value === '') {
    throw new ConfigError(name, `must be a non-empty string, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** A URL whose protocol is one of `protocols` (`'http:'`, ...), as given. */
export function url(name: string, raw: unknown, protocols: readonly string[]): string {
  if (typeof raw !== 'string' || raw === '') {
    throw new ConfigError(name, `must be a URL, got ${JSON.stringify(raw)}`);
  }
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new ConfigError(name, `must be a URL, got ${JSON.stringify(raw)}`);
  }
  if (!protocols.includes(parsed.protocol)) {
    throw new ConfigError(name, `must be a ${protocols.join(' or ')} URL, got ${JSON.stringify(raw)}`);
  }
  return raw;
}

/** A Redis URL of a form the gateway connects to (one server or a Cluster, TLS or not), as given. */
export function redisUrl(name: string, raw: unknown): string {
  try {
    parseRedisUrl(name, raw);
  } catch (error) {
    // The check's message starts with the name, which ConfigError puts first itself.
    throw new ConfigError(name, (error as Error).message.slice(name.length + 1), { cause: error });
  }
  return raw as string;
}

/**
 * An upstream's base URL of `api`, without a final slash: an OpenAI-compatible one with its version path as
 * given, Anthropic's as its SDK takes it (a trailing `/v1` dropped: the version path is the gateway's to add).
 */
export function baseUrl(name: string, raw: unknown, api: Api): string {
  const trimmed = url(name, raw, ['http:', 'https:']).replace(/\/+$/, '');
  return api === 'anthropic' ? trimmed.replace(/\/v1$/, '') : trimmed;
}
