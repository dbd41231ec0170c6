import { EventEmitter } from 'node:events';
import { type EventLoopUtilization, performance } from 'node:perf_hooks';
import { getHeapSpaceStatistics, getHeapStatistics } from 'node:v8';
import { ClosedError } from '../errors.ts';
import { type Cancel, type Clock, type SetTimer, systemClock, timerOn } from '../internal/clock.ts';
import * as check from '../internal/options.ts';

/** @default 0.8 */
export const DEFAULT_WARNING_RATIO = 0.8;
/** @default 0.95 */
export const DEFAULT_CRITICAL_RATIO = 0.95;
/** @default 0.05 */
export const DEFAULT_HYSTERESIS_RATIO = 0.05;
/** @default 10000 */
export const DEFAULT_MEMORY_CHECK_INTERVAL_MS = 10_000;
/** @default 10000 */
export const DEFAULT_CLEANUP_TIMEOUT_MS = 10_000;

/** How full the heap is: below `warningRatio`, at or above it, at or above `criticalRatio`. */
export type MemoryLevel = 'normal' | 'warning' | 'critical';

const LEVEL_CODE: Readonly<Record<MemoryLevel, number>> = { normal: 0, warning: 1, critical: 2 };

/** The memory figures the manager reads; `process.memoryUsage()` has this shape. */
export interface MemoryUsageSample {
  heapUsed: number;
  heapTotal: number;
  rss: number;
  external: number;
  arrayBuffers: number;
}

/** Options of {@link MemoryManager}. */
export interface MemoryManagerOptions {
  /** The heap size the ratios refer to, in bytes. @default v8.getHeapStatistics().heap_size_limit */
  maxHeapBytes?: number;
  /** Heap use, as a ratio of `maxHeapBytes`, at which the `warning` level is entered. @default 0.8 */
  warningRatio?: number;
  /** Heap use at which the `critical` level is entered; above `warningRatio`. @default 0.95 */
  criticalRatio?: number;
  /** How far below a level's ratio use must fall before the level is left. @default 0.05 */
  hysteresisRatio?: number;
  /** How often the heap is checked, in ms. @default 10000 */
  intervalMs?: number;
  /** How long `check()` waits for cleanup handlers before it gives up on the slow ones, in ms. @default 10000 */
  cleanupTimeoutMs?: number;
  /** Where the figures come from; tests inject their own. @default process.memoryUsage */
  memoryUsage?: () => MemoryUsageSample;
  /**
   * Time source of the check timer and the cleanup timeout; a clock with `schedule(ms, fn)` (like
   * `ManualClock`) drives both, so a test moves time instead of waiting for it.
   * @default systemClock
   */
  clock?: Clock;
}

/** Payload of the `warning`, `critical` and `recovered` events. */
export interface MemoryLevelChange {
  /** The level now. */
  level: MemoryLevel;
  /** The level before this check. */
  previous: MemoryLevel;
  /** heapUsed / limit. */
  usage: number;
  heapUsed: number;
  limit: number;
}

/** Events a {@link MemoryManager} emits (on itself, never on `process`). */
export interface MemoryManagerEvents {
  /** The warning level was entered from normal. */
  warning: [MemoryLevelChange];
  /** The critical level was entered. */
  critical: [MemoryLevelChange];
  /** A level was left for a lower one. */
  recovered: [MemoryLevelChange];
}

/** One V8 heap space. */
export interface HeapSpaceReport {
  used: number;
  size: number;
  available: number;
}

/** What {@link MemoryManager.getMemoryReport} returns; sizes in bytes. */
export interface MemoryReport extends MemoryUsageSample {
  limit: number;
  /** heapUsed / limit. */
  usage: number;
  level: MemoryLevel;
  /** Per V8 heap space (new_space, old_space, code_space, large_object_space, ...). */
  heapSpaces: Record<string, HeapSpaceReport>;
  /** Share of time the event loop was busy since the previous report (or since construction), 0..1. */
  eventLoopUtilization: number;
}

/** A cleanup handler: releases what it can (drops caches, pauses optional work) when memory runs short. */
export type CleanupHandler = (level: Exclude<MemoryLevel, 'normal'>) => void | Promise<void>;

