import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { jsonSerializer } from '../../src/cache/index.ts';

const roundTrip = (value: unknown) => jsonSerializer.deserialize(jsonSerializer.serialize(value));

describe('the default serializer keeps what plain JSON loses', () => {
  it('round-trips Date, Map, Set, BigInt and Buffer, also nested', () => {
    const value = {
      at: new Date('2026-01-02T03:04:05.678Z'),
      map: new Map<unknown, unknown>([
        ['a', 1],
        [2, new Set(['x'])],
      ]),
      set: new Set([1, 'two', new Date(0)]),
      big: 12345678901234567890n,
      buf: Buffer.from([0, 1, 2, 255]),
      list: [new Date(1), 3n],
    };
    assert.deepEqual(roundTrip(value), value);
  });

  it('keeps undefined distinct from null, at the top and inside objects and arrays', () => {
    assert.equal(roundTrip(undefined), undefined);
    assert.equal(roundTrip(null), null);
    const back = roundTrip({ u: undefined, n: null, list: [undefined, null] }) as Record<string, unknown>;
    assert.ok('u' in back);
    assert.equal(back.u, undefined);
    assert.equal(back.n, null);
    assert.deepEqual(back.list, [undefined, null]);
  });

  it('keeps falsy values, NaN and infinities', () => {
    for (const v of [0, '', false, -1.5, 'text']) assert.equal(roundTrip(v), v);
    assert.ok(Number.isNaN(roundTrip(Number.NaN)));
    assert.equal(roundTrip(Number.POSITIVE_INFINITY), Number.POSITIVE_INFINITY);
    assert.equal(roundTrip(Number.NEGATIVE_INFINITY), Number.NEGATIVE_INFINITY);
  });

  it('writes plain JSON for plain values', () => {
    assert.equal(jsonSerializer.serialize({ a: [1, 'b', null] }), '{"a":[1,"b",null]}');
  });

  it('refuses functions, symbols, cycles and its own reserved property name', () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    for (const bad of [() => 1, { f: () => 1 }, Symbol('s'), cyclic, { '\u0000cp': 'x' }]) {
      assert.throws(() => jsonSerializer.serialize(bad), TypeError);
    }
  });

  it('a string that merely contains the marker is read back as the same string', () => {
    const tricky = { s: '"\\u0000cp"', t: '\u0000cp' };
    assert.deepEqual(roundTrip(tricky), tricky);
  });
});
