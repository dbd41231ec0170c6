/**
 * `clawperf gateway --workers 2` against `--workers 1`, side by side in one run: both gateways started as a
 * user starts them (`src/gateway/main.ts`, the CLI without its dispatcher; `--cache-dir off`, limits off,
 * `--log-level warn`), both running throughout, rounds interleaved, each first in every other round.
 *
 * With one worker the gateway is one process with its cache in memory. With two, node:cluster's primary
 * accepts the connections and hands them to the workers, and without `--redis` it runs a private
 * `redis-server` on a Unix socket that the workers share their state on: the L2 cache, and a lease per miss
 * so that identical requests on two workers make one upstream call. So a miss there costs Redis round
 * trips that one process does not make; the Redis commands per request are counted from the private
 * server's `INFO` and printed beside the figures.
 *
 * Two paths, as bench/dashboard.ts: a cached answer (`/v1/embeddings`, one input asked again: an L1 hit
 * in every worker once each has seen it) and the miss path (distinct deterministic chat completions through
 * to a fake upstream in its own process that answers at once). The load comes from autocannon at 16
 * connections in a process of its own (this file with `load`), which checks every answer's
 * `x-clawperf-cache`; the fake upstream counts the calls it answers.
 *
 * CPU per request is summed over every process of the gateway: the primary, its workers and its private
 * `redis-server`, read from `/proc/<pid>/stat` (utime + stime) of the whole process tree before and after
 * each round. Everything (gateways, load generator, fake upstream) shares the machine's cores, so
 * requests/s is what is left to the gateway beside its load, not what it would do on cores of its own.
 */
import { type ChildProcess, fork, spawn } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { createServer } from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { request } from 'undici';
import { startProcess } from './fixtures/processes.ts';

const CONNECTIONS = 16;
/** Length of one autocannon round, s; warm-up rounds come first, interleaved like the timed ones. */
const ROUND_S = 3;
/** A fresh gateway spends several times its steady CPU per miss over its first rounds (see bench/gateway.ts). */
const WARMUP_ROUNDS = 2;
const ROUNDS = 5;
/** Clock ticks per second of /proc/<pid>/stat's utime and stime (USER_HZ, 100 on Linux). */
const TICKS_PER_S = 100;

const root = fileURLToPath(new URL('..', import.meta.url));

/** The part of autocannon's API used here (the package ships no types). */
interface CannonOptions {
  url: string;
  connections: number;
  duration: number;
  idReplacement: boolean;
  requests: {
    method: string;
    path: string;
    headers: Record<string, string>;
    body: string;
    onResponse: (status: number, body: string, context: unknown, headers: Record<string, unknown>) => void;
  }[];
}

/** What one load round reports. */
interface Load {
  rps: number;
  /** Answers by status and `x-clawperf-cache`, e.g. `200 hit`. */
  answers: Record<string, number>;
  errors: number;
}

interface LoadOrder {
  url: string;
  path: string;
  body: string;
  seconds: number;
}

/** `load`: the load generator alone in its process, running one autocannon round per message. */
async function load(): Promise<void> {
  const autocannon = createRequire(import.meta.url)('autocannon') as (
    o: CannonOptions,
  ) => Promise<{ errors: number; timeouts: number; requests: { average: number } }>;
  process.on('message', async (order: LoadOrder) => {
    const answers: Record<string, number> = {};
    const result = await autocannon({
      url: order.url,
      connections: CONNECTIONS,
      duration: order.seconds,
      // `[<id>]` in the body becomes a new id in every request: every chat completion is a new question.
      idReplacement: true,
      requests: [
        {
          method: 'POST',
          path: order.path,
          headers: { 'content-type': 'application/json' },
          body: order.body,
          onResponse: (status, _body, _context, headers) => {
            const key = `${status} ${String(headers['x-clawperf-cache'] ?? 'none')}`;
            answers[key] = (answers[key] ?? 0) + 1;
          },
        },
      ],
    });
    process.send?.({
      load: { rps: result.requests.average, answers, errors: result.errors + result.timeouts },
    });
  });
  process.send?.('ready');
  process.once('disconnect', () => process.exit(0));
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  await new Promise((r) => server.close(r));
  return port;
}

