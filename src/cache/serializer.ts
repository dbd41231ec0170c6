/**
 * How values become the strings Redis and disk hold. The default is JSON extended so that what plain JSON
 * loses survives the round trip: `Date`, `Map`, `Set`, `BigInt`, `Buffer`, `undefined` (distinct from
 * `null`, also inside objects and arrays), `NaN` and `±Infinity`. Output is plain JSON; special values are
 * objects with a reserved key, so a payload without them parses with one `JSON.parse` and no walk.
 */

/** Turns values into strings and back. Swap it through the cache's `serializer` option. */
export interface Serializer {
  /** Returns the stored form; throws when the value cannot be represented. */
  serialize(value: unknown): string;
  /** Inverse of {@link serialize}; throws on malformed input. */
  deserialize(text: string): unknown;
}

/** Reserved property marking an encoded special value. A value that uses it itself is refused. */
const MARK = '\u0000cp';
/** How {@link MARK} appears in JSON text. */
const MARK_JSON = '"\\u0000cp"';

type Holder = Record<string, unknown>;

function replacer(this: Holder, key: string, encoded: unknown): unknown {
  // `this[key]` is the value before `toJSON`, so a Date or Buffer is seen as what it is.
  const raw = this[key];
  switch (typeof raw) {
    case 'string':
    case 'boolean':
      return raw;
    case 'number':
      return Number.isFinite(raw) ? raw : { [MARK]: 'n', v: String(raw) };
    case 'undefined':
      return { [MARK]: 'u' };
    case 'bigint':
      return { [MARK]: 'b', v: raw.toString() };
    case 'function':
    case 'symbol':
      throw new TypeError(`a ${typeof raw} cannot be serialized`);
    default:
      if (raw === null) return null;
      if (raw instanceof Date) return { [MARK]: 'd', v: String(raw.getTime()) };
      if (Buffer.isBuffer(raw)) return { [MARK]: 'B', v: raw.toString('base64') };
      if (raw instanceof Map) return { [MARK]: 'm', v: [...raw] };
      if (raw instanceof Set) return { [MARK]: 's', v: [...raw] };
      if (Object.hasOwn(raw as object, MARK))
        throw new TypeError(`the property name ${JSON.stringify(MARK)} is reserved`);
      return encoded;
  }
}

function revive(node: unknown): unknown {
  if (node === null || typeof node !== 'object') return node;
  if (Array.isArray(node)) {
    for (let i = 0; i < node.length; i++) node[i] = revive(node[i]);
    return node;
  }
  const object = node as Holder;
  const kind = object[MARK];
  if (kind === undefined) {
    for (const key of Object.keys(object)) object[key] = revive(object[key]);
    return object;
  }
  const v = object.v;
  switch (kind) {
    case 'u':
      return undefined;
    case 'n':
      return Number(v);
    case 'b':
      return BigInt(v as string);
    case 'd':
      return new Date(Number(v));
    case 'B':
      return Buffer.from(v as string, 'base64');
    case 'm':
      return new Map(revive(v) as [unknown, unknown][]);
    case 's':
      return new Set(revive(v) as unknown[]);
    default:
      throw new TypeError(`unknown encoded type ${JSON.stringify(kind)}`);
  }
}

/**
 * The default serializer: JSON that keeps `Date`, `Map`, `Set`, `BigInt`, `Buffer`, `undefined` vs `null`,
 * `NaN` and `±Infinity`. Functions, symbols and cycles throw. Class instances other than those come back
 * as plain objects (their own enumerable properties, or what their `toJSON` returns).
 */
export const jsonSerializer: Serializer = {
  serialize(value: unknown): string {
    return JSON.stringify(value, replacer) as string;
  },
  deserialize(text: string): unknown {
    const parsed: unknown = JSON.parse(text);
    return text.includes(MARK_JSON) ? revive(parsed) : parsed;
  },
};
