/**
 * How the raw value of a setting (a string from a flag or the environment, or anything from a config file
 * or from code) becomes its validated value, by the setting's kind. A bad value throws
 * {@link ConfigError} naming the setting.
 *
 * @module
 */
import { availableParallelism } from 'node:os';
import { ConfigError } from '../errors.ts';
import type { GatewayConfig, GatewayLimits } from './config.ts';
import { baseUrl, integer, redisUrl, text, url } from './config-checks.ts';
import { parseDeployments } from './deployments-config.ts';
import { parsePrices } from './prices.ts';

/** What kind of value a setting holds, which decides how a raw value is read. */
export type Kind =
  | 'port'
  | 'string'
  | 'url'
  | 'integer'
  | 'boolean'
  | 'dir'
  | 'keys'
  | 'limits'
  | 'deployments'
  | 'workers'
  | 'prices'
  | 'choice';

/** One setting: its key, flag, environment variable, kind, lower bound, help and default as text. */
export interface Setting {
  key: keyof GatewayConfig;
  flag: string;
  env: string | undefined;
  kind: Kind;
  min?: number;
  /** The values a `choice` setting takes. */
  choices?: readonly string[];
  help: string;
  defaultText: string;
}

/** Parses `rpm=60,tpm=90000`. */
function parseLimits(name: string, text: string): GatewayLimits | undefined {
  const trimmed = text.trim();
  if (trimmed === '' || trimmed === 'off') return undefined;
  const limits: GatewayLimits = {};
  for (const part of trimmed.split(',')) {
    const [k, v, extra] = part.split('=').map((s) => s.trim());
    if ((k !== 'rpm' && k !== 'tpm') || v === undefined || extra !== undefined) {
      throw new ConfigError(name, `expected entries rpm=<n> or tpm=<n> separated by commas, got "${part}"`);
    }
    limits[k] = integer(`${name}.${k}`, Number(v));
  }
  return limits;
}

/** Parses `key1:tenant1,key2:tenant2`. */
function parseKeys(name: string, text: string): Record<string, string> {
  const keys: Record<string, string> = {};
  for (const part of text.split(',')) {
    const entry = part.trim();
    if (entry === '') continue;
    const at = entry.lastIndexOf(':');
    const key = entry.slice(0, at).trim();
    const tenant = entry.slice(at + 1).trim();
    if (at <= 0 || key === '' || tenant === '') {
      throw new ConfigError(name, `expected comma-separated key:tenant pairs, got "${entry}"`);
    }
    keys[key] = tenant;
  }
  return keys;
}

/** Converts one raw value (a string from flags/env, or anything from a config file) for `setting`. */
export function convert(setting: Setting, name: string, raw: unknown): unknown {
  const fromText = typeof raw === 'string';
  switch (setting.kind) {
    case 'port': {
      const n = fromText && /^\d+$/.test(raw.trim()) ? Number(raw) : raw;
      const port = integer(name, n, 0);
      if (port > 65_535) throw new ConfigError(name, `must be a port number 0-65535, got ${port}`);
      return port;
    }
    case 'integer': {
      const n = fromText && /^\d+$/.test(raw.trim()) ? Number(raw) : raw;
      return integer(name, n, setting.min ?? 0);
    }
    case 'string':
      return text(name, raw);
    case 'url':
      if (setting.key === 'redisUrl') return redisUrl(name, raw);
      if (setting.key === 'upstreamUrl') return baseUrl(name, raw, 'openai');
      if (setting.key === 'anthropicUpstreamUrl') return baseUrl(name, raw, 'anthropic');
      return url(name, raw, ['http:', 'https:']);
    case 'workers': {
      // `auto`: one per core the process may use.
      if (typeof raw === 'string' && raw.trim().toLowerCase() === 'auto') return availableParallelism();
      const n = fromText && /^\d+$/.test(raw.trim()) ? Number(raw) : raw;
      return integer(name, n, 1);
    }
    case 'deployments': {
      if (!fromText) return parseDeployments(name, raw);
      try {
        return parseDeployments(name, JSON.parse(raw));
      } catch (error) {
        if (error instanceof ConfigError) throw error;
        throw new ConfigError(name, `must be a JSON list of deployments: ${(error as Error).message}`);
      }
    }
    case 'prices': {
      if (!fromText) return parsePrices(name, raw);
      if (raw.trim() === 'off') return undefined;
      try {
        return parsePrices(name, JSON.parse(raw));
      } catch (error) {
        if (error instanceof ConfigError) throw error;
        throw new ConfigError(name, `must be a JSON object of prices per model: ${(error as Error).message}`);
      }
    }
    case 'choice': {
      const choices = setting.choices ?? [];
      const value = fromText ? raw.trim().toLowerCase() : raw;
      if (typeof value === 'string' && choices.includes(value)) return value;
      throw new ConfigError(name, `must be one of ${choices.join(', ')}, got ${JSON.stringify(raw)}`);
    }
    case 'boolean':
      if (raw === true || raw === false) return raw;
      if (fromText && /^(on|true|1|yes)$/i.test(raw.trim())) return true;
      if (fromText && /^(off|false|0|no)$/i.test(raw.trim())) return false;
      throw new ConfigError(name, `must be on or off (true or false), got ${JSON.stringify(raw)}`);
    case 'dir':
      if (raw === false || raw === 'off' || raw === 'false') return false;
      if (typeof raw !== 'string' || raw === '') {
        throw new ConfigError(name, `must be a directory path or "off", got ${JSON.stringify(raw)}`);
      }
      return raw;
    case 'keys':
      if (typeof raw === 'string') return parseKeys(name, raw);
      if (raw !== null && typeof raw === 'object' && !Array.isArray(raw)) {
        const keys: Record<string, string> = {};
        for (const [key, tenant] of Object.entries(raw)) {
          if (typeof tenant !== 'string' || tenant === '') {
            throw new ConfigError(`${name}.${key}`, `must be a tenant name, got ${JSON.stringify(tenant)}`);
          }
          keys[key] = tenant;
        }
        return keys;
      }
      throw new ConfigError(name, `must be key:tenant pairs or an object, got ${JSON.stringify(raw)}`);
    case 'limits':
      if (typeof raw === 'string') return parseLimits(name, raw);
      if (raw === false || raw === null) return undefined;
      if (typeof raw === 'object' && !Array.isArray(raw)) {
        const limits: GatewayLimits = {};
        for (const [k, v] of Object.entries(raw)) {
          if (k !== 'rpm' && k !== 'tpm') throw new ConfigError(`${name}.${k}`, 'unknown limit (rpm, tpm)');
          limits[k] = integer(`${name}.${k}`, v);
        }
        return limits;
      }
      throw new ConfigError(name, `must be "rpm=<n>,tpm=<n>" or an object, got ${JSON.stringify(raw)}`);
  }
}
