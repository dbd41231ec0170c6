import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ManualClock, systemClock } from '../../src/internal/clock.ts';

describe('systemClock', () => {
  it('is monotonic with sub-millisecond resolution', () => {
    const readings = Array.from({ length: 1_000 }, () => systemClock.now());
    for (let i = 1; i < readings.length; i++) assert.ok(readings[i]! >= readings[i - 1]!);
    assert.ok(
      readings.some((t) => !Number.isInteger(t)),
      'readings carry fractions of a millisecond',
    );
  });
});

describe('ManualClock', () => {
  it('stands still until advanced', async () => {
    const clock = new ManualClock(100);
    assert.equal(clock.now(), 100);
    await clock.advance(50);
    assert.equal(clock.now(), 150);
  });

  it('resolves sleeps in time order, each at its own time', async () => {
    const clock = new ManualClock();
    const seen: string[] = [];
    void clock.sleep(30).then(() => seen.push(`b@${clock.now()}`));
    void clock.sleep(10).then(() => seen.push(`a@${clock.now()}`));
    void clock.sleep(30).then(() => seen.push(`c@${clock.now()}`));
    await clock.advance(20);
    assert.deepEqual(seen, ['a@10']);
    await clock.advance(20);
    assert.deepEqual(seen, ['a@10', 'b@30', 'c@30']);
    assert.equal(clock.now(), 40);
    assert.equal(clock.pending, 0);
  });

  it('fires timers that resumed work schedules within the same advance', async () => {
    const clock = new ManualClock();
    const times: number[] = [];
    const worker = async () => {
      for (let i = 0; i < 3; i++) {
        await clock.sleep(10);
        times.push(clock.now());
      }
    };
    const done = worker();
    await clock.advance(100);
    await done;
    assert.deepEqual(times, [10, 20, 30]);
  });
});
