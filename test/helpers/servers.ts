/**
 * Real servers for tests: find a free loopback port, start a binary, wait until it answers, stop it (or
 * kill it and start it again on the same port, for outage tests). A missing binary fails loudly with the
 * Debian package that provides it; tests never skip for a missing server.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { rm } from 'node:fs/promises';
import { createServer } from 'node:net';

/** A free TCP port on 127.0.0.1. */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  server.close();
  await once(server, 'close');
  if (address === null || typeof address === 'string') throw new Error('no port from the OS');
  return address.port;
}

/** Throws, naming the Debian package, when `binary` is not on PATH or at the given path. */
export function requireBinary(binary: string, debianPackage: string): string {
  const found = binary.includes('/')
    ? spawnSync('test', ['-x', binary]).status === 0
    : spawnSync('sh', ['-c', `command -v ${binary}`]).status === 0;
  if (!found) {
    throw new Error(
      `${binary} is not installed: the tests need the Debian package "${debianPackage}" (npm test installs it when run as root)`,
    );
  }
  return binary;
}

export interface ManagedProcess {
  readonly child: ChildProcess;
  /** Output so far (stdout and stderr), for failure messages. */
  output(): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process has exited. */
  stop(graceMs?: number): Promise<void>;
  /** SIGKILL, as a crash would; resolves when the process has exited. */
  kill(): Promise<void>;
}

export interface StartOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Run as this user (through runuser), for servers that refuse root. */
  user?: string;
}

/** Spawns a long-running server process whose output is kept for diagnostics. */
export function startProcess(command: string, args: string[], options: StartOptions = {}): ManagedProcess {
  const [cmd, argv] =
    options.user !== undefined && process.getuid?.() === 0
      ? ['runuser', ['-u', options.user, '--', command, ...args]]
      : [command, args];
  const child = spawn(cmd, argv, {
    env: options.env ?? process.env,
    cwd: options.cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const keep = (chunk: Buffer) => {
    out = (out + chunk.toString()).slice(-20_000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = once(child, 'exit').then(() => undefined);
  child.on('error', (error) => {
    out += `\n[spawn error] ${error.message}`;
  });
  const signal = async (sig: NodeJS.Signals, graceMs: number) => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill(sig);
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  };
  return {
    child,
    output: () => out,
    stop: (graceMs = 5_000) => signal('SIGTERM', graceMs),
    kill: () => signal('SIGKILL', 0),
  };
}

/** Polls `probe` until it resolves true, failing after `timeoutMs` with `describe()` in the message. */
export async function waitFor(
  probe: () => Promise<boolean> | boolean,
  options: {
    timeoutMs?: number;
    intervalMs?: number;
    what?: string;
    describe?: () => string;
    /** Why waiting longer is pointless (a server that exited), checked each round: fails at once. */
    hopeless?: () => string | undefined;
  } = {},
): Promise<void> {
  const { timeoutMs = 15_000, intervalMs = 50, what = 'condition', describe = () => '' } = options;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await probe()) return;
    } catch {
      // not ready yet
    }
    const hopeless = options.hopeless?.();
    if (hopeless !== undefined) throw new Error(`${what}: ${hopeless}\n${describe()}`);
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${describe()}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** A server started by {@link startRestartable}, for outage tests. */
export interface RestartableProcess {
  /** Crashes the server (SIGKILL). */
  kill(): Promise<void>;
  /** Starts the server again with the same command and arguments, waiting until it answers. */
  restart(): Promise<void>;
  /** Stops the server for good and removes `dir`. */
  stop(): Promise<void>;
  /** Output of the current run so far. */
  output(): string;
}

/**
 * Starts `command` and waits until `ready` resolves true (failing with the server's output), keeping
 * what it needs to kill, restart and stop it; `dir` is the server's temp directory, removed on stop().
 */
export async function startRestartable(
  command: string,
  args: string[],
  dir: string,
  ready: { probe: () => Promise<boolean> | boolean; what: string; timeoutMs?: number },
): Promise<RestartableProcess> {
  let proc: ManagedProcess | undefined;
  const launch = async () => {
    const p = startProcess(command, args);
    proc = p;
    await waitFor(ready.probe, {
      what: ready.what,
      describe: () => p.output(),
      hopeless: () =>
        p.child.exitCode !== null || p.child.signalCode !== null
          ? `the server exited (${p.child.exitCode ?? p.child.signalCode})`
          : undefined,
      ...(ready.timeoutMs === undefined ? {} : { timeoutMs: ready.timeoutMs }),
    });
  };
  await launch();
  return {
    kill: async () => {
      await proc?.kill();
    },
    restart: async () => {
      await proc?.stop();
      await launch();
    },
    stop: async () => {
      await proc?.stop();
      await rm(dir, { recursive: true, force: true });
    },
    output: () => proc?.output() ?? '',
  };
}
