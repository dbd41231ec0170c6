/**
 * What tokens cost, when the configuration says (`prices`): per model, per million input, cached-input
 * (read from the provider's prompt cache), cache-write and output tokens, in whatever currency the operator
 * writes them. With them the gateway counts spend and savings per tenant and model; without them it counts
 * tokens only. No price list is built in: prices change, and a stale one would mislead.
 *
 * ```yaml
 * prices:
 *   gpt-4o-mini: { input: 0.15, cachedInput: 0.075, output: 0.6 }
 *   claude-sonnet-4: { input: 3, cachedInput: 0.3, cacheWrite: 3.75, output: 15 }
 * ```
 *
 * @module
 */
import { ConfigError } from '../errors.ts';
import type { TokenUsage } from '../tracing/index.ts';

/** One model's prices, per million tokens. */
export interface ModelPrice {
  /** An input token not read from (nor written to) the provider's prompt cache. */
  input: number;
  /** An input token read from the provider's prompt cache. @default input */
  cachedInput?: number;
  /** An input token written to the provider's prompt cache. @default input */
  cacheWrite?: number;
  output: number;
}

/** Prices by model name, as the client asks for the model. */
export type Prices = Record<string, ModelPrice>;

const FIELDS = ['input', 'cachedInput', 'cacheWrite', 'output'] as const;
const REQUIRED = ['input', 'output'] as const;

function price(name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw new ConfigError(
      name,
      `must be a price per million tokens (a number >= 0), got ${JSON.stringify(value)}`,
    );
  }
  return value;
}

/**
 * Reads the `prices` setting: an object of models, each an object of prices per million tokens.
 *
 * @throws {ConfigError} naming the model and the field (`prices.gpt-4o.output`), for anything else.
 */
export function parsePrices(name: string, raw: unknown): Prices | undefined {
  if (raw === undefined || raw === null || raw === false || raw === 'off') return undefined;
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigError(
      name,
      `must be an object of models, each { input, cachedInput?, cacheWrite?, output } per million tokens, got ${JSON.stringify(raw)}`,
    );
  }
  const prices: Prices = {};
  for (const [model, entry] of Object.entries(raw)) {
    const at = `${name}.${model}`;
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) {
      throw new ConfigError(
        at,
        `must be { input, cachedInput?, cacheWrite?, output }, got ${JSON.stringify(entry)}`,
      );
    }
    const fields = entry as Record<string, unknown>;
    for (const key of Object.keys(fields)) {
      if (!(FIELDS as readonly string[]).includes(key)) {
        throw new ConfigError(`${at}.${key}`, `unknown price (${FIELDS.join(', ')})`);
      }
    }
    for (const key of REQUIRED) {
      if (fields[key] === undefined) throw new ConfigError(`${at}.${key}`, 'is required');
    }
    const input = price(`${at}.input`, fields.input);
    prices[model] = {
      input,
      cachedInput: fields.cachedInput === undefined ? input : price(`${at}.cachedInput`, fields.cachedInput),
      cacheWrite: fields.cacheWrite === undefined ? input : price(`${at}.cacheWrite`, fields.cacheWrite),
      output: price(`${at}.output`, fields.output),
    };
  }
  return prices;
}

/** What one answer's usage costs at `price`: its input split by the prompt cache, and its output. */
export function costOf(price: ModelPrice, usage: TokenUsage): number {
  const read = usage.cacheRead ?? 0;
  const write = usage.cacheWrite ?? 0;
  const uncached = Math.max(0, usage.input - read - write);
  return (
    (uncached * price.input +
      read * (price.cachedInput ?? price.input) +
      write * (price.cacheWrite ?? price.input) +
      usage.output * price.output) /
    1e6
  );
}

/** What the provider's prompt cache saved on one answer: its cached input at the input price less the cached price. */
export function promptCacheSavingOf(price: ModelPrice, usage: TokenUsage): number {
  return ((usage.cacheRead ?? 0) * Math.max(0, price.input - (price.cachedInput ?? price.input))) / 1e6;
}
