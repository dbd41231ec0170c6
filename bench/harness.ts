/**
 * The one timing loop every bench file uses. Contenders run interleaved in rounds (A B C, A B C, ...) in
 * one process, after a warm-up; each figure is the median over rounds, and each row carries its ratio to
 * the subject (the first contender), so a noisy moment on a shared machine hits everyone alike.
 */
import { availableParallelism } from 'node:os';
import { createHistogram, performance } from 'node:perf_hooks';

export interface Contender {
  name: string;
  /** One operation. May be sync or async; it is awaited either way, for every contender alike. */
  op: () => unknown;
  /** Runs before each timed round of this contender (not timed). */
  beforeRound?: () => unknown;
  /** Runs after each timed round of this contender (not timed), e.g. to check the work really happened. */
  afterRound?: () => unknown;
}

export interface CompareOptions {
  title: string;
  /** Callers running `op` at once. @default 1 */
  concurrency?: number;
  /** Timed rounds per contender. @default 5 */
  rounds?: number;
  /** Length of one timed round, ms. @default 1000 */
  roundMs?: number;
  /** Untimed warm-up per contender, ms. @default 500 */
  warmupMs?: number;
  /** Record per-operation latency (costs two clock reads per op). @default false */
  latency?: boolean;
  /** Operations one call of `op` stands for (e.g. a batch of 100). @default 1 */
  opsPerCall?: number;
}

export interface Result {
  name: string;
  opsPerSec: number;
  /** Median latency, microseconds (when `latency` was on). */
  p50Us?: number;
  p99Us?: number;
  /** subject ops/s divided by this contender's ops/s: how many times faster the subject is. */
  subjectRatio: number;
}

interface RoundResult {
  opsPerSec: number;
  p50Us?: number;
  p99Us?: number;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

async function round(c: Contender, concurrency: number, ms: number, latency: boolean): Promise<RoundResult> {
  await c.beforeRound?.();
  const histogram = latency ? createHistogram() : undefined;
  const op = c.op;
  // Without latency recording the clock is read once per chunk, so the loop measures the operation, not
  // performance.now().
  const chunk = latency ? 1 : 64;
  let ops = 0;
  let stop = false;
  const start = performance.now();
  const end = start + ms;
  const worker = async () => {
    while (!stop) {
      for (let i = 0; i < chunk; i++) {
        if (histogram) {
          const t0 = performance.now();
          await op();
          histogram.record(Math.max(1, Math.round((performance.now() - t0) * 1e3)));
        } else {
          await op();
        }
      }
      ops += chunk;
      if (performance.now() >= end) stop = true;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsedMs = performance.now() - start;
  await c.afterRound?.();
  return {
    opsPerSec: (ops / elapsedMs) * 1e3,
    ...(histogram ? { p50Us: histogram.percentile(50), p99Us: histogram.percentile(99) } : {}),
  };
}

/** Runs the contenders side by side and prints a Markdown table; the first contender is the subject. */
export async function compare(options: CompareOptions, contenders: Contender[]): Promise<Result[]> {
  const {
    concurrency = 1,
    rounds = 5,
    roundMs = 1_000,
    warmupMs = 500,
    latency = false,
    opsPerCall = 1,
  } = options;
  for (const c of contenders) await round(c, concurrency, warmupMs, latency);
  const perContender = contenders.map(() => [] as RoundResult[]);
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < contenders.length; i++) {
      (globalThis as { gc?: () => void }).gc?.();
      perContender[i]!.push(await round(contenders[i]!, concurrency, roundMs, latency));
    }
  }
  const results = contenders.map((c, i) => {
    const rs = perContender[i]!;
    return {
      name: c.name,
      opsPerSec: median(rs.map((r) => r.opsPerSec)) * opsPerCall,
      ...(latency ? { p50Us: median(rs.map((r) => r.p50Us!)), p99Us: median(rs.map((r) => r.p99Us!)) } : {}),
      subjectRatio: 0,
    };
  });
  for (const r of results) r.subjectRatio = results[0]!.opsPerSec / r.opsPerSec;
  printTable(options.title, concurrency, results);
  return results;
}

function printTable(title: string, concurrency: number, results: Result[]): void {
  const subject = results[0]!.name;
  const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
  console.log(`\n### ${title} (concurrency ${concurrency})\n`);
  const latency = results[0]!.p50Us !== undefined;
  console.log(
    `| contender | ops/s |${latency ? ' p50 µs | p99 µs |' : ''} ${subject} ÷ this |\n|---|---:|${latency ? '---:|---:|' : ''}---:|`,
  );
  for (const r of results) {
    console.log(
      `| ${r.name} | ${fmt(r.opsPerSec)} |${latency ? ` ${r.p50Us} | ${r.p99Us} |` : ''} ${r.subjectRatio.toFixed(2)}x |`,
    );
  }
}

/** Runs a full GC three times, a turn of the event loop apart, so heapUsed reads a settled heap. */
export async function settleHeap(): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error('run with --expose-gc (npm run bench does)');
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((r) => setImmediate(r));
  }
}

/** Heap bytes per item: builds `count` items with `create`, holding them, with a full GC before and after. */
export async function heapPerItem(count: number, create: (i: number) => unknown): Promise<number> {
  await settleHeap();
  const before = process.memoryUsage().heapUsed;
  const held: unknown[] = new Array(count);
  for (let i = 0; i < count; i++) held[i] = create(i);
  await settleHeap();
  const after = process.memoryUsage().heapUsed;
  // The array holding the items is the caller's, not the items': subtract its 8 bytes a slot.
  const perItem = (after - before) / count - 8;
  held.length = 0;
  return perItem;
}

/** The machine line every BENCHMARKS.md entry carries. */
export function machine(): string {
  return `${availableParallelism()} cores, Node ${process.version}, ${new Date().toISOString().slice(0, 10)}`;
}
