/**
 * `clawperf gateway [options]`: reads the configuration, starts the gateway and resolves with the exit
 * code once it has shut down (on SIGTERM or SIGINT). `clawperf gateway check [options] [--connect]` checks
 * the configuration instead (config-check.ts).
 *
 * @module
 */
import cluster from 'node:cluster';
import { ConfigError } from '../errors.ts';
import { helpText, loadConfig } from './config.ts';
import { startGateway } from './server.ts';
import { isWorker, runPrimary, workerConfig, workerDashboard, workerMetrics } from './workers.ts';

/** Runs the gateway command with `argv` (the arguments after `gateway`). */
export async function runGateway(
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  if (argv[0] === 'check') {
    const { runCheck } = await import('./config-check.ts');
    return runCheck(argv.slice(1), env);
  }
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig(argv, env);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`clawperf gateway: invalid setting ${error.message}\n`);
      return 2;
    }
    throw error;
  }
  const { help, ...settings } = config;
  if (help) {
    process.stdout.write(helpText());
    return 0;
  }
  if (settings.workers > 1 && !isWorker()) {
    try {
      return await runPrimary(settings, (line) => process.stderr.write(`${line}\n`));
    } catch (error) {
      if (error instanceof ConfigError) {
        process.stderr.write(`clawperf gateway: invalid setting ${error.message}\n`);
        return 2;
      }
      process.stderr.write(`clawperf gateway: cannot start: ${(error as Error).message}\n`);
      return 1;
    }
  }
  let gateway: Awaited<ReturnType<typeof startGateway>>;
  try {
    gateway = isWorker()
      ? await startGateway(workerConfig(settings), {
          // One banner for the gateway, from its first worker.
          banner: cluster.worker?.id === 1,
          gateway: { clusterMetrics: workerMetrics, clusterDashboard: workerDashboard },
        })
      : await startGateway(settings);
  } catch (error) {
    // A setting only the start can judge (a log format whose package is missing).
    if (error instanceof ConfigError) {
      process.stderr.write(`clawperf gateway: invalid setting ${error.message}\n`);
      return 2;
    }
    process.stderr.write(`clawperf gateway: cannot start: ${(error as Error).message}\n`);
    return 1;
  }
  await gateway.closed;
  process.stderr.write('clawperf gateway: stopped\n');
  // A worker's channel to its primary would keep it running.
  if (isWorker()) process.disconnect();
  return 0;
}