/** One process's state from /proc: its parent, its command name and its CPU ticks (user + system). */
function readStat(pid: number): { ppid: number; comm: string; ticks: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const close = stat.lastIndexOf(')');
    // Fields after the command name, from field 3 (state): ppid is field 4, utime 14, stime 15.
    const fields = stat.slice(close + 2).split(' ');
    return {
      ppid: Number(fields[1]),
      comm: stat.slice(stat.indexOf('(') + 1, close),
      ticks: Number(fields[11]) + Number(fields[12]),
    };
  } catch {
    // The process exited between the listing and the read.
    return undefined;
  }
}

/** CPU ms of `rootPid` and every descendant, by role: the process itself, its node children, redis-server. */
function treeCpu(rootPid: number): {
  primary: number;
  workers: number;
  redis: number;
  /** The processes of the tree: pid and command name. */
  processes: string[];
} {
  const stats = new Map<number, NonNullable<ReturnType<typeof readStat>>>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const s = readStat(Number(name));
    if (s !== undefined) stats.set(Number(name), s);
  }
  const inTree = new Set([rootPid]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const [pid, s] of stats) {
      if (!inTree.has(pid) && inTree.has(s.ppid)) {
        inTree.add(pid);
        grew = true;
      }
    }
  }
  const ms = {
    primary: 0,
    workers: 0,
    redis: 0,
    processes: [...inTree].map((pid) => `${pid} ${stats.get(pid)?.comm}`),
  };
  for (const pid of inTree) {
    const s = stats.get(pid);
    if (s === undefined) continue;
    const used = (s.ticks * 1000) / TICKS_PER_S;
    if (pid === rootPid) ms.primary += used;
    else if (s.comm.startsWith('redis-server')) ms.redis += used;
    else ms.workers += used;
  }
  return ms;
}

interface Gateway {
  name: string;
  workers: number;
  child: ChildProcess;
  url: string;
  /** What the gateway has written to its stderr. */
  log: () => string;
  /** The private redis-server's client (more than one worker). */
  redis?: Redis;
}

