import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ClosedError, ProfilerBusyError } from '../../src/errors.ts';
import { PerformanceProfiler } from '../../src/profiling/index.ts';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'clawperf-profiler-'));
});
after(() => rm(dir, { recursive: true, force: true }));

function profiledHotFunction(): number {
  let x = 0;
  for (let i = 0; i < 2e6; i++) x += Math.sqrt(i) % 3;
  return x;
}

/** Runs a module snippet in a fresh Node process (with tsx), returning status and output. */
function runChild(code: string, nodeArgs: string[] = []) {
  const r = spawnSync(process.execPath, [...nodeArgs, '--import', 'tsx', '--input-type=module', '-e', code], {
    encoding: 'utf8',
    timeout: 50_000,
  });
  return { status: r.status, signal: r.signal, output: `${r.stdout}${r.stderr}` };
}

describe('CPU profile', () => {
  it('returns Chrome DevTools .cpuprofile JSON that shows the profiled function', async () => {
    const profiler = new PerformanceProfiler();
    after(() => profiler.close());
    await profiler.startCPUProfile();
    for (let i = 0; i < 20; i++) profiledHotFunction();
    const profile = await profiler.stopCPUProfile();
    assert.ok(profile.endTime > profile.startTime);
    assert.ok(Array.isArray(profile.nodes) && profile.nodes.length > 0);
    assert.equal(profile.samples?.length, profile.timeDeltas?.length);
    assert.ok(profile.nodes.some((n) => n.callFrame.functionName === 'profiledHotFunction'));
    assert.deepEqual(JSON.parse(JSON.stringify(profile)), profile);
  });

  it('runs without any native addon', () => {
    const result = runChild(`
      process.dlopen = () => { throw new Error('a native addon was loaded'); };
      const { PerformanceProfiler } = await import('./src/profiling/index.ts');
      const profiler = new PerformanceProfiler();
      await profiler.startCPUProfile();
      const profile = await profiler.stopCPUProfile();
      await profiler.startHeapSampling();
      await profiler.stopHeapSampling();
      await profiler.close();
      console.log(profile.nodes.length > 0 ? 'ok' : 'empty');
    `);
    assert.equal(result.status, 0, result.output);
    assert.match(result.output, /^ok$/m);
  });
});

describe('one profile at a time', () => {
  it('a second start rejects with ProfilerBusyError until the first stops', async () => {
    const profiler = new PerformanceProfiler();
    after(() => profiler.close());
    await profiler.startCPUProfile();
    await assert.rejects(profiler.startCPUProfile(), ProfilerBusyError);
    await assert.rejects(profiler.startHeapSampling(), (e: ProfilerBusyError) => {
      assert.equal(e.code, 'ERR_CLAWPERF_PROFILER_BUSY');
      assert.match(e.message, /CPU profile is already running/);
      return true;
    });
    await assert.rejects(profiler.takeHeapSnapshot(dir), ProfilerBusyError);
    await profiler.stopCPUProfile();
    await profiler.startHeapSampling();
    await profiler.stopHeapSampling();
    assert.deepEqual(profiler.stats(), {
      cpuProfiles: 1,
      heapSnapshots: 0,
      heapSamplingProfiles: 1,
      busy: 3,
    });
  });
});

