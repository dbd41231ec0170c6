/**
 * Validation at the door: each component checks its options with these and throws a `TypeError` that names
 * the option, what it must be and the value it got.
 */

function fail(name: string, expected: string, value: unknown): never {
  throw new TypeError(`${name} must be ${expected}, got ${show(value)}`);
}

function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'function') return 'a function';
  if (Array.isArray(value)) return 'an array';
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
  return fail(name, `an integer >= ${min}${allowInfinity ? ' (or Infinity)' : ''}`, value);
}

/** A finite number >= `min` (default 0). */
export function number(name: string, value: unknown, min = 0): number {
  if (typeof value === 'number' && Number.isFinite(value) && value >= min) return value;
  return fail(name, `a finite number >= ${min}`, value);
}

/** A number in [0, 1]. */
export function ratio(name: string, value: unknown): number {
  if (typeof value === 'number' && value >= 0 && value <= 1) return value;
  return fail(name, 'a number between 0 and 1', value);
}

/** A function. */
export function fn<F extends (...args: never[]) => unknown>(name: string, value: unknown): F {
  if (typeof value === 'function') return value as F;
  return fail(name, 'a function', value);
}

/** One of the listed strings. */
export function oneOf<T extends string>(name: string, value: unknown, allowed: readonly T[]): T {
  if (typeof value === 'string' && (allowed as readonly string[]).includes(value)) return value as T;
  return fail(name, `one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}`, value);
}

/** A plain options object (or undefined, read as `{}`). */
export function object<T extends object>(name: string, value: unknown): T {
  if (value === undefined) return {} as T;
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) return value as T;
  return fail(name, 'an object', value);
}

/** An object with a `now()` method. */
export function clock<C extends { now(): number }>(name: string, value: unknown): C {
  if (value !== null && typeof value === 'object' && typeof (value as { now?: unknown }).now === 'function') {
    return value as C;
  }
  return fail(name, 'an object with a now() method', value);
}
