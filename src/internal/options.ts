/**
 * Validation at the door: each component checks its options with these and throws a `TypeError` of one
 * shape, `<option> must be <what it may be>, got <the value>`, where the option is named by its path from the
 * argument (`options.maxQueueSize`, `options.cache.ttlMs`, `options.policies[0].unit`) and what it may be
 * carries the allowed range (`an integer >= 1`, `<= options.max (8)`).
 *
 * @example
 * const o = check.object<PoolOptions>('options', options);
 * const max = check.integer('options.max', o.max ?? DEFAULT_MAX, 1);
 * const min = check.atMost('options.min', check.integer('options.min', o.min ?? 0), 'options.max', max);
 */

/** Throws the one `TypeError`: for a check the helpers below do not cover (a URL, a metric name). */
export function invalid(name: string, expected: string, value: unknown): never {
  throw new TypeError(`${name} must be ${expected}, got ${show(value)}`);
}

function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'function') return 'a function';
  if (Array.isArray(value)) return `an array of ${value.length}`;
  if (value !== null && typeof value === 'object') return 'an object';
  return String(value);
}

/** An integer >= `min` (default 0), or `Infinity` when `allowInfinity`. */
export function integer(name: string, value: unknown, min = 0, allowInfinity = false): number {
  if (
    typeof value === 'number' &&
    ((Number.isInteger(value) && value >= min) || (allowInfinity && value === Infinity))
  ) {
    return value;
  }
  return invalid(name, `an integer >= ${min}${allowInfinity ? ' (or Infinity)' : ''}`, value);
}

/** A finite number >= `min` (default 0). */
export function number(name: string, value: unknown, min = 0): number {
  if (typeof value === 'number' && Number.isFinite(value) && value >= min) return value;
  return invalid(name, `a finite number >= ${min}`, value);
}

/** A finite number > 0. */
export function positive(name: string, value: unknown): number {
  if (typeof value === 'number' && Number.isFinite(value) && value > 0) return value;
  return invalid(name, 'a finite number > 0', value);
}

/** Any finite number, negative ones included. */
export function finite(name: string, value: unknown): number {
  if (typeof value === 'number' && Number.isFinite(value)) return value;
  return invalid(name, 'a finite number', value);
}

/** A number in [0, 1]. */
export function ratio(name: string, value: unknown): number {
  if (typeof value === 'number' && value >= 0 && value <= 1) return value;
  return invalid(name, 'a number between 0 and 1', value);
}

/** A number that stands in `relation` to another option's value, which the message names: `<= options.max (8)`. */
export function compared(
  name: string,
  value: number,
  relation: '<' | '<=' | '>' | '>=',
  otherName: string,
  other: number,
): number {
  const ok =
    relation === '<'
      ? value < other
      : relation === '<='
        ? value <= other
        : relation === '>'
          ? value > other
          : value >= other;
  if (ok) return value;
  return invalid(name, `${relation} ${otherName} (${other})`, value);
}

/** A boolean. */
export function boolean(name: string, value: unknown): boolean {
  if (typeof value === 'boolean') return value;
  return invalid(name, 'a boolean', value);
}

/** A string of at least one character. */
export function string(name: string, value: unknown): string {
  if (typeof value === 'string' && value.length > 0) return value;
  return invalid(name, 'a non-empty string', value);
}

/** A function. */
export function fn<F extends (...args: never[]) => unknown>(name: string, value: unknown): F {
  if (typeof value === 'function') return value as F;
  return invalid(name, 'a function', value);
}

/** One of the listed strings. */
export function oneOf<T extends string>(name: string, value: unknown, allowed: readonly T[]): T {
  if (typeof value === 'string' && (allowed as readonly string[]).includes(value)) return value as T;
  return invalid(name, `one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}`, value);
}

/** A plain options object (or undefined, read as `{}`). */
export function object<T extends object>(name: string, value: unknown): T {
  if (value === undefined) return {} as T;
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) return value as T;
  return invalid(name, 'an object', value);
}

/** An instance of `type`, described in the message as `what` (`'a prom-client Registry'`). */
export function instance<T>(
  name: string,
  value: unknown,
  type: abstract new (...args: never[]) => T,
  what: string,
): T {
  if (value instanceof type) return value;
  return invalid(name, what, value);
}

/** An `AbortSignal`. */
export function signal(name: string, value: unknown): AbortSignal {
  return instance(name, value, AbortSignal, 'an AbortSignal');
}

/** An object with a `now()` method. */
export function clock<C extends { now(): number }>(name: string, value: unknown): C {
  if (value !== null && typeof value === 'object' && typeof (value as { now?: unknown }).now === 'function') {
    return value as C;
  }
  return invalid(name, 'an object with a now() method', value);
}
