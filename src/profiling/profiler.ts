/**
 * PerformanceProfiler: CPU profiles, heap snapshots and heap sampling through `node:inspector` (no native
 * addon), and event-loop lag as a histogram.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { Session } from 'node:inspector';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { ClosedError, ProfilerBusyError } from '../errors.ts';
import { delaySummary } from '../internal/histogram.ts';
import * as check from '../internal/options.ts';

/** CPU sampling interval, microseconds (V8's default). @default 1_000 */
export const DEFAULT_CPU_SAMPLING_INTERVAL_US = 1_000;
/** Average bytes between heap samples (V8's default). @default 32_768 */
export const DEFAULT_HEAP_SAMPLING_INTERVAL_BYTES = 32_768;
/** Window of `measureEventLoopLag`, ms. @default 1_000 */
export const DEFAULT_LAG_DURATION_MS = 1_000;
/** Resolution of the event-loop delay histogram, ms. @default 10 */
export const DEFAULT_LAG_RESOLUTION_MS = 10;

/** A Chrome DevTools `.cpuprofile` (open it in DevTools or speedscope). */
export interface CpuProfile {
  nodes: {
    id: number;
    callFrame: {
      functionName: string;
      scriptId: string;
      url: string;
      lineNumber: number;
      columnNumber: number;
    };
    hitCount?: number;
    children?: number[];
  }[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

/** A sampling heap profile (`.heapprofile`, opens in Chrome DevTools' Memory panel). */
export interface HeapSamplingProfile {
  head: {
    callFrame: CpuProfile['nodes'][number]['callFrame'];
    selfSize: number;
    id: number;
    children: unknown[];
  };
  samples: { size: number; nodeId: number; ordinal: number }[];
}

/** Event-loop delay over a window, ms. */
export interface EventLoopLag {
  min: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  /** Delay samples taken. */
  samples: number;
}

export interface PerformanceProfilerOptions {
  /** CPU sampling interval, µs. @default 1_000 */
  cpuSamplingIntervalUs?: number;
  /** Mean bytes between heap samples. @default 32_768 */
  heapSamplingIntervalBytes?: number;
  /** Directory `takeHeapSnapshot()` writes to when given none. @default os.tmpdir() */
  snapshotDir?: string;
}

type Activity = 'CPU profile' | 'heap sampling profile' | 'heap snapshot';

/**
 * Profiles the running process through the inspector protocol, in-process: no native addon, no open
 * debugging port. One profile runs at a time; starting a second rejects with {@link ProfilerBusyError}.
 *
 * @example
 * const profiler = new PerformanceProfiler();
 * await profiler.startCPUProfile();
 * await work();
 * await writeFile('work.cpuprofile', JSON.stringify(await profiler.stopCPUProfile()));
 * const file = await profiler.takeHeapSnapshot('/var/tmp');   // streamed to disk chunk by chunk
 * const lag = await profiler.measureEventLoopLag({ durationMs: 5_000 }); // { min, mean, p50, p90, p99, max }
 */
export class PerformanceProfiler {
  readonly statsCounters: readonly string[] = [
    'cpuProfiles',
    'heapSnapshots',
    'heapSamplingProfiles',
    'busy',
  ];
  readonly #cpuIntervalUs: number;
  readonly #heapIntervalBytes: number;
  readonly #snapshotDir: string;
  #session: Session | undefined;
  #active: Activity | undefined;
  #closed = false;
  #stats = { cpuProfiles: 0, heapSnapshots: 0, heapSamplingProfiles: 0, busy: 0 };

  constructor(options: PerformanceProfilerOptions = {}) {
    const o = check.object<PerformanceProfilerOptions>('options', options);
    this.#cpuIntervalUs = check.integer(
      'options.cpuSamplingIntervalUs',
      o.cpuSamplingIntervalUs ?? DEFAULT_CPU_SAMPLING_INTERVAL_US,
      1,
    );
    this.#heapIntervalBytes = check.integer(
      'options.heapSamplingIntervalBytes',
      o.heapSamplingIntervalBytes ?? DEFAULT_HEAP_SAMPLING_INTERVAL_BYTES,
      1,
    );
    this.#snapshotDir =
      o.snapshotDir === undefined ? tmpdir() : check.string('options.snapshotDir', o.snapshotDir);
  }

  /** What is running now, if anything. */
  get active(): Activity | undefined {
    return this.#active;
  }

  /** Starts sampling the CPU. Rejects with ProfilerBusyError while another profile runs. */
  async startCPUProfile(): Promise<void> {
    await this.#start('CPU profile', [
      ['Profiler.enable'],
      ['Profiler.setSamplingInterval', { interval: this.#cpuIntervalUs }],
      ['Profiler.start'],
    ]);
  }

  /** Stops the CPU profile and returns it as Chrome DevTools `.cpuprofile` JSON. */
  async stopCPUProfile(): Promise<CpuProfile> {
    const profile = await this.#stop<CpuProfile>('CPU profile', 'Profiler.stop', 'Profiler.disable');
    this.#stats.cpuProfiles++;
    return profile;
  }

  /** Starts a sampling heap profile (allocations sampled every `heapSamplingIntervalBytes` on average). */
  async startHeapSampling(): Promise<void> {
    await this.#start('heap sampling profile', [
      ['HeapProfiler.enable'],
      ['HeapProfiler.startSampling', { samplingInterval: this.#heapIntervalBytes }],
    ]);
  }

