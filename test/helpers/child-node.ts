/**
 * A fixture script run in a child process (`node --import tsx` with an IPC channel) and called like an
 * RPC: each `call(op, args)` sends `{ id, op, ...args }` and resolves with the reply carrying that id. The
 * fixture answers with `serve()` from ./ipc-server.ts.
 *
 * @example
 * const node = await ChildNode.start(fileURLToPath(new URL('./fixtures/cache-node.ts', import.meta.url)));
 * after(() => node.close());
 * await node.call('get', { key: 'k' });
 */
import { type ChildProcess, fork } from 'node:child_process';
import { once } from 'node:events';

interface Reply {
  id: number;
  ok: boolean;
  result?: unknown;
  error?: string;
}

export class ChildNode {
  readonly #child: ChildProcess;
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  #ids = 0;

  private constructor(child: ChildProcess) {
    this.#child = child;
    child.on('message', (reply: Reply) => {
      const waiter = this.#pending.get(reply.id);
      if (waiter === undefined) return;
      this.#pending.delete(reply.id);
      if (reply.ok) waiter.resolve(reply.result);
      else waiter.reject(new Error(reply.error));
    });
  }

  /** Forks `script` with `env` on top of this process's environment; resolves once it reports ready. */
  static async start(script: string, env: Record<string, string> = {}): Promise<ChildNode> {
    const child = fork(script, {
      execArgv: ['--import', 'tsx'],
      env: { ...process.env, ...env },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    await once(child, 'message');
    return new ChildNode(child);
  }

  call(op: string, args: Record<string, unknown> = {}): Promise<unknown> {
    const id = ++this.#ids;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#child.send({ id, op, ...args });
    });
  }

  async stats(): Promise<Record<string, number>> {
    return (await this.call('stats')) as Record<string, number>;
  }

  /** Asks the fixture to close and waits for the process to exit; a no-op once it has gone. */
  async close(): Promise<void> {
    if (this.#child.exitCode !== null || !this.#child.connected) return;
    const exited = once(this.#child, 'exit');
    await this.call('close').catch(() => undefined);
    await exited;
  }
}
