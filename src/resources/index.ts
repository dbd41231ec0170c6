/**
 * `clawperf/resources`: keeping a process alive under overload. {@link BackpressureController} bounds
 * concurrent work and the queue in front of it (with a fixed or latency-driven limit); {@link MemoryManager}
 * watches the heap against the process's real limit and asks the application to shed memory in time.
 *
 * @module
 */
export {
  AdaptiveLimit,
  type AdaptiveLimitOptions,
  DEFAULT_BUFFER_RATIO,
  DEFAULT_INITIAL_LIMIT,
  DEFAULT_MAX_LIMIT,
  DEFAULT_MIN_LIMIT,
  DEFAULT_MIN_WINDOW_SAMPLES,
  DEFAULT_PROBE_INTERVAL_MS,
  DEFAULT_PROBE_JITTER_RATIO,
  DEFAULT_PROBE_SAMPLES,
  DEFAULT_SMOOTHING,
  DEFAULT_UPDATE_INTERVAL_MS,
} from './adaptive-limit.ts';
export {
  type AcquireOptions,
  BackpressureController,
  type BackpressureOptions,
  type BackpressureStats,
  DEFAULT_MAX_CONCURRENCY,
  DEFAULT_MAX_QUEUE_SIZE,
  DEFAULT_PRIORITY,
  DEFAULT_QUEUE_TIMEOUT_MS,
  type Release,
  type SchedulingClock,
} from './backpressure.ts';
export {
  type CleanupHandler,
  DEFAULT_CLEANUP_TIMEOUT_MS,
  DEFAULT_CRITICAL_RATIO,
  DEFAULT_HYSTERESIS_RATIO,
  DEFAULT_MEMORY_CHECK_INTERVAL_MS,
  DEFAULT_WARNING_RATIO,
  type HeapSpaceReport,
  type MemoryLevel,
  type MemoryLevelChange,
  MemoryManager,
  type MemoryManagerEvents,
  type MemoryManagerOptions,
  type MemoryReport,
  type MemoryUsageSample,
} from './memory-manager.ts';
