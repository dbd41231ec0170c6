/**
 * System sampling: what the process used over the last interval (CPU as a share of wall time, memory,
 * event-loop delay and utilization, load), read once per collection and set on the collector's gauges.
 *
 * @module
 */
import { loadavg } from 'node:os';
import {
  type EventLoopUtilization,
  type IntervalHistogram,
  monitorEventLoopDelay,
  performance,
} from 'node:perf_hooks';
import type { Clock } from '../internal/clock.ts';
import { delaySummary } from '../internal/histogram.ts';
import type { CollectorMetrics } from './collector-metrics.ts';

/** Resolution of the event-loop delay histogram, ms. */
const EVENT_LOOP_RESOLUTION_MS = 10;

/** The system part of `PerformanceMetrics`. */
export interface SystemMetrics {
  /** CPU time used over the last interval as a ratio of wall time: 1 = one core busy the whole time. */
  cpuUsage: number;
  /** Heap in use, MB (as in the seed). */
  memoryUsage: number;
  heapUsedBytes: number;
  heapTotalBytes: number;
  rssBytes: number;
  externalBytes: number;
  /** Event-loop delay over the last interval, ms. */
  eventLoopDelay: { min: number; mean: number; p50: number; p90: number; p99: number; max: number };
  /** Share of the last interval the event loop was busy, 0..1. */
  eventLoopUtilization: number;
  /** Process uptime, seconds. */
  uptime: number;
  /** 1, 5 and 15 minute load averages. */
  loadAverage: number[];
}

/** Samples the process over successive intervals; each `sample()` ends one interval and starts the next. */
export class SystemSampler {
  readonly #clock: Clock;
  readonly #m: CollectorMetrics;
  readonly #loopDelay: IntervalHistogram;
  #lastWall: number;
  #lastCpu: NodeJS.CpuUsage;
  #lastElu: EventLoopUtilization;

  constructor(clock: Clock, metrics: CollectorMetrics) {
    this.#clock = clock;
    this.#m = metrics;
    this.#loopDelay = monitorEventLoopDelay({ resolution: EVENT_LOOP_RESOLUTION_MS });
    this.#loopDelay.enable();
    this.#lastWall = clock.now();
    this.#lastCpu = process.cpuUsage();
    this.#lastElu = performance.eventLoopUtilization();
  }

  /** The system figures of the interval that just ended, and its length in ms; sets the system gauges. */
  sample(): { system: SystemMetrics; wallMs: number } {
    const now = this.#clock.now();
    const wallMs = now - this.#lastWall;
    const cpu = process.cpuUsage(this.#lastCpu);
    const elu = performance.eventLoopUtilization(this.#lastElu);
    this.#lastWall = now;
    this.#lastCpu = process.cpuUsage();
    this.#lastElu = performance.eventLoopUtilization();
    const cpuRatio = wallMs > 0 ? (cpu.user + cpu.system) / 1e3 / wallMs : 0;
    const memory = process.memoryUsage();
    const h = this.#loopDelay;
    const delay = delaySummary(h);
    h.reset();
    const load = loadavg();
    const system: SystemMetrics = {
      cpuUsage: cpuRatio,
      memoryUsage: memory.heapUsed / 1024 / 1024,
      heapUsedBytes: memory.heapUsed,
      heapTotalBytes: memory.heapTotal,
      rssBytes: memory.rss,
      externalBytes: memory.external,
      eventLoopDelay: delay,
      eventLoopUtilization: elu.utilization,
      uptime: process.uptime(),
      loadAverage: load,
    };
    const m = this.#m;
    m.cpu.set(cpuRatio);
    m.heapUsed.set(memory.heapUsed);
    m.heapTotal.set(memory.heapTotal);
    m.rss.set(memory.rss);
    m.external.set(memory.external);
    m.uptime.set(system.uptime);
    m.load.set({ window: '1m' }, load[0] ?? 0);
    m.load.set({ window: '5m' }, load[1] ?? 0);
    m.load.set({ window: '15m' }, load[2] ?? 0);
    m.loopMin.set(delay.min / 1e3);
    m.loopMean.set(delay.mean / 1e3);
    m.loopP50.set(delay.p50 / 1e3);
    m.loopP90.set(delay.p90 / 1e3);
    m.loopP99.set(delay.p99 / 1e3);
    m.loopMax.set(delay.max / 1e3);
    m.loopUtilization.set(elu.utilization);
    return { system, wallMs };
  }

  /** Stops the event-loop delay histogram. */
  close(): void {
    this.#loopDelay.disable();
  }
}
