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
import { type DashboardSnapshot, mergeSnapshots } from './dashboard-snapshot.ts';
import { type PrivateRedis, startPrivateRedis } from './private-redis.ts';

/** The environment variable that tells a worker the Redis URL of its primary's private server. */
const PRIVATE_REDIS_ENV = 'CLAWPERF_PRIVATE_REDIS_URL';
/** The environment variable that gives a worker its slot (0 to N-1). */
const WORKER_SLOT_ENV = 'CLAWPERF_WORKER_SLOT';
/** A worker's question to the primary about the whole gateway, and its answer. */
const ASK = 'clawperf:ask';
/** The primary's request for a worker's own dashboard snapshot, and the worker's answer. */
const REPORT = 'clawperf:report';
/** Longest a worker waits for the primary's answer, and the primary for the workers' reports, ms. */
const ASK_TIMEOUT_MS = 5_000;
/** A worker that dies this soon after starting, several times in a row, is not started again. */
const CRASH_LOOP_MS = 5_000;
const CRASH_LOOP_LIMIT = 5;

/** What a worker asks the primary for: the metrics page, or the dashboard snapshot. */
type Topic = 'metrics' | 'dashboard';

interface Message {
  type: typeof ASK | typeof REPORT;
  id: number;
  topic?: Topic;
  value?: unknown;
  error?: string;
}

const isMessage = (m: unknown, type: Message['type']): m is Message =>
  typeof m === 'object' && m !== null && (m as { type?: unknown }).type === type;

/** Answers of the other side, by id. */
class Pending {
  #ids = 0;
  readonly #waiters = new Map<number, (m: Message | undefined) => void>();

  /** Sends with a new id; resolves with the answer, `undefined` after `ASK_TIMEOUT_MS`. */
  ask(send: (id: number) => void): Promise<Message | undefined> {
    const id = ++this.#ids;
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.settle(id, undefined), ASK_TIMEOUT_MS);
      this.#waiters.set(id, (m) => {
        clearTimeout(timer);
        resolve(m);
      });
      send(id);
    });
  }

  settle(id: number, m: Message | undefined): void {
    const waiter = this.#waiters.get(id);
    this.#waiters.delete(id);
    waiter?.(m);
  }
}

/** Whether this process is a worker of a `--workers` gateway. */
export function isWorker(): boolean {
  return cluster.isWorker;
}

/**
 * A worker's configuration: its primary's private Redis, when it runs one, and a disk cache directory of
 * its own (one per slot, kept by the worker that replaces it): a disk cache belongs to one process, and
 * the workers share answers through Redis.
 */
export function workerConfig(config: Partial<GatewayConfig>): Partial<GatewayConfig> {
  const url = process.env[PRIVATE_REDIS_ENV];
  const slot = process.env[WORKER_SLOT_ENV] ?? '0';
  return {
    ...config,
    ...(url === undefined || config.redisUrl !== undefined ? {} : { redisUrl: url }),
    ...(typeof config.cacheDir === 'string' ? { cacheDir: join(config.cacheDir, `worker-${slot}`) } : {}),
  };
}

/** In a worker: the primary's answers to this worker's questions. */
let answers: Pending | undefined;

/** Asks the primary about the whole gateway. */
async function askPrimary(topic: Topic): Promise<unknown> {
  if (answers === undefined) {
    const pending = new Pending();
    answers = pending;
    process.on('message', (m: unknown) => {
      if (isMessage(m, ASK)) pending.settle(m.id, m);
    });
  }
  const answer = await answers.ask((id) => process.send?.({ type: ASK, id, topic } satisfies Message));
  if (answer === undefined) throw new Error(`the primary did not answer within ${ASK_TIMEOUT_MS} ms`);
  if (answer.error !== undefined) throw new Error(answer.error);
  return answer.value;
}

/**
 * In a worker: lets the primary read `registry`, and returns what the worker's `/metrics` serves, the
 * whole gateway's metrics in Prometheus' text format.
 */
export function workerMetrics(registry: Registry): () => Promise<string> {
  // Constructing one installs prom-client's answer to the primary's requests.
  new AggregatorRegistry();
  AggregatorRegistry.setRegistries([registry]);
  return async () => (await askPrimary('metrics')) as string;
}

/**
 * In a worker: reports `own` (this worker's dashboard snapshot) to the primary when asked, and returns
 * what the dashboard shows, the snapshots of every worker merged.
 */
export function workerDashboard(own: () => DashboardSnapshot): () => Promise<DashboardSnapshot> {
  process.on('message', (m: unknown) => {
    if (isMessage(m, REPORT)) process.send?.({ type: REPORT, id: m.id, value: own() } satisfies Message);
  });
  return async () => (await askPrimary('dashboard')) as DashboardSnapshot;
}

/**
 * The primary: starts `config.workers` workers (and a private Redis without `config.redisUrl`), keeps
 * them running, and resolves with the exit code once a signal has drained them.
 */
export async function runPrimary(config: GatewayConfig, log: (line: string) => void): Promise<number> {
  // A log line that cannot be written (stderr closed) must not stop the primary before it drains the workers.
  process.stderr.on('error', () => {});
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
  /** Each live worker's start time and slot (a replacement takes its predecessor's slot). */
  const started = new Map<Worker, { at: number; slot: number }>();
  const fork = (slot: number) =>
    started.set(cluster.fork({ ...env, [WORKER_SLOT_ENV]: String(slot) }), { at: Date.now(), slot });
  const reports = new Pending();
  /** Every live worker's own snapshot, merged (a worker that does not answer in time is left out). */
  const dashboard = async () => {
    const workers = [...started.keys()].filter((w) => w.isConnected());
    const snapshots = await Promise.all(
      workers.map((w) => reports.ask((id) => w.send({ type: REPORT, id } satisfies Message))),
    );
    return mergeSnapshots(snapshots.filter((m) => m !== undefined).map((m) => m.value as DashboardSnapshot));
  };
  cluster.on('message', (worker, m: unknown) => {
    if (isMessage(m, REPORT)) {
      reports.settle(m.id, m);
      return;
    }
    if (!isMessage(m, ASK)) return;
    const answer = m.topic === 'metrics' ? aggregator.clusterMetrics() : dashboard();
    answer.then(
      (value) => worker.isConnected() && worker.send({ type: ASK, id: m.id, value } satisfies Message),
      (error: Error) =>
        worker.isConnected() && worker.send({ type: ASK, id: m.id, error: error.message } satisfies Message),
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
    const { at, slot } = started.get(worker) ?? { at: 0, slot: 0 };
    const since = Date.now() - at;
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
    else fork(slot);
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
  for (let slot = 0; slot < config.workers; slot++) fork(slot);
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
