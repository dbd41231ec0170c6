import assert from 'node:assert/strict';
import { once } from 'node:events';
import { PassThrough, Readable, Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { describe, it } from 'node:test';
import { Relay } from '../../src/gateway/relay.ts';

/** Passes every piece on, upper-cased, and ends with `END` or with `FAILED` when the source fails. */
class Upper extends Relay {
  protected override piece(chunk: Buffer | string): void {
    this.give(String(chunk).toUpperCase());
  }
  protected override ended(): void {
    this.give('END');
  }
  protected override failed(): void {
    this.finish('FAILED');
  }
}

/** A response-like sink that takes `capacity` writes before it asks the writer to wait. */
function sink(capacity: number) {
  const got: string[] = [];
  let release: (() => void) | undefined;
  const writable = new Writable({
    highWaterMark: capacity,
    objectMode: true,
    write(chunk, _encoding, done) {
      got.push(String(chunk));
      release = done;
    },
  });
  const drain = () => {
    const done = release;
    release = undefined;
    done?.();
  };
  return { writable, got, drain };
}

/** A relay piped to a sink with room, whose source has sent `a` (passed on as `A`). */
async function flowing() {
  const source = new PassThrough();
  const relay = new Upper().relay(source);
  const { writable, got, drain } = sink(16);
  relay.pipe(writable);
  source.write('a');
  await new Promise((r) => setImmediate(r));
  drain();
  return { source, relay, got, drain };
}

describe('Relay', () => {
  it('piped, writes each piece to the destination and pauses the source while the destination is full', async () => {
    const source = new PassThrough();
    const relay = new Upper().relay(source);
    const { writable, got, drain } = sink(1);
    relay.pipe(writable);
    source.write('a');
    source.write('b');
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(got, ['A']);
    assert.equal(source.isPaused(), true, 'the source waits for the destination');
    drain();
    drain();
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(got, ['A', 'B']);
    source.end();
    const ended = once(relay, 'end');
    for (let i = 0; i < 3; i++) {
      drain();
      await new Promise((r) => setImmediate(r));
    }
    await ended;
    assert.deepEqual(got, ['A', 'B', 'END']);
  });

  it('read as a Readable (not piped), gives the same pieces', async () => {
    const relay = new Upper().relay(Readable.from(['x', 'y']));
    let text = '';
    for await (const piece of relay) text += String(piece);
    assert.equal(text, 'XYEND');
  });

  it('a source that fails ends the stream with the failure event, and the source is destroyed', async () => {
    const { source, relay, got, drain } = await flowing();
    source.destroy(new Error('reset'));
    await finished(relay);
    drain();
    assert.deepEqual(got, ['A', 'FAILED']);
    assert.equal(source.destroyed, true);
  });

  it('destroyed (the client went away), it destroys the source and reads no more', async () => {
    const { source, relay, got } = await flowing();
    relay.destroy();
    source.write('b');
    await new Promise((r) => setImmediate(r));
    assert.equal(source.destroyed, true);
    assert.deepEqual(got, ['A']);
  });
});
