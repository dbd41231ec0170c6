/**
 * RequestBatcher.add against dataloader.load at 256 callers at once, both batching per tick (maxWaitMs 0,
 * dataloader's default scheduling) with the same batch size and an in-memory batch function. dataloader
 * runs with its cache off, since `add` caches nothing; a second table compares `load` with a result cache
 * against dataloader's (unbounded) cache on a small key space.
 */
import DataLoader from 'dataloader';
import { RequestBatcher } from '../src/concurrency/batcher.ts';
import { compare } from './harness.ts';

const CONCURRENCY = 256;
const MAX_BATCH_SIZE = 256;
const double = async (items: readonly number[]): Promise<number[]> => items.map((n) => n * 2);

const ours = new RequestBatcher<number, number>(double, {
  maxBatchSize: MAX_BATCH_SIZE,
  maxWaitMs: 0,
});
const loader = new DataLoader<number, number>(double, { cache: false, maxBatchSize: MAX_BATCH_SIZE });

let n = 0;
await compare({ title: 'batcher add, in-memory batch function', concurrency: CONCURRENCY, rounds: 9 }, [
  { name: 'clawperf RequestBatcher.add (maxQueueSize 10,000, 4 batches at once)', op: () => ours.add(n++) },
  { name: 'dataloader.load (cache off, unbounded)', op: () => loader.load(n++) },
]);

const KEYS = 1_000;
const cached = new RequestBatcher<number, number>(double, {
  maxBatchSize: MAX_BATCH_SIZE,
  maxWaitMs: 0,
  cache: { maxEntries: KEYS },
});
const cachingLoader = new DataLoader<number, number>(double, { maxBatchSize: MAX_BATCH_SIZE });
let k = 0;
await compare({ title: `batcher load, ${KEYS} keys, result cache`, concurrency: CONCURRENCY }, [
  { name: `clawperf RequestBatcher.load (LRU cache, ${KEYS} entries)`, op: () => cached.load(k++ % KEYS) },
  { name: 'dataloader.load (unbounded promise cache)', op: () => cachingLoader.load(k++ % KEYS) },
]);

await ours.close();
await cached.close();
