/**
 * Gateway processes for tests that need several gateways, as `clawperf gateway` runs them: each from source
 * on its own free loopback port, with its own event loop and Redis clients. Started with flags; stopped with
 * SIGTERM, as an operator stops one.
 *
 * @example
 * const gw = await startGatewayProcess(['--redis', cluster.url]);
 * after(() => gw.stop());
 * const res = await gw.post('/v1/embeddings', { model: 'local-embed', input: 'hi' });
 */
import { request } from 'undici';
import { freePort, startProcess, waitFor } from './servers.ts';

const root = new URL('../..', import.meta.url).pathname;

/** An answer of a gateway process. */
export interface ProcessAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  // biome-ignore lint/suspicious/noExplicitAny: test answers are read freely
  body: Record<string, any>;
}

export interface GatewayProcess {
  /** `http://127.0.0.1:<port>` */
  readonly base: string;
  post(path: string, payload: unknown, headers?: Record<string, string>): Promise<ProcessAnswer>;
  get(path: string): Promise<ProcessAnswer>;
  /** A counter or gauge of `/metrics` (`clawperf_cache_bus_received_total`), NaN when absent. */
  metric(name: string): Promise<number>;
  /** Output so far, for failure messages. */
  output(): string;
  /** SIGTERM; resolves once the process has exited. */
  stop(): Promise<void>;
}

async function answer(res: Awaited<ReturnType<typeof request>>): Promise<ProcessAnswer> {
  const text = await res.body.text();
  let body: ProcessAnswer['body'];
  try {
    body = JSON.parse(text);
  } catch {
    body = { text };
  }
  return { status: res.statusCode, headers: res.headers, body };
}

/** Starts `src/gateway/main.ts` with `args` (no disk cache, an instant local-chat) and waits until it serves. */
export async function startGatewayProcess(args: string[]): Promise<GatewayProcess> {
  const port = await freePort();
  const proc = startProcess(
    process.execPath,
    [
      '--import',
      'tsx',
      'src/gateway/main.ts',
      '--port',
      String(port),
      '--cache-dir',
      'off',
      '--local-chat-latency-ms',
      '0',
      ...args,
    ],
    { cwd: root },
  );
  const base = `http://127.0.0.1:${port}`;
  const gateway: GatewayProcess = {
    base,
    post: async (path, payload, headers = {}) =>
      answer(
        await request(`${base}${path}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...headers },
          body: JSON.stringify(payload),
        }),
      ),
    get: async (path) => answer(await request(`${base}${path}`)),
    metric: async (name) => {
      const text = await (await request(`${base}/metrics`)).body.text();
      const line = text.split('\n').find((l) => l.startsWith(`${name} `));
      return Number(line?.split(' ')[1]);
    },
    output: proc.output,
    stop: () => proc.stop(),
  };
  try {
    await waitFor(async () => (await gateway.get('/healthz')).status === 200, {
      what: `the gateway on port ${port} to serve`,
      describe: proc.output,
      timeoutMs: 30_000,
    });
  } catch (error) {
    await proc.stop();
    throw error;
  }
  return gateway;
}
