/**
 * Summary of a `perf_hooks` histogram of nanoseconds (such as `monitorEventLoopDelay`) in milliseconds.
 */
import type { Histogram } from 'node:perf_hooks';

export type DelaySummary = Record<'min' | 'mean' | 'p50' | 'p90' | 'p99' | 'max', number>;

const ms = (ns: number) => ns / 1e6;

/** min, mean, p50, p90, p99 and max of `histogram` in ms; all 0 when it has no samples. */
export function delaySummary(histogram: Histogram): DelaySummary {
  if (histogram.count === 0) return { min: 0, mean: 0, p50: 0, p90: 0, p99: 0, max: 0 };
  return {
    min: ms(histogram.min),
    mean: ms(histogram.mean),
    p50: ms(histogram.percentile(50)),
    p90: ms(histogram.percentile(90)),
    p99: ms(histogram.percentile(99)),
    max: ms(histogram.max),
  };
}
