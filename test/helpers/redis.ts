/**
 * Real redis-server instances for tests: a single node (with kill/restart for outage tests) or a Redis
 * Cluster (3 masters, optionally with replicas), either of them over TLS with a self-signed certificate
 * and with an ACL user. Each runs on free loopback ports, without persistence, in its own temp directory.
 *
 * @example
 * const redis = await startRedis();
 * after(() => redis.stop());
 * const client = new Redis(redis.url);
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as connectTls } from 'node:tls';
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
  /** `redis://127.0.0.1:<port>`; `rediss://` with TLS, with `user:password@` for an ACL user. */
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

/** A self-signed certificate for 127.0.0.1 and localhost, which is also the CA that trusts it. */
export interface TestCertificate {
  /** PEM file of the certificate. */
  readonly cert: string;
  /** PEM file of its private key. */
  readonly key: string;
  /** The certificate's PEM text, for a client's `ca`. */
  readonly pem: string;
}

/** Makes a self-signed certificate with openssl in `dir`. */
export async function makeCertificate(dir: string): Promise<TestCertificate> {
  requireBinary('openssl', 'openssl');
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  const made = spawnSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '1',
      '-subj',
      '/CN=clawperf test',
      '-addext',
      'subjectAltName=IP:127.0.0.1,DNS:localhost',
      '-keyout',
      key,
      '-out',
      cert,
    ],
    { encoding: 'utf8' },
  );
  if (made.status !== 0) throw new Error(`openssl could not make a certificate:\n${made.stderr}`);
  return { cert, key, pem: await readFile(cert, 'utf8') };
}

/** An ACL user; the server turns its default user off, so every client must log in as this one. */
export interface AclUser {
  readonly name: string;
  readonly password: string;
}

export interface RedisOptions {
  /** Extra `redis-server` arguments, e.g. `['--cluster-enabled', 'yes']`. */
  args?: string[];
  /** Serve TLS only (no plain port), with this certificate; clients need no certificate of their own. */
  tls?: TestCertificate;
  /** Require this ACL user (the default user is off). */
  user?: AclUser;
}

/**
 * Sends PING over a raw socket (TLS when `tls`); true once the server answers (+PONG, or NOAUTH when it
 * requires a user). Works whether or not a client library is loaded.
 */
function ping(port: number, tls: boolean): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = tls
      ? connectTls({ host: '127.0.0.1', port, rejectUnauthorized: false })
      : createConnection({ host: '127.0.0.1', port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1_000, () => done(false));
    socket.once('error', () => done(false));
    socket.once('data', (data) => done(/^(\+PONG|-NOAUTH)/.test(data.toString())));
    socket.write('PING\r\n');
  });
}

/** The redis-cli arguments that reach a server started with `options`. */
function cliArgs(port: number, options: RedisOptions): string[] {
  return [
    '-p',
    String(port),
    ...(options.tls === undefined ? [] : ['--tls', '--cacert', options.tls.cert]),
    ...(options.user === undefined
      ? []
      : ['--user', options.user.name, '--pass', options.user.password, '--no-auth-warning']),
  ];
}

/** The `redis-server` arguments of TLS and an ACL user. */
function securityArgs(port: number, options: RedisOptions): string[] {
  const { tls, user } = options;
  return [
    ...(tls === undefined
      ? ['--port', String(port)]
      : [
          '--port',
          '0',
          '--tls-port',
          String(port),
          '--tls-cert-file',
          tls.cert,
          '--tls-key-file',
          tls.key,
          '--tls-ca-cert-file',
          tls.cert,
          '--tls-auth-clients',
          'no',
        ]),
    ...(user === undefined
      ? []
      : [
          '--user',
          'default',
          'off',
          '--user',
          user.name,
          'on',
          `>${user.password}`,
          '~*',
          '&*',
          '+@all',
          '--masteruser',
          user.name,
          '--masterauth',
          user.password,
        ]),
  ];
}

