import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Ring } from '../../src/internal/ring.ts';

describe('Ring', () => {
  it('is first in, first out, and unshift puts an item back at the front', () => {
    const ring = new Ring<number>();
    for (let i = 0; i < 3; i++) ring.push(i);
    assert.equal(ring.shift(), 0);
    ring.unshift(-1);
    assert.equal(ring.peek(), -1);
    assert.deepEqual([ring.shift(), ring.shift(), ring.shift(), ring.shift()], [-1, 1, 2, undefined]);
    assert.equal(ring.length, 0);
  });

  it('agrees with an array over 10,000 random operations, across growth and wrap-around', () => {
    const ring = new Ring<number>();
    const model: number[] = [];
    let seed = 42;
    const random = () => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    for (let i = 0; i < 10_000; i++) {
      const r = random();
      if (r < 0.45) {
        ring.push(i);
        model.push(i);
      } else if (r < 0.55) {
        ring.unshift(i);
        model.unshift(i);
      } else {
        assert.equal(ring.shift(), model.shift());
      }
      assert.equal(ring.length, model.length);
      assert.equal(ring.peek(), model[0]);
    }
    assert.deepEqual([...ring], model);
  });
});