/** Starts `clawperf gateway --workers <workers>` in front of `upstream` and waits until it answers. */
async function startGateway(workers: number, upstreamPort: number): Promise<Gateway> {
  const port = await freePort();
  // Its log goes to a file, not a pipe: a pipe would close with this process, and a gateway stopping after a
  // failed run would then fail to write its last lines.
  const log = join(tmpdir(), `clawperf-bench-workers-${process.pid}-${workers}.log`);
  const fd = openSync(log, 'w');
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      'src/gateway/main.ts',
      '--workers',
      String(workers),
      '--port',
      String(port),
      '--host',
      '127.0.0.1',
      '--upstream',
      `http://127.0.0.1:${upstreamPort}/v1`,
      '--cache-dir',
      'off',
      '--log-level',
      'warn',
    ],
    { cwd: root, stdio: ['ignore', 'ignore', fd] },
  );
  closeSync(fd);
  // A bench that fails half-way must not leave a gateway running: SIGTERM makes the primary stop its workers
  // and its redis-server too.
  const orphan = () => child.kill('SIGTERM');
  process.once('exit', orphan);
  child.once('exit', () => process.removeListener('exit', orphan));
  const stderr = () => readFileSync(log, 'utf8');
  child.once('exit', () => rmSync(log, { force: true }));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  // Every worker must be listening: the primary says so once the last one is.
  const listening = () => workers === 1 || stderr().includes(`${workers} workers listening`);
  for (;;) {
    if (child.exitCode !== null) throw new Error(`--workers ${workers} exited: ${stderr()}`);
    try {
      const r = await request(`${url}/readyz`);
      await r.body.dump();
      if (r.statusCode === 200 && listening()) break;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) throw new Error(`--workers ${workers} did not start: ${stderr()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const g: Gateway = { name: `--workers ${workers}`, workers, child, url, log: stderr };
  if (workers > 1) {
    // private-redis.ts's socket, in the directory a gateway without a disk cache uses.
    g.redis = new Redis({ path: join(tmpdir(), 'clawperf', `redis-${child.pid}.sock`) });
  }
  return g;
}

/** Commands the server has processed, in all and by command (`INFO commandstats`). */
async function redisCommands(redis: Redis): Promise<Map<string, number>> {
  const info = await redis.info('commandstats');
  const calls = new Map<string, number>();
  for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) calls.set(m[1]!, Number(m[2]));
  return calls;
}

/** Sends one round's order to the load generator and resolves with its report. */
async function runLoad(loader: ChildProcess, order: LoadOrder): Promise<Load> {
  const reply = new Promise<Load>((resolve, reject) => {
    const onMessage = (message: unknown) => {
      if (typeof message !== 'object' || message === null || !('load' in message)) return;
      loader.off('message', onMessage);
      loader.off('exit', onExit);
      resolve((message as { load: Load }).load);
    };
    const onExit = () => reject(new Error('the load generator exited'));
    loader.on('message', onMessage);
    loader.once('exit', onExit);
  });
  loader.send(order);
  return reply;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

async function main(): Promise<void> {
  const upstream = await startProcess('upstream', 0);
  const loader = fork(fileURLToPath(import.meta.url), ['load'], {
    execArgv: ['--import', 'tsx'],
    stdio: 'inherit',
  });
  await once(loader, 'message');
  const gateways = [await startGateway(1, upstream.port), await startGateway(2, upstream.port)];
  const paths: (Path & { path: string; body: string })[] = [
    {
      title: 'cached answer: `/v1/embeddings`, one input asked again (an L1 hit)',
      path: '/v1/embeddings',
      body: JSON.stringify({ model: 'local-embed', input: 'the same question' }),
      expect: 'hit',
    },
    {
      title: 'miss: distinct deterministic chat completions through to a fake upstream answering at once',
      path: '/v1/chat/completions',
      body: JSON.stringify({
        model: 'bench-chat',
        temperature: 0,
        messages: [{ role: 'user', content: 'workers question [<id>]' }],
      }),
      expect: 'miss',
    },
  ];
  const rows: Row[][] = [];
  for (const p of paths) {
    const perGateway = gateways.map(
      (): Row => ({
        rps: [],
        us: [],
        primary: [],
        workers: [],
        redis: [],
        redisCommands: new Map(),
        answered: 0,
        processes: new Set(),
      }),
    );
    rows.push(perGateway);
    // The cached answer is stored before any round, so every request of every round is a hit.
    if (p.expect === 'hit') {
      for (const g of gateways) {
        const r = await request(`${g.url}${p.path}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: p.body,
        });
        await r.body.dump();
      }
    }
    for (let round = 0; round < WARMUP_ROUNDS + ROUNDS; round++) {
      for (const i of round % 2 === 0 ? [0, 1] : [1, 0]) {
        const g = gateways[i]!;
        const row = perGateway[i]!;
        const served0 = await upstream.served();
        const commands0 = g.redis === undefined ? undefined : await redisCommands(g.redis);
        const cpu0 = treeCpu(g.child.pid!);
        const result = await runLoad(loader, { url: g.url, path: p.path, body: p.body, seconds: ROUND_S });
        const cpu1 = treeCpu(g.child.pid!);
        const served = (await upstream.served()) - served0;
        const commands1 = g.redis === undefined ? undefined : await redisCommands(g.redis);
        const answered = Object.values(result.answers).reduce((a, b) => a + b, 0);
        // A worker's first requests for the answer another worker stored read it from Redis together, and all
        // but one come back `coalesced`: allowed in the warm-up, when each worker fills its L1.
        const expected =
          (result.answers[`200 ${p.expect}`] ?? 0) +
          (round < WARMUP_ROUNDS && p.expect === 'hit' ? (result.answers['200 coalesced'] ?? 0) : 0);
        if (result.errors > 0 || expected !== answered) {
          throw new Error(
            `${g.name}, ${p.path}: ${result.errors} errors, answers ${JSON.stringify(result.answers)}`,
          );
        }
        // Every miss must have reached the upstream, and no hit may have.
        if ((p.expect === 'miss' && served < answered) || (p.expect === 'hit' && served > 0)) {
          throw new Error(`${g.name}, ${p.path}: ${answered} answers, ${served} upstream calls`);
        }
        if (round < WARMUP_ROUNDS) continue;
        row.rps.push(result.rps);
        row.us.push(
          ((cpu1.primary + cpu1.workers + cpu1.redis - cpu0.primary - cpu0.workers - cpu0.redis) * 1000) /
            answered,
        );
        row.primary.push(((cpu1.primary - cpu0.primary) * 1000) / answered);
        row.workers.push(((cpu1.workers - cpu0.workers) * 1000) / answered);
        row.redis.push(((cpu1.redis - cpu0.redis) * 1000) / answered);
        row.answered += answered;
        for (const name of [...cpu0.processes, ...cpu1.processes]) row.processes.add(name);
        if (commands0 !== undefined && commands1 !== undefined) {
          // The bench's own INFO is not the gateway's.
          commands1.delete('info');
          for (const [name, calls] of commands1) {
            row.redisCommands.set(
              name,
              (row.redisCommands.get(name) ?? 0) + calls - (commands0.get(name) ?? 0),
            );
          }
        }
      }
    }
  }
  report(paths, gateways, rows);
  for (const [gi, g] of gateways.entries()) {
    const seen = new Set(rows.flatMap((perGateway) => [...perGateway[gi]!.processes]));
    console.log(`\nProcesses of ${g.name} over the rounds: ${[...seen].join(', ')}.`);
    // A worker the primary had to replace would show here.
    const restarts = g.log().match(/^.*exited.*$/gm);
    if (restarts !== null) console.log(`Its log: ${restarts.join('; ')}`);
    if (g.redis === undefined) continue;
    // What the private Redis holds after the rounds: the answers, and the tag index every write adds to.
    const memory = (await g.redis.info('memory')).match(/^used_memory_human:(\S+)/m)?.[1];
    console.log(
      `\nThe private redis-server of ${g.name} after the rounds: ${await g.redis.dbsize()} keys, ${memory} used; ` +
        `the default tenant's tag set \`clawperf:gw:t:{tenant:default}:k\` holds ` +
        `${await g.redis.scard('clawperf:gw:t:{tenant:default}:k')} members.`,
    );
  }
  for (const g of gateways) {
    g.redis?.disconnect();
    g.child.kill('SIGTERM');
    if (g.child.exitCode === null) await once(g.child, 'exit');
  }
  loader.disconnect();
  await upstream.stop();
}

