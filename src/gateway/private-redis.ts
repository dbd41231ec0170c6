/**
 * The private Redis of a gateway with several workers and no `--redis`: a `redis-server` child listening
 * only on a Unix socket in a directory of the gateway's (no TCP port, no persistence), started before the
 * workers and stopped after them. Redis is the engine that makes the workers one gateway (limits, cache,
 * coalescing, invalidation); nothing stands in for it.
 *
 * @module
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, rm } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { ConfigError } from '../errors.ts';

/** Longest wait for the private server to answer PING, ms. */
const START_TIMEOUT_MS = 10_000;

export interface PrivateRedis {
  /** `redis+unix:///.../redis.sock` */
  url: string;
  /** Stops the server and removes its socket. Idempotent. */
  stop(): Promise<void>;
}

/** Whether `redis-server` is on the PATH. */
function installed(): boolean {
  return spawnSync('sh', ['-c', 'command -v redis-server'], { stdio: 'ignore' }).status === 0;
}

/** Sends PING over the socket; true on +PONG. */
function ping(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ path });
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

/**
 * Starts `redis-server` on a Unix socket in `dir` (created if missing) and resolves once it answers.
 *
 * @throws {ConfigError} naming `workers` when `redis-server` is not installed.
 */
export async function startPrivateRedis(dir: string): Promise<PrivateRedis> {
  if (!installed()) {
    throw new ConfigError(
      'workers',
      'more than one worker needs Redis: give --redis, or install redis-server (Debian/Ubuntu: apt-get install redis-server)',
    );
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, `redis-${process.pid}.sock`);
  await rm(path, { force: true });
  const child: ChildProcess = spawn(
    'redis-server',
    [
      '--port',
      '0',
      '--unixsocket',
      path,
      '--unixsocketperm',
      '700',
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      dir,
      '--loglevel',
      'warning',
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  const exited = once(child, 'exit');
  // However the gateway's process ends (an uncaught error, a closed stderr), its Redis ends with it.
  const orphaned = () => child.kill('SIGTERM');
  process.once('exit', orphaned);
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`redis-server exited with code ${child.exitCode}`);
    if (await ping(path)) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`redis-server did not answer on ${path} within ${START_TIMEOUT_MS} ms`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  let stopped: Promise<void> | undefined;
  return {
    url: `redis+unix://${path}`,
    stop() {
      stopped ??= (async () => {
        process.removeListener('exit', orphaned);
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGTERM');
          await exited;
        }
        await rm(path, { force: true });
      })();
      return stopped;
    },
  };
}
