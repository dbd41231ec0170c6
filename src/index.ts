/**
 * clawperf: the performance layer for TypeScript AI agent gateways. Each area is also its own entry point
 * (`clawperf/metrics`, `clawperf/resources`, ...); this root re-exports them with the error classes and the
 * clock.
 *
 * @module
 */

export * from './cache/index.ts';
export * from './concurrency/index.ts';
export * from './errors.ts';
export { type Clock, ManualClock, type SchedulingClock, systemClock } from './internal/clock.ts';
export * from './metrics/index.ts';
export * from './profiling/index.ts';
export * from './resources/index.ts';
// Names more than one area defines: the root takes the resources one; each area's own entry point has its own.
export { DEFAULT_MAX_QUEUE_SIZE } from './resources/index.ts';
export * from './tracing/index.ts';