/**
 * Watches heap use against the heap limit the process really has and tells the application when it
 * runs short, once per change of level:
 *
 * - `warning` when use reaches `warningRatio`, `critical` at `criticalRatio`, `recovered` when use falls
 *   `hysteresisRatio` below the level's ratio. Staying at a level emits nothing more.
 * - On entering `warning` or `critical`, every handler registered with {@link MemoryManager.onCleanup} runs;
 *   one that throws, rejects or hangs past `cleanupTimeoutMs` is counted and does not stop the others.
 * - It never calls `global.gc()` (the collector knows better, and a forced full GC blocks the process).
 *
 * Its check timer is `unref()`ed, so it never keeps the process alive; `close()` stops it.
 *
 * @example
 * const memory = new MemoryManager({ warningRatio: 0.75 });
 * memory.onCleanup(() => cache.clear());
 * memory.on('critical', (e) => log.error({ usage: e.usage }, 'heap nearly full'));
 */
export class MemoryManager extends EventEmitter<MemoryManagerEvents> {
  /** The `stats()` fields that only grow. */
  readonly statsCounters: readonly string[] = [
    'checks',
    'warnings',
    'criticals',
    'recoveries',
    'cleanupRuns',
    'cleanupErrors',
    'cleanupTimeouts',
    'listenerErrors',
  ];

  readonly #limit: number;
  readonly #warningRatio: number;
  readonly #criticalRatio: number;
  readonly #hysteresisRatio: number;
  readonly #cleanupTimeoutMs: number;
  readonly #memoryUsage: () => MemoryUsageSample;
  readonly #handlers = new Set<CleanupHandler>();
  readonly #intervalMs: number;
  readonly #setTimer: SetTimer;
  #cancelTimer: Cancel | undefined;
  #closed = false;
  #level: MemoryLevel = 'normal';
  #lastHeapUsed = 0;
  #elu: EventLoopUtilization = performance.eventLoopUtilization();

  #checks = 0;
  #warnings = 0;
  #criticals = 0;
  #recoveries = 0;
  #cleanupRuns = 0;
  #cleanupErrors = 0;
  #cleanupTimeouts = 0;
  #listenerErrors = 0;

