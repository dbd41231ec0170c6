/**
 * Real redis-server instances for tests: a single node (with kill/restart for outage tests) or a 3-master
 * Redis Cluster. Each runs on free loopback ports, without persistence, in its own temp directory.
 *
 * @example
 * const redis = await startRedis();
 * after(() => redis.stop());
 * const client = new Redis(redis.url);
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, requireBinary, startRestartable, waitFor } from './servers.ts';

/**
 * The Redis command timeout of tests that count or compare exactly (not of the outage tests): the product's
 * 100 ms default also fails a reply that a test machine's busy event loop reads late, which such a test
 * would see as a fallback. Outages still fail at once: clients keep no offline queue.
 */
export const TEST_COMMAND_TIMEOUT_MS = 2_000;

export interface RedisServer {
  readonly host: string;
  readonly port: number;
  /** `redis://127.0.0.1:<port>` */
  readonly url: string;
  /** Runs a command with redis-cli and returns its trimmed output. */
  cli(...args: string[]): string;
  /** Crashes the server (SIGKILL); data is gone. */
  kill(): Promise<void>;
  /** Starts the server again on the same port after `kill()` or `stop()`. */
  restart(): Promise<void>;
  /** Stops the server for good and removes its directory. */
  stop(): Promise<void>;
}

export interface RedisOptions {
  /** Extra `redis-server` arguments, e.g. `['--cluster-enabled', 'yes']`. */
  args?: string[];
}

/** Sends PING over a raw socket; true on +PONG. Works whether or not a client library is loaded. */
function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1_000, () => done(false));
    socket.once('error', () => done(false));
    socket.once('data', (data) => done(data.toString().startsWith('+PONG')));
    socket.write('PING\r\n');
  });
}

export async function startRedis(options: RedisOptions = {}): Promise<RedisServer> {
  requireBinary('redis-server', 'redis-server');
  requireBinary('redis-cli', 'redis-tools');
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'clawperf-redis-'));
  const args = [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    'no',
    '--dir',
    dir,
    '--protected-mode',
    'no',
    ...(options.args ?? []),
  ];
  const server = await startRestartable('redis-server', args, dir, {
    probe: () => ping(port),
    what: `redis-server on port ${port}`,
  });
  return {
    host: '127.0.0.1',
    port,
    url: `redis://127.0.0.1:${port}`,
    cli: (...cmd) => {
      const r = spawnSync('redis-cli', ['-p', String(port), ...cmd], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`redis-cli ${cmd.join(' ')} failed: ${r.stderr}`);
      return r.stdout.trim();
    },
    kill: server.kill,
    restart: server.restart,
    stop: server.stop,
  };
}

export interface RedisCluster {
  /** The masters, each a full {@link RedisServer}. */
  readonly nodes: RedisServer[];
  /** Seed nodes for `new Redis.Cluster(cluster.startupNodes)`. */
  readonly startupNodes: { host: string; port: number }[];
  stop(): Promise<void>;
}

/** Starts `masters` (default 3) cluster-enabled nodes and joins them with `redis-cli --cluster create`. */
export async function startRedisCluster(masters = 3): Promise<RedisCluster> {
  const nodes: RedisServer[] = [];
  try {
    for (let i = 0; i < masters; i++) {
      nodes.push(
        await startRedis({
          args: [
            '--cluster-enabled',
            'yes',
            '--cluster-config-file',
            `nodes-${i}.conf`,
            '--cluster-node-timeout',
            '2000',
          ],
        }),
      );
    }
    const create = spawnSync(
      'redis-cli',
      [
        '--cluster',
        'create',
        ...nodes.map((n) => `127.0.0.1:${n.port}`),
        '--cluster-replicas',
        '0',
        '--cluster-yes',
      ],
      { encoding: 'utf8' },
    );
    if (create.status !== 0)
      throw new Error(`redis-cli --cluster create failed:\n${create.stdout}\n${create.stderr}`);
    for (const node of nodes) {
      await waitFor(() => /cluster_state:ok/.test(node.cli('cluster', 'info')), {
        what: `cluster_state:ok on port ${node.port}`,
      });
    }
  } catch (error) {
    await Promise.all(nodes.map((n) => n.stop()));
    throw error;
  }
  return {
    nodes,
    startupNodes: nodes.map((n) => ({ host: n.host, port: n.port })),
    stop: async () => {
      await Promise.all(nodes.map((n) => n.stop()));
    },
  };
}
