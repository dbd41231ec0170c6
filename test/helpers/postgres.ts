/**
 * A real PostgreSQL cluster for tests: `initdb` in a temp directory, the postmaster started with `pg_ctl` on
 * a free loopback port with trust auth, and `kill()` / `restart()` for outage tests. The server binaries
 * refuse to run as root, so when the tests run as root they run as the `postgres` user (through runuser)
 * on a directory that user owns.
 *
 * @example
 * const pgServer = await startPostgres();
 * after(() => pgServer.stop());
 * const client = new pg.Client({ host: pgServer.host, port: pgServer.port, user: pgServer.user, database: pgServer.database });
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { chown, mkdtemp, rm } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, requireBinary, waitFor } from './servers.ts';

const OS_USER = 'postgres';

export interface PostgresServer {
  readonly host: string;
  readonly port: number;
  /** The database superuser (trust auth on loopback, no password). */
  readonly user: string;
  readonly database: string;
  /** `postgres://postgres@127.0.0.1:<port>/postgres` */
  readonly url: string;
  /** Crashes the server: SIGKILL to the postmaster and every backend, as a host failure would. */
  kill(): Promise<void>;
  /** Starts the server again on the same port and data directory (after `kill()` or `stop()`), with crash recovery. */
  restart(): Promise<void>;
  /** Stops the server for good and removes its directory. */
  stop(): Promise<void>;
}

/** The directory holding initdb/pg_ctl: `pg_config --bindir`, else the newest /usr/lib/postgresql/<v>/bin. */
function binDir(): string {
  try {
    const dir = execFileSync('pg_config', ['--bindir'], { encoding: 'utf8' }).trim();
    if (existsSync(join(dir, 'pg_ctl'))) return dir;
  } catch {
    // pg_config comes with libpq-dev; fall back to the server's own directory
  }
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root)
    ? readdirSync(root)
        .filter((v) => existsSync(join(root, v, 'bin', 'pg_ctl')))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  return join(root, versions[0] ?? '15', 'bin');
}

/** Runs a server binary, as the postgres user when we are root; throws with its output on failure. */
function run(binary: string, args: string[]): string {
  const asRoot = process.getuid?.() === 0;
  const [cmd, argv] = asRoot ? ['runuser', ['-u', OS_USER, '--', binary, ...args]] : [binary, args];
  const r = spawnSync(cmd, argv, { encoding: 'utf8', cwd: tmpdir() });
  if (r.status !== 0) throw new Error(`${binary} ${args.join(' ')} failed:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** True once the port accepts TCP connections. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export async function startPostgres(): Promise<PostgresServer> {
  const bin = binDir();
  const pgCtl = requireBinary(join(bin, 'pg_ctl'), 'postgresql');
  const initdb = requireBinary(join(bin, 'initdb'), 'postgresql');
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'clawperf-pg-'));
  if (process.getuid?.() === 0) {
    const uid = Number(execFileSync('id', ['-u', OS_USER], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', OS_USER], { encoding: 'utf8' }).trim());
    await chown(dir, uid, gid);
  }
  const data = join(dir, 'data');
  run(initdb, ['-D', data, '-U', OS_USER, '--auth=trust', '--no-sync', '--encoding=UTF8', '--no-locale']);
  const serverOptions = [
    `-p ${port}`,
    "-c listen_addresses='127.0.0.1'",
    `-c unix_socket_directories='${dir}'`,
    '-c fsync=off',
    '-c synchronous_commit=off',
    '-c full_page_writes=off',
    '-c max_connections=50',
  ].join(' ');
  const start = async () => {
    run(pgCtl, [
      '-D',
      data,
      '-l',
      join(dir, 'server.log'),
      '-o',
      serverOptions,
      '-w',
      '-t',
      '60',
      '-s',
      'start',
    ]);
    await waitFor(() => listening(port), {
      what: `postgres on port ${port}`,
      describe: () =>
        existsSync(join(dir, 'server.log')) ? readFileSync(join(dir, 'server.log'), 'utf8') : '',
    });
  };
  const postmasterPid = (): number | undefined => {
    const file = join(data, 'postmaster.pid');
    if (!existsSync(file)) return undefined;
    const pid = Number(readFileSync(file, 'utf8').split('\n')[0]);
    return Number.isInteger(pid) && pid > 0 && alive(pid) ? pid : undefined;
  };
  const kill = async () => {
    const pid = postmasterPid();
    if (pid === undefined) return;
    // Backends lead their own process groups, so each is killed by pid, as a host crash would.
    const children = (spawnSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' }).stdout ?? '')
      .split('\n')
      .map(Number)
      .filter((n) => n > 0);
    for (const target of [pid, ...children]) {
      try {
        process.kill(target, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await waitFor(async () => ![pid, ...children].some(alive) && !(await listening(port)), {
      what: `postgres ${pid} and its backends to die`,
    });
  };
  await start();
  return {
    host: '127.0.0.1',
    port,
    user: OS_USER,
    database: 'postgres',
    url: `postgres://${OS_USER}@127.0.0.1:${port}/postgres`,
    kill,
    restart: async () => {
      await kill();
      await start();
    },
    stop: async () => {
      if (postmasterPid() !== undefined) {
        try {
          run(pgCtl, ['-D', data, '-m', 'immediate', '-w', '-s', 'stop']);
        } catch {
          await kill();
        }
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}
