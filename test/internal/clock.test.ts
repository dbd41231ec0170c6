import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ManualClock, systemClock, timerOn } from '../../src/internal/clock.ts';
import { watchTimers } from '../helpers/timers.ts';

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

describe('timerOn', () => {
  it('runs timers on a clock that can schedule, and a cancelled one never fires', async () => {
    const clock = new ManualClock();
    const setTimer = timerOn(clock);
    const fired: string[] = [];
    setTimer(10, () => fired.push('kept'));
    const cancel = setTimer(5, () => fired.push('cancelled'));
    cancel();
    await clock.advance(10);
    assert.deepEqual(fired, ['kept']);
    cancel();
  });

  it('on the system clock, a background timer is unref()ed and an awaited one is not', () => {
    const timers = watchTimers();
    let cancels: (() => void)[];
    try {
      const setTimer = timerOn(systemClock);
      cancels = [setTimer(60_000, () => {}), setTimer(60_000, () => {}, true)];
    } finally {
      timers.restore();
    }
    assert.deepEqual(
      timers.set.map((t) => t.hasRef()),
      [false, true],
    );
    for (const cancel of cancels) cancel();
  });
});
