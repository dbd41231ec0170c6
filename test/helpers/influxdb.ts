/**
 * A real InfluxDB 1.x (`influxd` from Debian's influxdb package) for tests: its own config, data, meta and
 * WAL directories in a temp dir, its HTTP and RPC ports on free loopback ports, with kill() and restart()
 * on the same ports and data for outage tests.
 *
 * @example
 * const influx = await startInfluxDB();
 * after(() => influx.stop());
 * await influx.query('CREATE DATABASE clawperf');
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, requireBinary, startRestartable } from './servers.ts';

export interface InfluxSeries {
  name: string;
  tags?: Record<string, string>;
  columns: string[];
  values: unknown[][];
}

export interface InfluxServer {
  readonly port: number;
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  /** Runs InfluxQL (on `db` when given) and returns the first statement's series; throws on an error. */
  query(q: string, db?: string): Promise<InfluxSeries[]>;
  /** Crashes the server (SIGKILL); the data on disk stays. */
  kill(): Promise<void>;
  /** Starts the server again on the same ports and directories. */
  restart(): Promise<void>;
  /** Stops the server for good and removes its directory. */
  stop(): Promise<void>;
  output(): string;
}

export async function startInfluxDB(): Promise<InfluxServer> {
  requireBinary('influxd', 'influxdb');
  // A free port can be taken by another process before influxd binds it: then it exits at once, and the
  // next attempt takes new ports.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startInfluxDBOnce();
    } catch (error) {
      if (attempt === 3 || !String((error as Error).message).includes('address already in use')) throw error;
    }
  }
}

async function startInfluxDBOnce(): Promise<InfluxServer> {
  const [httpPort, rpcPort] = [await freePort(), await freePort()];
  const dir = await mkdtemp(join(tmpdir(), 'clawperf-influxdb-'));
  const config = join(dir, 'influxdb.conf');
  await writeFile(
    config,
    [
      'reporting-disabled = true',
      `bind-address = "127.0.0.1:${rpcPort}"`,
      '[meta]',
      `  dir = "${join(dir, 'meta')}"`,
      '[data]',
      `  dir = "${join(dir, 'data')}"`,
      `  wal-dir = "${join(dir, 'wal')}"`,
      '  query-log-enabled = false',
      '[http]',
      '  enabled = true',
      `  bind-address = "127.0.0.1:${httpPort}"`,
      '  log-enabled = false',
      '[monitor]',
      '  store-enabled = false',
      '[continuous_queries]',
      '  enabled = false',
      '[logging]',
      '  level = "warn"',
      '',
    ].join('\n'),
  );
  const url = `http://127.0.0.1:${httpPort}`;
  const server = await startRestartable('influxd', ['-config', config], dir, {
    probe: async () => (await fetch(`${url}/ping`)).status === 204,
    what: `influxd on port ${httpPort}`,
    timeoutMs: 30_000,
  }).catch(async (error: unknown) => {
    await rm(dir, { recursive: true, force: true });
    throw error;
  });
  return {
    port: httpPort,
    url,
    query: async (q, db) => {
      const params = new URLSearchParams({ q, epoch: 'ms' });
      if (db !== undefined) params.set('db', db);
      const response = await fetch(`${url}/query`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: params,
      });
      const body = (await response.json()) as {
        error?: string;
        results?: { error?: string; series?: InfluxSeries[] }[];
      };
      const first = body.results?.[0];
      const error = body.error ?? first?.error;
      if (error !== undefined) throw new Error(`influx query "${q}": ${error}`);
      return first?.series ?? [];
    },
    kill: server.kill,
    restart: server.restart,
    stop: server.stop,
    output: server.output,
  };
}
