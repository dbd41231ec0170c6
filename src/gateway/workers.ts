/**
 * `clawperf gateway --workers N`: N worker processes serving one port (node:cluster: the primary accepts
 * connections and hands them to the workers in turn), with the guarantees of N gateway nodes, since they
 * share their state on Redis: exact limits, one cache, one upstream call for identical concurrent requests,
 * invalidation reaching every worker, provider pacing shared. Without `--redis` the primary runs a private
 * `redis-server` on a Unix socket (private-redis.ts).
 *
 * The primary serves nothing itself. It replaces a worker that dies (only that worker's requests in flight
 * fail), answers the workers' requests for the whole gateway's metrics (prom-client's
 * `AggregatorRegistry` sums every worker's registry), and on SIGTERM or SIGINT drains every worker, then
 * stops its Redis and exits 0.
 *
 * @module
 */
import cluster, { type Worker } from 'node:cluster';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AggregatorRegistry, type Registry } from 'prom-client';
import type { GatewayConfig } from './config.ts';
import { type PrivateRedis, startPrivateRedis } from './private-redis.ts';

/** The environment variable that tells a worker the Redis URL of its primary's private server. */
const PRIVATE_REDIS_ENV = 'CLAWPERF_PRIVATE_REDIS_URL';
/** A worker's message asking for the whole gateway's metrics, and the primary's answer. */
const METRICS_REQUEST = 'clawperf:metrics';
/** Longest a worker waits for the primary's aggregated metrics, ms. */
const METRICS_TIMEOUT_MS = 5_000;
/** A worker that dies this soon after starting, several times in a row, is not started again. */
const CRASH_LOOP_MS = 5_000;
const CRASH_LOOP_LIMIT = 5;

interface MetricsMessage {
  type: typeof METRICS_REQUEST;
  id: number;
  text?: string;
  error?: string;
}

const isMetricsMessage = (m: unknown): m is MetricsMessage =>
  typeof m === 'object' && m !== null && (m as { type?: unknown }).type === METRICS_REQUEST;

/** Whether this process is a worker of a `--workers` gateway. */
export function isWorker(): boolean {
  return cluster.isWorker;
}

/** A worker's configuration: its primary's private Redis, when it runs one. */
export function workerConfig(config: Partial<GatewayConfig>): Partial<GatewayConfig> {
  const url = process.env[PRIVATE_REDIS_ENV];
  return url === undefined || config.redisUrl !== undefined ? config : { ...config, redisUrl: url };
}

/**
 * In a worker: lets the primary read `registry`, and returns what the worker's `/metrics` serves, the
 * whole gateway's metrics in Prometheus' text format.
 */
export function workerMetrics(registry: Registry): () => Promise<string> {
  // Constructing one installs prom-client's answer to the primary's requests.
  new AggregatorRegistry();
  AggregatorRegistry.setRegistries([registry]);
  let ids = 0;
  const pending = new Map<number, { resolve: (text: string) => void; reject: (e: Error) => void }>();
  process.on('message', (m: unknown) => {
    if (!isMetricsMessage(m)) return;
    const waiter = pending.get(m.id);
    if (waiter === undefined) return;
    pending.delete(m.id);
    if (m.text !== undefined) waiter.resolve(m.text);
    else waiter.reject(new Error(m.error ?? 'no metrics'));
  });
  return () =>
    new Promise<string>((resolve, reject) => {
      const id = ++ids;
      const timer = setTimeout(() => {
        pending.delete(id);
        reject(new Error(`the primary did not send metrics within ${METRICS_TIMEOUT_MS} ms`));
      }, METRICS_TIMEOUT_MS);
      pending.set(id, {
        resolve: (text) => {
          clearTimeout(timer);
          resolve(text);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      process.send?.({ type: METRICS_REQUEST, id } satisfies MetricsMessage);
    });
}

/**
 * The primary: starts `config.workers` workers (and a private Redis without `config.redisUrl`), keeps
 * them running, and resolves with the exit code once a signal has drained them.
 */
export async function runPrimary(config: GatewayConfig, log: (line: string) => void): Promise<number> {
  let redis: PrivateRedis | undefined;
  const env: Record<string, string> = {};
  if (config.redisUrl === undefined) {
    redis = await startPrivateRedis(
      config.cacheDir === false ? join(tmpdir(), 'clawperf') : join(config.cacheDir, 'run'),
    );
    env[PRIVATE_REDIS_ENV] = redis.url;
  }
  const aggregator = new AggregatorRegistry();
  let stopping = false;
  let crashes = 0;
  const started = new Map<Worker, number>();
  const fork = () => started.set(cluster.fork(env), Date.now());
  cluster.on('message', (worker, m: unknown) => {
    if (!isMetricsMessage(m) || m.text !== undefined || m.error !== undefined) return;
    aggregator.clusterMetrics().then(
      (text) => worker.isConnected() && worker.send({ type: METRICS_REQUEST, id: m.id, text }),
      (error: Error) =>
        worker.isConnected() && worker.send({ type: METRICS_REQUEST, id: m.id, error: error.message }),
    );
  });
  let allExited!: () => void;
  const exited = new Promise<void>((resolve) => {
    allExited = resolve;
  });
  let stop!: (code: number) => void;
  const stopped = new Promise<number>((resolve) => {
    stop = resolve;
  });
  cluster.on('exit', (worker, code, signal) => {
    const since = Date.now() - (started.get(worker) ?? 0);
    started.delete(worker);
    if (stopping) {
      if (started.size === 0) allExited();
      return;
    }
    crashes = since < CRASH_LOOP_MS ? crashes + 1 : 0;
    log(
      `clawperf gateway: worker ${worker.process.pid} exited (${signal ?? `code ${code}`}); ${crashes >= CRASH_LOOP_LIMIT ? 'it keeps failing: stopping' : 'starting another'}`,
    );
    if (crashes >= CRASH_LOOP_LIMIT) stop(1);
    else fork();
  });
  const listening = new Promise<string>((resolve) => {
    let count = 0;
    cluster.on('listening', (_worker, address) => {
      if (++count === config.workers) {
        const host =
          address.address === undefined || address.address === null ? config.host : address.address;
        resolve(`http://${host.includes(':') ? `[${host}]` : host}:${address.port}`);
      }
    });
  });
  for (let i = 0; i < config.workers; i++) fork();
  const onSignal = (signal: string) => {
    log(`clawperf gateway: ${signal} received, draining ${started.size} workers`);
    stop(0);
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  void listening.then((url) =>
    log(
      `clawperf gateway: ${config.workers} workers listening on ${url}${redis ? ` (private Redis ${redis.url})` : ''}`,
    ),
  );
  const code = await stopped;
  process.removeListener('SIGTERM', onSignal);
  process.removeListener('SIGINT', onSignal);
  stopping = true;
  if (started.size > 0) {
    for (const worker of started.keys()) worker.process.kill('SIGTERM');
    await exited;
  }
  await redis?.stop();
  return code;
}
