/**
 * ConnectionPool acquire + release against generic-pool and tarn: 32 callers at once, an in-memory resource,
 * every pool bounding each wait with the same 5 s acquire timeout. Two shapes: `max` 32 (a resource is
 * always idle: the pool's own overhead) and `max` 8 (24 callers always queued: hand-off between callers).
 */
import genericPool from 'generic-pool';
import { Pool as TarnPool } from 'tarn';
import { ConnectionPool } from '../src/concurrency/connection-pool.ts';
import { compare } from './harness.ts';

const ACQUIRE_TIMEOUT_MS = 5_000;
const CONCURRENCY = 32;

interface Resource {
  uses: number;
}
const create = async (): Promise<Resource> => ({ uses: 0 });
const destroy = async (_r: Resource): Promise<void> => {};

async function run(max: number): Promise<void> {
  const ours = new ConnectionPool<Resource>({ create, destroy, max, acquireTimeoutMs: ACQUIRE_TIMEOUT_MS });
  const generic = genericPool.createPool<Resource>(
    { create, destroy },
    { max, acquireTimeoutMillis: ACQUIRE_TIMEOUT_MS },
  );
  const genericUnbounded = genericPool.createPool<Resource>({ create, destroy }, { max });
  const tarn = new TarnPool<Resource>({
    create: (cb) => cb(null, { uses: 0 }),
    destroy: () => {},
    min: 0,
    max,
    acquireTimeoutMillis: ACQUIRE_TIMEOUT_MS,
  });

  await compare(
    { title: `pool acquire + release, max ${max}, in-memory resource`, concurrency: CONCURRENCY },
    [
      {
        name: 'clawperf ConnectionPool (5 s acquire timeout)',
        op: async () => {
          const lease = await ours.acquire();
          lease.connection.uses++;
          ours.release(lease);
        },
      },
      {
        name: 'generic-pool (5 s acquire timeout)',
        op: async () => {
          const r = await generic.acquire();
          r.uses++;
          generic.release(r);
        },
      },
      {
        name: 'tarn (5 s acquire timeout)',
        op: async () => {
          const r = await tarn.acquire().promise;
          r.uses++;
          tarn.release(r);
        },
      },
      {
        name: 'generic-pool (no acquire timeout: unbounded wait, reference only)',
        op: async () => {
          const r = await genericUnbounded.acquire();
          r.uses++;
          genericUnbounded.release(r);
        },
      },
    ],
  );

  await ours.drain();
  await generic.drain();
  await generic.clear();
  await genericUnbounded.drain();
  await genericUnbounded.clear();
  await tarn.destroy();
}

await run(32);
await run(8);
