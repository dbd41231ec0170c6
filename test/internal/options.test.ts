import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as check from '../../src/internal/options.ts';

describe('option validation', () => {
  it('returns valid values unchanged', () => {
    assert.equal(check.integer('o.n', 3, 1), 3);
    assert.equal(check.integer('o.n', Infinity, 0, true), Infinity);
    assert.equal(check.number('o.ms', 0.5), 0.5);
    assert.equal(check.ratio('o.r', 1), 1);
    assert.equal(check.oneOf('o.mode', 'b', ['a', 'b']), 'b');
    assert.deepEqual(check.object('o', undefined), {});
    assert.equal(check.positive('o.ms', 0.1), 0.1);
    assert.equal(check.finite('o.priority', -3), -3);
    assert.equal(check.compared('o.min', 2, '<=', 'o.max', 2), 2);
    assert.equal(check.boolean('o.on', false), false);
    assert.equal(check.string('o.name', 'x'), 'x');
    const signal = new AbortController().signal;
    assert.equal(check.signal('o.signal', signal), signal);
  });

  const bad: [string, () => unknown, RegExp][] = [
    [
      'negative integer',
      () => check.integer('options.maxQueueSize', -1),
      /options\.maxQueueSize must be an integer >= 0, got -1/,
    ],
    [
      'fraction',
      () => check.integer('options.max', 1.5, 1),
      /options\.max must be an integer >= 1, got 1\.5/,
    ],
    ['Infinity not allowed', () => check.integer('options.max', Infinity), /got Infinity/],
    [
      'NaN',
      () => check.number('options.ttlMs', Number.NaN),
      /options\.ttlMs must be a finite number >= 0, got NaN/,
    ],
    ['string number', () => check.number('options.ttlMs', '5'), /got "5"/],
    ['ratio above 1', () => check.ratio('options.warningRatio', 1.2), /between 0 and 1, got 1\.2/],
    [
      'not a function',
      () => check.fn('options.create', {}),
      /options\.create must be a function, got an object/,
    ],
    ['unknown choice', () => check.oneOf('options.mode', 'c', ['a', 'b']), /one of "a", "b", got "c"/],
    ['array as options', () => check.object('options', []), /options must be an object, got an array/],
    ['clock without now', () => check.clock('options.clock', { now: 1 }), /now\(\) method/],
    ['bigint', () => check.number('options.n', 10n), /got 10n/],
    [
      'zero',
      () => check.positive('options.queueTimeoutMs', 0),
      /options\.queueTimeoutMs must be a finite number > 0, got 0/,
    ],
    ['infinite', () => check.finite('options.priority', -Infinity), /must be a finite number, got -Infinity/],
    [
      'out of order',
      () => check.compared('options.min', 5, '<=', 'options.max', 2),
      /options\.min must be <= options\.max \(2\), got 5/,
    ],
    ['not a boolean', () => check.boolean('options.validateOnIdle', 'yes'), /must be a boolean, got "yes"/],
    ['empty string', () => check.string('options.name', ''), /must be a non-empty string, got ""/],
    ['not a signal', () => check.signal('options.signal', {}), /must be an AbortSignal, got an object/],
    [
      'custom',
      () => check.invalid('options.url', 'an http(s) URL', 'ftp://x'),
      /options\.url must be an http\(s\) URL, got "ftp:\/\/x"/,
    ],
  ];
  for (const [what, call, message] of bad) {
    it(`throws a TypeError naming the option and the value: ${what}`, () => {
      assert.throws(call, (error: unknown) => error instanceof TypeError && message.test(error.message));
    });
  }
});
