/**
 * A real Prometheus for tests: started with a config file in a temp dir, on a free loopback port, scraping
 * the given targets every second. `query()` runs PromQL through its HTTP API.
 *
 * @example
 * const prometheus = await startPrometheus({ targets: [`127.0.0.1:${port}`] });
 * after(() => prometheus.stop());
 * const result = await prometheus.query('clawperf_process_cpu_usage_ratio');
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, requireBinary, startProcess, waitFor } from './servers.ts';

export interface PromSample {
  metric: Record<string, string>;
  value: [number, string];
}

export interface PrometheusServer {
  readonly port: number;
  readonly url: string;
  /** Instant query; throws with Prometheus's error on a bad expression. */
  query(expr: string): Promise<PromSample[]>;
  /** The scrape targets and their health. */
  targets(): Promise<{ scrapeUrl: string; health: string; lastError: string }[]>;
  output(): string;
  stop(): Promise<void>;
}

export interface PrometheusOptions {
  /** `host:port` targets of the one job, `clawperf`. */
  targets: string[];
  /** @default '/metrics' */
  metricsPath?: string;
}

export async function startPrometheus(options: PrometheusOptions): Promise<PrometheusServer> {
  requireBinary('prometheus', 'prometheus');
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'clawperf-prometheus-'));
  const config = join(dir, 'prometheus.yml');
  await writeFile(
    config,
    [
      'global:',
      '  scrape_interval: 1s',
      '  evaluation_interval: 1s',
      'scrape_configs:',
      '  - job_name: clawperf',
      `    metrics_path: ${options.metricsPath ?? '/metrics'}`,
      '    static_configs:',
      `      - targets: [${options.targets.map((t) => `'${t}'`).join(', ')}]`,
      '',
    ].join('\n'),
  );
  const url = `http://127.0.0.1:${port}`;
  const proc = startProcess('prometheus', [
    `--config.file=${config}`,
    `--storage.tsdb.path=${join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`,
    '--log.level=warn',
  ]);
  await waitFor(async () => (await fetch(`${url}/-/ready`)).ok, {
    what: `prometheus on port ${port}`,
    describe: () => proc.output(),
    timeoutMs: 30_000,
  });
  const api = async (path: string) => {
    const response = await fetch(`${url}${path}`);
    const body = (await response.json()) as { status: string; error?: string; data: unknown };
    if (body.status !== 'success') throw new Error(`prometheus ${path}: ${body.error ?? response.status}`);
    return body.data;
  };
  return {
    port,
    url,
    query: async (expr) => {
      const data = (await api(`/api/v1/query?query=${encodeURIComponent(expr)}`)) as {
        resultType: string;
        result: PromSample[] | [number, string];
      };
      if (data.resultType === 'scalar') {
        return [{ metric: {}, value: data.result as [number, string] }];
      }
      return data.result as PromSample[];
    },
    targets: async () => {
      const data = (await api('/api/v1/targets')) as {
        activeTargets: { scrapeUrl: string; health: string; lastError: string }[];
      };
      return data.activeTargets;
    },
    output: () => proc.output(),
    stop: async () => {
      await proc.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Runs `promtool check metrics` on an exposition (given on stdin); returns its status and output. */
export function promtoolCheckMetrics(exposition: string): { ok: boolean; output: string } {
  requireBinary('promtool', 'prometheus');
  const result = spawnSync('promtool', ['check', 'metrics'], { input: exposition, encoding: 'utf8' });
  return { ok: result.status === 0, output: `${result.stdout}${result.stderr}` };
}