interface Path {
  title: string;
  expect: string;
}

interface Row {
  rps: number[];
  us: number[];
  primary: number[];
  workers: number[];
  redis: number[];
  /** Commands the private Redis processed over the timed rounds, by command. */
  redisCommands: Map<string, number>;
  answered: number;
  /** Every process seen in the gateway's tree over the timed rounds: pid and command name. */
  processes: Set<string>;
}

function report(paths: Path[], gateways: Gateway[], rows: Row[][]): void {
  const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
  console.log(
    `\n### \`clawperf gateway --workers N\`: requests/s and CPU per request of the whole gateway (every process: ` +
      `primary, workers, private redis-server), autocannon at ${CONNECTIONS} connections in its own process, ` +
      `${ROUNDS} rounds of ${ROUND_S} s after ${WARMUP_ROUNDS} untimed, interleaved (median); ` +
      `${availableParallelism()} cores shared by the gateways, the load generator and the fake upstream\n`,
  );
  console.log(
    '| path | gateway | processes | req/s | ÷ --workers 1 | CPU µs / request | ÷ --workers 1 | primary | workers | redis-server | Redis commands / request |',
  );
  console.log('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|');
  for (const [pi, p] of paths.entries()) {
    const base = rows[pi]![0]!;
    for (const [gi, g] of gateways.entries()) {
      const row = rows[pi]![gi]!;
      const rps = median(row.rps);
      const us = median(row.us);
      let commands = '-';
      if (g.redis !== undefined) {
        const total = [...row.redisCommands.values()].reduce((a, b) => a + b, 0);
        const byName = [...row.redisCommands]
          .filter(([, calls]) => calls > 0)
          .sort((a, b) => b[1] - a[1])
          .map(([name, calls]) => `${name} ${(calls / row.answered).toFixed(2)}`);
        commands = `${(total / row.answered).toFixed(2)}${byName.length > 0 ? ` (${byName.join(', ')})` : ''}`;
      }
      console.log(
        `| ${p.title} | ${g.name} | ${row.processes.size} | ${fmt(rps)} | ${(rps / median(base.rps)).toFixed(2)}x | ` +
          `${us.toFixed(1)} | ${(us / median(base.us)).toFixed(2)}x | ${median(row.primary).toFixed(1)} | ` +
          `${median(row.workers).toFixed(1)} | ${median(row.redis).toFixed(1)} | ${commands} |`,
      );
    }
  }
  console.log('\nPer round, req/s and CPU µs / request (--workers 1; --workers 2):\n');
  for (const [pi, p] of paths.entries()) {
    const [one, two] = rows[pi]!;
    for (let r = 0; r < ROUNDS; r++) {
      console.log(
        `- ${p.expect}, round ${r + 1}: ${fmt(one!.rps[r]!)}, ${one!.us[r]!.toFixed(1)} µs; ${fmt(two!.rps[r]!)}, ${two!.us[r]!.toFixed(1)} µs`,
      );
    }
  }
}

if (process.argv[2] === 'load') await load();
else await main();