export async function startRedis(options: RedisOptions = {}): Promise<RedisServer> {
  requireBinary('redis-server', 'redis-server');
  requireBinary('redis-cli', 'redis-tools');
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'clawperf-redis-'));
  const args = [
    ...securityArgs(port, options),
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
    probe: () => ping(port, options.tls !== undefined),
    what: `redis-server on port ${port}`,
  });
  const { user } = options;
  const auth = user === undefined ? '' : `${user.name}:${user.password}@`;
  return {
    host: '127.0.0.1',
    port,
    url: `${options.tls === undefined ? 'redis' : 'rediss'}://${auth}127.0.0.1:${port}`,
    cli: (...cmd) => {
      const r = spawnSync('redis-cli', [...cliArgs(port, options), ...cmd], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`redis-cli ${cmd.join(' ')} failed: ${r.stderr}`);
      return r.stdout.trim();
    },
    kill: server.kill,
    restart: server.restart,
    stop: server.stop,
  };
}

export interface RedisCluster {
  /** Every node (masters and replicas), each a full {@link RedisServer}. */
  readonly nodes: RedisServer[];
  /** Seed nodes for `new Redis.Cluster(cluster.startupNodes)`. */
  readonly startupNodes: { host: string; port: number }[];
  /** The nodes as a `redis+cluster://` URL (`rediss+cluster://` with TLS, with the ACL user). */
  readonly url: string;
  /** The node that is now the master of `key`'s slot. */
  masterOf(key: string): RedisServer;
  stop(): Promise<void>;
}

export interface RedisClusterOptions extends Omit<RedisOptions, 'args'> {
  /** Replicas of each master. @default 0 */
  replicas?: number;
}

/**
 * Starts `masters` (default 3) cluster-enabled nodes (and `replicas` of each) and joins them with
 * `redis-cli --cluster create`; with TLS the cluster bus and replication use it too.
 */
export async function startRedisCluster(
  masters = 3,
  options: RedisClusterOptions = {},
): Promise<RedisCluster> {
  const { replicas = 0, ...security } = options;
  const nodes: RedisServer[] = [];
  try {
    for (let i = 0; i < masters * (1 + replicas); i++) {
      nodes.push(
        await startRedis({
          ...security,
          args: [
            '--cluster-enabled',
            'yes',
            '--cluster-config-file',
            `nodes-${i}.conf`,
            '--cluster-node-timeout',
            '2000',
            // A replica takes over however long its link was down: test replicas have no data to lose.
            '--cluster-replica-validity-factor',
            '0',
            // The bus port is the client port + 10000 unless given: past 55535 that is no port at all.
            '--cluster-port',
            String(await freePort()),
            ...(security.tls === undefined ? [] : ['--tls-cluster', 'yes', '--tls-replication', 'yes']),
          ],
        }),
      );
    }
    const create = spawnSync(
      'redis-cli',
      [
        ...cliArgs(nodes[0]!.port, security).slice(2),
        '--cluster',
        'create',
        ...nodes.map((n) => `127.0.0.1:${n.port}`),
        '--cluster-replicas',
        String(replicas),
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
  const { user } = security;
  const auth = user === undefined ? '' : `${user.name}:${user.password}@`;
  return {
    nodes,
    startupNodes: nodes.map((n) => ({ host: n.host, port: n.port })),
    url: `${security.tls === undefined ? 'redis' : 'rediss'}+cluster://${auth}${nodes.map((n) => `127.0.0.1:${n.port}`).join(',')}`,
    masterOf: (key) => {
      const slot = Number(nodes[0]!.cli('CLUSTER', 'KEYSLOT', key));
      for (const node of nodes) {
        let role: string;
        try {
          role = node.cli('ROLE').split('\n')[0]!;
        } catch {
          continue;
        }
        if (role !== 'master') continue;
        const mine = node
          .cli('CLUSTER', 'NODES')
          .split('\n')
          .find((line) => line.includes('myself'));
        const ranges = mine?.split(' ').slice(8) ?? [];
        if (
          ranges.some((r) => {
            const [from, to = from] = r.split('-').map(Number);
            return from! <= slot && slot <= to!;
          })
        )
          return node;
      }
      throw new Error(`no master serves slot ${slot} of ${key}`);
    },
    stop: async () => {
      await Promise.all(nodes.map((n) => n.stop()));
    },
  };
}