  /** Stops the sampling heap profile and returns it (`.heapprofile` JSON). */
  async stopHeapSampling(): Promise<HeapSamplingProfile> {
    const profile = await this.#stop<HeapSamplingProfile>(
      'heap sampling profile',
      'HeapProfiler.stopSampling',
      'HeapProfiler.disable',
    );
    this.#stats.heapSamplingProfiles++;
    return profile;
  }

  /**
   * Writes a heap snapshot to `<dir>/Heap-<time>-<pid>.heapsnapshot` and resolves with its path. The snapshot
   * is written chunk by chunk as V8 serializes it, never held whole in memory.
   */
  async takeHeapSnapshot(dir: string = this.#snapshotDir): Promise<string> {
    check.string('dir', dir);
    this.#begin('heap snapshot');
    const path = resolve(
      join(dir, `Heap-${new Date().toISOString().replace(/[:.]/g, '')}-${process.pid}.heapsnapshot`),
    );
    let fd: number | undefined;
    const session = this.#connect();
    // V8 emits the chunks while the snapshot is taken, with the event loop blocked; a synchronous write per
    // chunk is what keeps memory at one chunk (an async stream would queue every chunk until it drains).
    const onChunk = (message: { params: { chunk: string } }) => {
      if (fd !== undefined) writeSync(fd, message.params.chunk);
    };
    try {
      fd = openSync(path, 'wx');
      session.on('HeapProfiler.addHeapSnapshotChunk', onChunk);
      await this.#post('HeapProfiler.takeHeapSnapshot', { reportProgress: false });
      this.#stats.heapSnapshots++;
      return path;
    } finally {
      session.off('HeapProfiler.addHeapSnapshotChunk', onChunk);
      if (fd !== undefined) closeSync(fd);
      this.#active = undefined;
    }
  }

  /**
   * Measures event-loop delay over `durationMs` as a histogram (`perf_hooks.monitorEventLoopDelay`) and
   * returns its min, mean, p50, p90, p99 and max in ms. Runs alongside a profile.
   */
  async measureEventLoopLag(
    options: { durationMs?: number; signal?: AbortSignal } = {},
  ): Promise<EventLoopLag> {
    if (this.#closed) throw new ClosedError('PerformanceProfiler');
    const durationMs = check.integer('options.durationMs', options.durationMs ?? DEFAULT_LAG_DURATION_MS, 1);
    const signal = options.signal;
    signal?.throwIfAborted();
    const histogram = monitorEventLoopDelay({ resolution: DEFAULT_LAG_RESOLUTION_MS });
    histogram.enable();
    try {
      await new Promise<void>((done, fail) => {
        const onAbort = () => {
          clearTimeout(timer);
          fail(signal?.reason);
        };
        const timer = setTimeout(() => {
          signal?.removeEventListener('abort', onAbort);
          done();
        }, durationMs);
        signal?.addEventListener('abort', onAbort, { once: true });
      });
    } finally {
      histogram.disable();
    }
    return { ...delaySummary(histogram), samples: histogram.count };
  }

  /** Profiles taken, and starts refused because another profile was running. */
  stats(): { cpuProfiles: number; heapSnapshots: number; heapSamplingProfiles: number; busy: number } {
    return { ...this.#stats };
  }

  /** Stops whatever profile is running (discarding it) and disconnects the inspector session. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const session = this.#session;
    if (session === undefined) return;
    if (this.#active === 'CPU profile') await this.#post('Profiler.stop').catch(() => {});
    if (this.#active === 'heap sampling profile')
      await this.#post('HeapProfiler.stopSampling').catch(() => {});
    this.#active = undefined;
    session.disconnect();
    this.#session = undefined;
  }

  #begin(activity: Activity): void {
    if (this.#closed) throw new ClosedError('PerformanceProfiler');
    if (this.#active !== undefined) {
      this.#stats.busy++;
      throw new ProfilerBusyError(this.#active);
    }
    this.#active = activity;
  }

  /** Begins `activity` with the inspector commands that start it; it is not running when one fails. */
  async #start(activity: Activity, commands: [method: string, params?: object][]): Promise<void> {
    this.#begin(activity);
    try {
      for (const [method, params] of commands) await this.#post(method, params);
    } catch (error) {
      this.#active = undefined;
      throw error;
    }
  }

  /** Ends `activity`: its stop command's profile, after the domain is disabled again. */
  async #stop<P>(activity: Activity, stop: string, disable: string): Promise<P> {
    this.#expect(activity);
    try {
      const { profile } = (await this.#post(stop)) as { profile: P };
      await this.#post(disable);
      return profile;
    } finally {
      this.#active = undefined;
    }
  }

  #expect(activity: Activity): void {
    if (this.#closed) throw new ClosedError('PerformanceProfiler');
    if (this.#active !== activity) throw new TypeError(`no ${activity} is running`);
  }

  #connect(): Session {
    if (this.#session === undefined) {
      this.#session = new Session();
      this.#session.connect();
    }
    return this.#session;
  }

  #post(method: string, params?: object): Promise<unknown> {
    const session = this.#connect();
    return new Promise((done, fail) => {
      session.post(method, params ?? {}, (error, result) => (error ? fail(error) : done(result)));
    });
  }
}
