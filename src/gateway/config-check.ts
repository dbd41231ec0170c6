/**
 * `clawperf gateway check [options] [--connect]`: validates the whole configuration the gateway would start
 * with (defaults, config file, environment, flags) and lists every problem, not just the first; with
 * `--connect` it also reaches Redis and every upstream and deployment (each key of each). Exit code 0 when
 * all is well, 2 with the list otherwise.
 *
 * @module
 */
import { constants, readFileSync } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { request } from 'undici';
import { ConfigError } from '../errors.ts';
import { type RedisClient, releaseRedis, toRedis } from '../internal/redis.ts';
import { shownUrl } from './banner.ts';
import { type GatewayConfig, loadConfig } from './config.ts';
import type { Api } from './upstream-interface.ts';

/** How long `--connect` waits for Redis or an upstream to answer, ms. @default 5000 */
export const CHECK_CONNECT_TIMEOUT_MS = 5_000;

/** A gateway whose host is one of these serves only this machine, which an open gateway requires. */
const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '::1']);

/** Options of {@link checkConfiguration}. */
export interface CheckOptions {
  /** Reach Redis and every upstream. @default false */
  connect?: boolean;
  /** @default CHECK_CONNECT_TIMEOUT_MS */
  timeoutMs?: number;
}

/** What a check found. */
export interface CheckReport {
  /** Every problem, each naming the setting at fault. */
  problems: ConfigError[];
  /** What `--connect` reached, as `name (url)`. */
  reached: string[];
}

/** Checks the configuration `argv` and `env` give, as the gateway would read it. */
export async function checkConfiguration(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  options: CheckOptions = {},
): Promise<CheckReport> {
  const problems: ConfigError[] = [];
  const config = loadConfig(argv, env, problems);
  problems.push(...(await checkEnvironment(config)));
  const reached: string[] = [];
  if (options.connect === true) {
    const timeoutMs = options.timeoutMs ?? CHECK_CONNECT_TIMEOUT_MS;
    const probes = [
      ...(config.redisUrl === undefined ? [] : [probeRedis(config, timeoutMs)]),
      ...upstreamsOf(config).map((u) => probeUpstream(u, timeoutMs)),
    ];
    for (const result of await Promise.all(probes)) {
      if (result instanceof ConfigError) problems.push(result);
      else reached.push(result);
    }
  }
  return { problems, reached };
}

/** What valid settings still leave broken on this machine: a disk cache it cannot write, a missing package. */
async function checkEnvironment(config: GatewayConfig): Promise<ConfigError[]> {
  const problems: ConfigError[] = [];
  if (config.cacheDir !== false) {
    const why = await unwritable(resolve(config.cacheDir));
    if (why !== undefined) problems.push(new ConfigError('cacheDir', `${config.cacheDir} ${why}`));
  }
  if (Object.keys(config.apiKeys).length === 0 && !LOOPBACK_HOSTS.has(config.host)) {
    problems.push(
      new ConfigError(
        'host',
        `${config.host} lets other machines connect, but without API keys (apiKeys) the gateway answers them 401: give keys, or listen on 127.0.0.1`,
      ),
    );
  }
  if (config.logFormat === 'pretty') {
    try {
      await import('pino-pretty');
    } catch {
      problems.push(
        new ConfigError(
          'logFormat',
          'pretty needs the optional package pino-pretty: npm install pino-pretty',
        ),
      );
    }
  }
  return problems;
}

/** Why the gateway could not write its disk cache in `dir`, or undefined when it can. */
async function unwritable(dir: string): Promise<string | undefined> {
  // The gateway creates the directory: the nearest part of the path that exists must be a writable directory.
  for (let path = dir; ; path = dirname(path)) {
    let isDirectory: boolean;
    try {
      isDirectory = (await stat(path)).isDirectory();
    } catch {
      if (dirname(path) === path) return 'cannot be created';
      continue;
    }
    if (!isDirectory) return `cannot be created: ${path} is not a directory`;
    try {
      await access(path, constants.W_OK);
      return undefined;
    } catch {
      return path === dir ? 'is not writable' : `cannot be created: ${path} is not writable`;
    }
  }
}

async function probeRedis(config: GatewayConfig, timeoutMs: number): Promise<string | ConfigError> {
  const url = config.redisUrl!;
  const shown = shownUrl(url);
  let owned: ReturnType<typeof toRedis> | undefined;
  try {
    owned = toRedis(
      'redisUrl',
      url,
      timeoutMs,
      config.redisCaFile === undefined ? {} : { ca: readFileSync(config.redisCaFile) },
    );
    // Later reconnection errors, once the first is reported, are not news.
    owned.client.on('error', () => {});
    await connected(owned.client, timeoutMs);
    await owned.client.ping();
    return `redis (${shown})`;
  } catch (error) {
    return new ConfigError('redisUrl', `cannot reach ${shown}: ${(error as Error).message}`);
  } finally {
    if (owned !== undefined) await releaseRedis(owned);
  }
}