  /** @throws {TypeError} naming the option, its allowed range and the value, when an option is invalid. */
  constructor(options?: MemoryManagerOptions) {
    super();
    const o = check.object<MemoryManagerOptions>('options', options);
    this.#limit =
      o.maxHeapBytes === undefined
        ? getHeapStatistics().heap_size_limit
        : check.integer('options.maxHeapBytes', o.maxHeapBytes, 1);
    this.#warningRatio = check.ratio('options.warningRatio', o.warningRatio ?? DEFAULT_WARNING_RATIO);
    this.#criticalRatio = check.compared(
      'options.criticalRatio',
      check.ratio('options.criticalRatio', o.criticalRatio ?? DEFAULT_CRITICAL_RATIO),
      '>',
      'options.warningRatio',
      this.#warningRatio,
    );
    this.#hysteresisRatio = check.compared(
      'options.hysteresisRatio',
      check.ratio('options.hysteresisRatio', o.hysteresisRatio ?? DEFAULT_HYSTERESIS_RATIO),
      '<',
      'options.warningRatio',
      this.#warningRatio,
    );
    this.#intervalMs = check.integer(
      'options.intervalMs',
      o.intervalMs ?? DEFAULT_MEMORY_CHECK_INTERVAL_MS,
      1,
    );
    this.#cleanupTimeoutMs = check.integer(
      'options.cleanupTimeoutMs',
      o.cleanupTimeoutMs ?? DEFAULT_CLEANUP_TIMEOUT_MS,
      1,
    );
    this.#memoryUsage =
      o.memoryUsage === undefined
        ? () => process.memoryUsage()
        : check.fn('options.memoryUsage', o.memoryUsage);
    this.#setTimer = timerOn(o.clock === undefined ? systemClock : check.clock('options.clock', o.clock));
    this.#arm();
  }

  /** The heap size the ratios refer to, in bytes. */
  get limit(): number {
    return this.#limit;
  }

  /** The level as of the last check. */
  get level(): MemoryLevel {
    return this.#level;
  }

  /**
   * Registers a handler to run when `warning` or `critical` is entered. Returns a function that removes it.
   * @throws {ClosedError} after `close()`.
   */
  onCleanup(handler: CleanupHandler): () => void {
    if (this.#closed) throw new ClosedError('MemoryManager');
    check.fn('handler', handler);
    this.#handlers.add(handler);
    return () => {
      this.#handlers.delete(handler);
    };
  }

  /**
   * Checks the heap now (the timer calls this every `intervalMs`): moves to the level use calls for, emits
   * the change and runs the cleanup handlers on entering `warning` or `critical`. Resolves with the level
   * once the handlers have finished or `cleanupTimeoutMs` has passed; never rejects for a handler's error.
   * @throws {ClosedError} after `close()`.
   */
  async check(): Promise<MemoryLevel> {
    if (this.#closed) throw new ClosedError('MemoryManager');
    this.#checks++;
    const heapUsed = this.#memoryUsage().heapUsed;
    this.#lastHeapUsed = heapUsed;
    const usage = heapUsed / this.#limit;
    const previous = this.#level;
    const level = this.#next(previous, usage);
    if (level === previous) return level;
    this.#level = level;
    const change: MemoryLevelChange = { level, previous, usage, heapUsed, limit: this.#limit };
    if (level === 'normal' || LEVEL_CODE[level] < LEVEL_CODE[previous]) {
      this.#recoveries++;
      this.#emit('recovered', change);
      return level;
    }
    if (level === 'warning') this.#warnings++;
    else this.#criticals++;
    this.#emit(level, change);
    await this.#cleanup(level);
    return level;
  }

  /** Heap, RSS, heap spaces and event-loop utilization now; sizes in bytes. */
  getMemoryReport(): MemoryReport {
    const m = this.#memoryUsage();
    const heapSpaces: Record<string, HeapSpaceReport> = {};
    for (const space of getHeapSpaceStatistics()) {
      heapSpaces[space.space_name] = {
        used: space.space_used_size,
        size: space.space_size,
        available: space.space_available_size,
      };
    }
    const elu = performance.eventLoopUtilization();
    const utilization = performance.eventLoopUtilization(elu, this.#elu).utilization;
    this.#elu = elu;
    return {
      heapUsed: m.heapUsed,
      heapTotal: m.heapTotal,
      rss: m.rss,
      external: m.external,
      arrayBuffers: m.arrayBuffers,
      limit: this.#limit,
      usage: m.heapUsed / this.#limit,
      level: this.#level,
      heapSpaces,
      eventLoopUtilization: Number.isFinite(utilization) ? utilization : 0,
    };
  }

  /** Counters and gauges, numbers only; `level` is 0 normal, 1 warning, 2 critical. */
  stats(): {
    heapUsed: number;
    limit: number;
    usage: number;
    level: number;
    checks: number;
    warnings: number;
    criticals: number;
    recoveries: number;
    cleanupRuns: number;
    cleanupErrors: number;
    cleanupTimeouts: number;
    listenerErrors: number;
  } {
    return {
      heapUsed: this.#lastHeapUsed,
      limit: this.#limit,
      usage: this.#lastHeapUsed / this.#limit,
      level: LEVEL_CODE[this.#level],
      checks: this.#checks,
      warnings: this.#warnings,
      criticals: this.#criticals,
      recoveries: this.#recoveries,
      cleanupRuns: this.#cleanupRuns,
      cleanupErrors: this.#cleanupErrors,
      cleanupTimeouts: this.#cleanupTimeouts,
      listenerErrors: this.#listenerErrors,
    };
  }

  /** Stops the check timer and drops the cleanup handlers. Idempotent. */
  close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#cancelTimer?.();
      this.#cancelTimer = undefined;
      this.#handlers.clear();
    }
    return Promise.resolve();
  }

  /** The check timer: one timeout at a time, armed again before each check runs. */
  #arm(): void {
    this.#cancelTimer = this.#setTimer(this.#intervalMs, () => {
      this.#arm();
      this.check().catch(() => {});
    });
  }

  #next(level: MemoryLevel, usage: number): MemoryLevel {
    if (usage >= this.#criticalRatio) return 'critical';
    const h = this.#hysteresisRatio;
    if (level === 'critical' && usage >= this.#criticalRatio - h) return 'critical';
    if (usage >= this.#warningRatio) return 'warning';
    if (level !== 'normal' && usage >= this.#warningRatio - h) return 'warning';
    return 'normal';
  }

  #emit(event: keyof MemoryManagerEvents, change: MemoryLevelChange): void {
    try {
      this.emit(event, change);
    } catch {
      this.#listenerErrors++;
    }
  }

  async #cleanup(level: Exclude<MemoryLevel, 'normal'>): Promise<void> {
    if (this.#handlers.size === 0) return;
    this.#cleanupRuns++;
    const runs = [...this.#handlers].map(async (handler) => {
      try {
        await handler(level);
      } catch {
        this.#cleanupErrors++;
      }
    });
    let cancel: Cancel | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      cancel = this.#setTimer(this.#cleanupTimeoutMs, () => resolve('timeout'));
    });
    let pending = runs.length;
    const all = Promise.all(runs.map((run) => run.then(() => void pending--)));
    const outcome = await Promise.race([all, timedOut]);
    cancel?.();
    if (outcome === 'timeout') this.#cleanupTimeouts += pending;
  }
}
