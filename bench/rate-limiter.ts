/**
 * RateLimiter against rate-limiter-flexible, in memory and on Redis. Same workload for everyone: a fixed
 * window of 60 s with a limit no call reaches, over 1,000 keys, so every check is an admitted check that
 * reads and writes state. On Redis each contender gets its own redis-server, both on ioredis with
 * auto-pipelining, and every round checks with `INFO stats` that Redis processed at least one command per
 * check (no answer from memory).
 *
 * `BENCH_RATE_LIMITER_RUNS=5` repeats the memory table five times in the process and prints each run's
 * ratio and their median; `BENCH_RATE_LIMITER_ONLY=memory` (or `redis`) runs one half.
 */
import { Redis } from 'ioredis';
import { RateLimiterMemory, RateLimiterRedis } from 'rate-limiter-flexible';
import { RateLimiter } from '../src/concurrency/rate-limiter.ts';
import { startRedis } from '../test/helpers/redis.ts';
import { compare, heapPerItem } from './harness.ts';

const KEYS = Array.from({ length: 1_000 }, (_, i) => `user:${i}`);
const LIMIT = 1e9;

function keyCycler() {
  let i = 0;
  return () => {
    i = (i + 1) % KEYS.length;
    return KEYS[i]!;
  };
}

const RUNS = Number(process.env.BENCH_RATE_LIMITER_RUNS ?? 1);
const ONLY = process.env.BENCH_RATE_LIMITER_ONLY;
if (!Number.isInteger(RUNS) || RUNS < 1) throw new Error(`BENCH_RATE_LIMITER_RUNS: ${RUNS}`);

async function memory(): Promise<void> {
  const ratios: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    const ours = new RateLimiter({ algorithm: 'fixed-window', windowMs: 60_000, maxRequests: LIMIT });
    const theirs = new RateLimiterMemory({ points: LIMIT, duration: 60 });
    const a = keyCycler();
    const b = keyCycler();
    const [, peer] = await compare(
      { title: 'RateLimiter memory: admitted check, fixed window, 1,000 keys', concurrency: 1 },
      [
        { name: 'clawperf RateLimiter (memory)', op: () => ours.allow(a()) },
        { name: 'rate-limiter-flexible RateLimiterMemory', op: () => theirs.consume(b()) },
      ],
    );
    ratios.push(peer!.subjectRatio);
    await ours.close();
  }
  if (RUNS > 1) {
    const sorted = [...ratios].sort((x, y) => x - y);
    const mid = sorted.length >> 1;
    const median = sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
    console.log(
      `\nMemory, clawperf ÷ rate-limiter-flexible over ${RUNS} runs: ${ratios.map((r) => `${r.toFixed(2)}x`).join(', ')}; median ${median.toFixed(2)}x`,
    );
  }

  const perOurs = await (async () => {
    const l = new RateLimiter({ algorithm: 'fixed-window', windowMs: 60_000, maxRequests: 100 });
    const bytes = await heapPerItem(100_000, (i) => {
      void l.allow(`ip:${i}`);
    });
    await l.close();
    return bytes;
  })();
  const perTheirs = await (async () => {
    const l = new RateLimiterMemory({ points: 100, duration: 60 });
    return heapPerItem(100_000, (i) => {
      l.consume(`ip:${i}`).catch(() => {});
    });
  })();
  console.log(
    `\nHeap per tracked key (100,000 keys): clawperf ${Math.round(perOurs)} B, rate-limiter-flexible ${Math.round(perTheirs)} B`,
  );
}

function commandsProcessed(cli: (...args: string[]) => string): number {
  const m = /total_commands_processed:(\d+)/.exec(cli('info', 'stats'));
  return Number(m?.[1] ?? 0);
}

async function redis(): Promise<void> {
  const servers = await Promise.all([startRedis(), startRedis(), startRedis()]);
  const [s1, s2, s3] = servers as [
    Awaited<ReturnType<typeof startRedis>>,
    Awaited<ReturnType<typeof startRedis>>,
    Awaited<ReturnType<typeof startRedis>>,
  ];
  const clientOptions = { enableAutoPipelining: true, maxRetriesPerRequest: 1 };
  const c1 = new Redis(s1.url, clientOptions);
  const c2 = new Redis(s2.url, clientOptions);
  const c3 = new Redis(s3.url, clientOptions);
  try {
    const ours = new RateLimiter({
      algorithm: 'fixed-window',
      windowMs: 60_000,
      maxRequests: LIMIT,
      redis: c1,
    });
    const theirs = new RateLimiterRedis({ storeClient: c2, points: LIMIT, duration: 60 });
    const a = keyCycler();
    const b = keyCycler();
    const c = keyCycler();
    const proof = (server: typeof s1, label: string) => {
      let calls = 0;
      let before = 0;
      return {
        count: () => calls++,
        beforeRound: () => {
          calls = 0;
          before = commandsProcessed(server.cli);
        },
        afterRound: () => {
          const served = commandsProcessed(server.cli) - before;
          if (served < calls)
            throw new Error(`${label}: Redis processed ${served} commands for ${calls} checks`);
        },
      };
    };
    const p1 = proof(s1, 'clawperf');
    const p2 = proof(s2, 'rate-limiter-flexible');
    const p3 = proof(s3, 'ioredis INCR');
    await compare(
      {
        title: 'RateLimiter on Redis: admitted check, fixed window, 1,000 keys, each on its own redis-server',
        concurrency: 64,
      },
      [
        {
          name: 'clawperf RateLimiter (Redis, exact: refused calls not counted)',
          op: () => {
            p1.count();
            return ours.allow(a());
          },
          beforeRound: p1.beforeRound,
          afterRound: p1.afterRound,
        },
        {
          name: 'rate-limiter-flexible RateLimiterRedis (atomic Lua)',
          op: () => {
            p2.count();
            return theirs.consume(b());
          },
          beforeRound: p2.beforeRound,
          afterRound: p2.afterRound,
        },
        {
          name: 'limit: ioredis INCR (autopipelined, no limiting)',
          op: () => {
            p3.count();
            return c3.incr(c());
          },
          beforeRound: p3.beforeRound,
          afterRound: p3.afterRound,
        },
      ],
    );
    await ours.close();
  } finally {
    c1.disconnect();
    c2.disconnect();
    c3.disconnect();
    await Promise.all(servers.map((s) => s.stop()));
  }
}

if (ONLY !== 'redis') await memory();
if (ONLY !== 'memory') await redis();