/** Resolves once `client` is ready; rejects with its first connection error, or after `timeoutMs`. */
function connected(client: RedisClient, timeoutMs: number): Promise<void> {
  if (client.status === 'ready') return Promise.resolve();
  return new Promise<void>((resolve, reject) => {
    const done = (error?: Error) => {
      clearTimeout(timer);
      client.off('ready', onReady);
      client.off('error', done);
      if (error === undefined) resolve();
      else reject(error);
    };
    const onReady = () => done();
    const timer = setTimeout(() => done(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    client.once('ready', onReady);
    client.on('error', done);
  });
}

/** One upstream key to try: a single upstream's, or one of a deployment's. */
interface UpstreamProbe {
  /** The setting it comes from, as problems name it. */
  setting: string;
  name: string;
  api: Api;
  baseUrl: string;
  key: string | undefined;
}

function upstreamsOf(config: GatewayConfig): UpstreamProbe[] {
  const probes: UpstreamProbe[] = [];
  if (config.upstreamUrl !== undefined) {
    probes.push({
      setting: 'upstreamUrl',
      name: 'openai-default',
      api: 'openai',
      baseUrl: config.upstreamUrl,
      key: config.upstreamApiKey,
    });
  }
  if (config.anthropicUpstreamUrl !== undefined) {
    probes.push({
      setting: 'anthropicUpstreamUrl',
      name: 'anthropic-default',
      api: 'anthropic',
      baseUrl: config.anthropicUpstreamUrl,
      key: config.anthropicApiKey,
    });
  }
  config.deployments.forEach((d, i) => {
    const keys = d.apiKeys.length === 0 ? [undefined] : d.apiKeys;
    keys.forEach((key, k) => {
      probes.push({
        setting: keys.length === 1 ? `deployments[${i}]` : `deployments[${i}].apiKeys[${k}]`,
        name: d.name,
        api: d.api,
        baseUrl: d.baseUrl,
        key,
      });
    });
  });
  return probes;
}

/**
 * Lists the upstream's models with the key: any answer proves it is reachable, a 401 or 403 that it refuses
 * the key, a 5xx that it is not well. A 404 (a server without a models list) still counts as reached.
 */
async function probeUpstream(probe: UpstreamProbe, timeoutMs: number): Promise<string | ConfigError> {
  const url = probe.api === 'anthropic' ? `${probe.baseUrl}/v1/models` : `${probe.baseUrl}/models`;
  const headers: Record<string, string> = {};
  if (probe.key !== undefined) {
    if (probe.api === 'anthropic') headers['x-api-key'] = probe.key;
    else headers.authorization = `Bearer ${probe.key}`;
  }
  if (probe.api === 'anthropic') headers['anthropic-version'] = '2023-06-01';
  const shown = `${probe.name} (${shownUrl(probe.baseUrl)})`;
  try {
    const res = await request(url, {
      headers,
      signal: AbortSignal.timeout(timeoutMs),
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
    });
    await res.body.dump();
    if (res.statusCode === 401 || res.statusCode === 403) {
      return new ConfigError(probe.setting, `${shown} refuses the key (HTTP ${res.statusCode})`);
    }
    if (res.statusCode >= 500) {
      return new ConfigError(probe.setting, `${shown} answers HTTP ${res.statusCode}`);
    }
    return shown;
  } catch (error) {
    const e = error as Error & { code?: string };
    const why = e.name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : (e.code ?? e.message);
    return new ConfigError(probe.setting, `cannot reach ${shown}: ${why}`);
  }
}

/** `clawperf gateway check --help`. */
export function checkHelpText(): string {
  return [
    'Usage: clawperf gateway check [options] [--connect]',
    '',
    'Validates the configuration `clawperf gateway` would start with (defaults, --config file, environment,',
    'flags: the same options as `clawperf gateway --help` lists) and lists every problem, not just the first.',
    'With --connect it also reaches Redis and every upstream and deployment, with each of their keys.',
    'Exit code: 0 when all is well, 2 with the list of problems.',
    '',
  ].join('\n');
}

/** Runs `clawperf gateway check` with `argv` (the arguments after `check`) and resolves with the exit code. */
export async function runCheck(
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(checkHelpText());
    return 0;
  }
  const connect = argv.includes('--connect');
  const report = await checkConfiguration(
    argv.filter((a) => a !== '--connect'),
    env,
    { connect },
  );
  if (report.problems.length > 0) {
    const count = report.problems.length;
    process.stderr.write(
      `clawperf gateway check: ${count} problem${count === 1 ? '' : 's'}\n${report.problems.map((p) => `  ${p.message}\n`).join('')}`,
    );
    return 2;
  }
  process.stdout.write(
    `clawperf gateway check: the configuration is valid${connect ? `; reached ${report.reached.length === 0 ? 'nothing to reach (no Redis, no upstream)' : report.reached.join(', ')}` : ''}\n`,
  );
  return 0;
}
