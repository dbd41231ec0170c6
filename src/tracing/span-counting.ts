/**
 * How a `Tracer` counts its spans for `stats()`: a span processor that counts starts and ends, and
 * a wrapper around the exporter that counts what reached the collector and what did not.
 *
 * @module
 */
import { type ExportResult, ExportResultCode } from '@opentelemetry/core';
import type { ReadableSpan, SpanExporter, SpanProcessor } from '@opentelemetry/sdk-trace-base';
import type { TracerStats } from './tracer.ts';

/** A counting wrapper, so `stats()` can tell how many spans reached the collector. */
export class CountingExporter implements SpanExporter {
  readonly #inner: SpanExporter;
  readonly #counts: TracerStats;

  constructor(inner: SpanExporter, counts: TracerStats) {
    this.#inner = inner;
    this.#counts = counts;
  }

  export(spans: ReadableSpan[], done: (result: ExportResult) => void): void {
    const counts = this.#counts;
    try {
      this.#inner.export(spans, (result) => {
        if (result.code === ExportResultCode.SUCCESS) counts.spansExported += spans.length;
        else counts.spansExportFailed += spans.length;
        done(result);
      });
    } catch (error) {
      counts.spansExportFailed += spans.length;
      done({
        code: ExportResultCode.FAILED,
        error: error instanceof Error ? error : new Error(String(error)),
      });
    }
  }

  shutdown(): Promise<void> {
    return this.#inner.shutdown();
  }

  forceFlush(): Promise<void> {
    return this.#inner.forceFlush?.() ?? Promise.resolve();
  }
}

/** Counts the recorded (sampled) spans started and ended; it stands first, before the exporting processor. */
export function countingProcessor(counts: TracerStats): SpanProcessor {
  return {
    onStart: () => {
      counts.spansStarted++;
    },
    onEnd: () => {
      counts.spansEnded++;
    },
    forceFlush: () => Promise.resolve(),
    shutdown: () => Promise.resolve(),
  };
}
