/**
 * clawperf: the performance layer for TypeScript AI agent gateways. Each area is also its own entry point
 * (`clawperf/resources`, ...); this root re-exports them with the error classes and the clock.
 *
 * @module
 */
export * from './errors.ts';
export { type Clock, ManualClock, systemClock } from './internal/clock.ts';
