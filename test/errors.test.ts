import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import * as errors from '../src/errors.ts';
import * as root from '../src/index.ts';

type Ctor = new (...args: never[]) => errors.ClawperfError;

// One sample construction per class: the table must cover every exported class (checked below).
const samples: Record<string, () => errors.ClawperfError> = {
  ClawperfError: () => new errors.ClawperfError('boom'),
  ClosedError: () => new errors.ClosedError('RequestBatcher'),
  OverloadedError: () => new errors.OverloadedError({ queueSize: 10, maxQueueSize: 10, retryAfterMs: 25 }),
  QueueTimeoutError: () => new errors.QueueTimeoutError(100),
  AcquireTimeoutError: () => new errors.AcquireTimeoutError(5_000, { cause: new Error('ECONNREFUSED') }),
  ResourceCreateError: () => new errors.ResourceCreateError({ cause: new Error('ECONNREFUSED') }),
  PoolReleaseError: () => new errors.PoolReleaseError('connection 3 was already released'),
  RateLimitedError: () =>
    new errors.RateLimitedError({ key: 'user:1', limit: 60, retryAfterMs: 1_200, policy: 'rpm' }),
  BatchItemError: () => new errors.BatchItemError('no result for item 3', 3),
  TimeoutError: () => new errors.TimeoutError('load', 50),
  CircuitOpenError: () => new errors.CircuitOpenError('redis', 4_000),
  InvalidKeyError: () => new errors.InvalidKeyError('', 'a key must not be empty'),
  SerializationError: () => new errors.SerializationError('k', 'functions cannot be stored'),
  ValueTooLargeError: () => new errors.ValueTooLargeError('k', 2_000_000, 1_000_000),
  StoreError: () => new errors.StoreError('redis', 'connection refused'),
  ProfilerBusyError: () => new errors.ProfilerBusyError('CPU profile'),
  UpstreamError: () => new errors.UpstreamError('upstream answered 500', { status: 500 }),
  ConfigError: () => new errors.ConfigError('limits.rpm', 'must be a positive integer, got -1'),
};

const classes = (Object.entries(errors) as [string, unknown][]).filter(
  (entry): entry is [string, Ctor] =>
    typeof entry[1] === 'function' &&
    (entry[1] === errors.ClawperfError || (entry[1] as Ctor).prototype instanceof errors.ClawperfError),
);

describe('error classes', () => {
  it('every exported class has a sample here', () => {
    assert.deepEqual(classes.map(([name]) => name).sort(), Object.keys(samples).sort());
  });

  it('each subclass has its own stable ERR_CLAWPERF_ code, its name, and is a ClawperfError and an Error', () => {
    const codes = new Set<string>();
    for (const [name, make] of Object.entries(samples)) {
      const error = make();
      assert.ok(error instanceof errors.ClawperfError, name);
      assert.ok(error instanceof Error, name);
      assert.equal(error.name, name);
      assert.match(error.code, /^ERR_CLAWPERF(_[A-Z]+)*$/, name);
      assert.ok(!codes.has(error.code), `${name} reuses ${error.code}`);
      codes.add(error.code);
      assert.ok(error.message.length > 0, name);
      assert.ok(error.stack?.includes(name), name);
    }
  });

  it('carries the facts a caller acts on', () => {
    const overloaded = samples.OverloadedError!() as errors.OverloadedError;
    assert.equal(overloaded.queueSize, 10);
    assert.equal(overloaded.retryAfterMs, 25);
    const limited = samples.RateLimitedError!() as errors.RateLimitedError;
    assert.deepEqual(
      [limited.key, limited.limit, limited.retryAfterMs, limited.policy],
      ['user:1', 60, 1_200, 'rpm'],
    );
    const timeout = samples.AcquireTimeoutError!() as errors.AcquireTimeoutError;
    assert.equal((timeout.cause as Error).message, 'ECONNREFUSED');
    assert.match(samples.ConfigError!().message, /^limits\.rpm: /);
  });

  it('never leaks a huge or non-string key into a message', () => {
    assert.match(
      new errors.InvalidKeyError('x'.repeat(10_000), 'too long').message,
      /^invalid key "x{64}\.\.\."/,
    );
    assert.match(new errors.InvalidKeyError(42, 'not a string').message, /invalid key number/);
  });

  it('are re-exported from the package root', () => {
    for (const [name, ctor] of classes) assert.equal((root as Record<string, unknown>)[name], ctor, name);
  });

  it('docs/errors.md lists exactly the codes the classes have', () => {
    const documented = new Set(
      readFileSync(new URL('../docs/errors.md', import.meta.url), 'utf8').match(/ERR_CLAWPERF\w*/g),
    );
    const actual = new Set(Object.values(samples).map((make) => make().code));
    assert.deepEqual([...documented].sort(), [...actual].sort());
  });
});