describe('heap', () => {
  it('writes a heap snapshot file that DevTools can read', async () => {
    const profiler = new PerformanceProfiler();
    after(() => profiler.close());
    const file = await profiler.takeHeapSnapshot(dir);
    assert.ok(file.startsWith(dir) && file.endsWith('.heapsnapshot'));
    const snapshot = JSON.parse(await readFile(file, 'utf8')) as {
      snapshot: { meta: object; node_count: number };
    };
    assert.ok(snapshot.snapshot.meta);
    assert.ok(snapshot.snapshot.node_count > 1_000);
    await rm(file);
  });

  it('streams the snapshot to disk: a heap too small to hold it as a string still gets a full snapshot', async () => {
    // 60,000 live objects make a ~15 MB snapshot; with a 20 MB old space, collecting it into one string
    // runs out of heap, writing each chunk as it comes does not.
    const result = runChild(
      `
      const { PerformanceProfiler } = await import('./src/profiling/index.ts');
      const { statSync } = await import('node:fs');
      const keep = [];
      for (let i = 0; i < 60_000; i++) keep.push({ i, s: 'k' + i });
      const profiler = new PerformanceProfiler();
      const file = await profiler.takeHeapSnapshot(${JSON.stringify(dir)});
      await profiler.close();
      console.log('bytes', statSync(file).size, keep.length);
    `,
      ['--max-old-space-size=20'],
    );
    assert.equal(result.status, 0, result.output.slice(-2_000));
    const bytes = Number(/bytes (\d+)/.exec(result.output)?.[1]);
    assert.ok(bytes > 10 * 2 ** 20, `snapshot of ${bytes} bytes`);
  });

  it('records a sampling heap profile', async () => {
    const profiler = new PerformanceProfiler({ heapSamplingIntervalBytes: 1_024 });
    after(() => profiler.close());
    await profiler.startHeapSampling();
    const held = Array.from({ length: 20_000 }, (_, i) => ({ i, text: `item ${i}` }));
    const profile = await profiler.stopHeapSampling();
    assert.ok(held.length > 0);
    assert.ok(profile.head.callFrame !== undefined);
    assert.ok(profile.samples.length > 0);
  });

  it('writes to the snapshotDir option when no directory is passed', async () => {
    const profiler = new PerformanceProfiler({ snapshotDir: dir });
    after(() => profiler.close());
    const file = await profiler.takeHeapSnapshot();
    assert.ok((await stat(file)).size > 0);
    await rm(file);
  });
});

describe('event-loop lag', () => {
  it('is a histogram over the whole window, so a stall in the middle shows in max but not in p50', async () => {
    const profiler = new PerformanceProfiler();
    after(() => profiler.close());
    const measuring = profiler.measureEventLoopLag({ durationMs: 600 });
    await new Promise((r) => setTimeout(r, 200));
    const blockedUntil = performance.now() + 150;
    while (performance.now() < blockedUntil);
    const lag = await measuring;
    assert.ok(lag.samples > 1, `${lag.samples} samples`);
    assert.ok(lag.min <= lag.p50 && lag.p50 <= lag.p90 && lag.p90 <= lag.p99 && lag.p99 <= lag.max);
    assert.ok(lag.max >= 100, `max ${lag.max} ms should show the 150 ms stall`);
    assert.ok(lag.p50 < lag.max);
  });

  it('stops early when the signal aborts, rejecting with its reason', async () => {
    const profiler = new PerformanceProfiler();
    after(() => profiler.close());
    const controller = new AbortController();
    const measuring = profiler.measureEventLoopLag({ durationMs: 60_000, signal: controller.signal });
    controller.abort(new Error('enough'));
    await assert.rejects(measuring, /enough/);
  });
});

describe('lifecycle and options', () => {
  it('close() stops a running profile, is idempotent, and later calls reject with ClosedError', async () => {
    const profiler = new PerformanceProfiler();
    await profiler.startCPUProfile();
    await Promise.all([profiler.close(), profiler.close()]);
    await assert.rejects(profiler.startCPUProfile(), ClosedError);
    await assert.rejects(profiler.takeHeapSnapshot(dir), ClosedError);
    await assert.rejects(profiler.measureEventLoopLag(), ClosedError);
  });

  it('rejects invalid options with a TypeError naming the option', () => {
    assert.throws(() => new PerformanceProfiler({ cpuSamplingIntervalUs: 0 }), /cpuSamplingIntervalUs/);
    assert.throws(
      () => new PerformanceProfiler({ heapSamplingIntervalBytes: -1 }),
      /heapSamplingIntervalBytes/,
    );
    assert.throws(() => new PerformanceProfiler({ snapshotDir: '' }), /snapshotDir/);
  });
});
