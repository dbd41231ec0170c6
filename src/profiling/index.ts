/**
 * `clawperf/profiling`: CPU profiles, heap snapshots and heap sampling through `node:inspector`, event-loop
 * lag as a histogram, and a token-protected HTTP handler for the `/debug/*` endpoints.
 *
 * @module
 */
export {
  createProfilingHandler,
  DEFAULT_EVENTLOOP_SECONDS,
  DEFAULT_MAX_PROFILE_SECONDS,
  DEFAULT_PROFILE_SECONDS,
  isProfilingPath,
  type ProfilingHandler,
  type ProfilingHandlerOptions,
} from './handler.ts';
export {
  type CpuProfile,
  DEFAULT_CPU_SAMPLING_INTERVAL_US,
  DEFAULT_HEAP_SAMPLING_INTERVAL_BYTES,
  DEFAULT_LAG_DURATION_MS,
  DEFAULT_LAG_RESOLUTION_MS,
  type EventLoopLag,
  type HeapSamplingProfile,
  PerformanceProfiler,
  type PerformanceProfilerOptions,
} from './profiler.ts';
