/**
 * The gateway's settings: defaults, then an optional JSON/YAML config file, then environment variables,
 * then command-line flags (each layer overrides the one before). Every value is validated; a bad one
 * throws {@link ConfigError} naming the setting, and the gateway does not start.
 *
 * Most of the file is the settings table, one entry per setting (flag, environment variable, kind, help,
 * default); the table is read by the loader and `--help` alike, so it stays beside them. How a raw value of
 * each kind becomes a setting's value is in config-values.ts.
 *
 * @module
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { ConfigError } from '../errors.ts';
import { parseRedisUrl } from '../internal/redis.ts';
import { convert, type Setting } from './config-values.ts';
import type { DeploymentConfig } from './deployments-config.ts';
import type { Prices } from './prices.ts';
import { DEFAULT_MAX_SESSIONS } from './prompt-sessions.ts';
import {
  DEFAULT_LOG_FORMAT,
  DEFAULT_LOG_LEVEL,
  EMBEDDED_LOG_LEVEL,
  LOG_FORMATS,
  LOG_LEVELS,
  type LogFormat,
  type LogLevel,
} from './request-log.ts';

/** @default 8787 */
export const DEFAULT_PORT = 8787;
/** Loopback only: the gateway is not reachable from other hosts unless asked. @default '127.0.0.1' */
export const DEFAULT_HOST = '127.0.0.1';
/** Latency of the simulated `local-chat` model, like a fast hosted model, ms. @default 50 */
export const DEFAULT_LOCAL_CHAT_LATENCY_MS = 50;
/** Largest request body accepted; a bigger one gets 413. @default 10485760 (10 MiB) */
export const DEFAULT_BODY_LIMIT_BYTES = 10 * 1024 * 1024;
/** How long shutdown waits for in-flight requests before closing their connections, ms. @default 10000 */
export const DEFAULT_DRAIN_TIMEOUT_MS = 10_000;
/** Lifetime of a cached answer, ms. @default 86400000 (one day) */
export const DEFAULT_CACHE_TTL_MS = 86_400_000;
/** Entries held in memory (L1). @default 10000 */
export const DEFAULT_L1_MAX_ENTRIES = 10_000;
/** Upstream calls running at once; more wait in the queue. @default 64 */
export const DEFAULT_MAX_CONCURRENCY = 64;
/** Requests waiting for an upstream slot; one more gets 503 with Retry-After. @default 1024 */
export const DEFAULT_MAX_QUEUE_SIZE = 1024;
/** Longest wait for an upstream slot before 503, ms. @default 30000 */
export const DEFAULT_QUEUE_TIMEOUT_MS = 30_000;
/** Time allowed for one upstream call (until the answer's headers, and between streamed chunks), ms. @default 60000 */
export const DEFAULT_UPSTREAM_TIMEOUT_MS = 60_000;
/** Retries of an upstream call that failed with 429, 5xx or a connection error. @default 2 */
export const DEFAULT_UPSTREAM_RETRIES = 2;
/**
 * How long a Redis command may wait for its answer before the cache or the limiter takes its fallback, ms.
 * @default 100
 */
export const DEFAULT_REDIS_COMMAND_TIMEOUT_MS = 100;
/** Consecutive upstream failures (5xx, timeouts, unreachable) that open its circuit. @default 5 */
export const DEFAULT_UPSTREAM_FAILURE_THRESHOLD = 5;
/** How long an open upstream circuit refuses calls before one probe goes through, ms. @default 5000 */
export const DEFAULT_UPSTREAM_COOLDOWN_MS = 5_000;
/** Embedding inputs sent upstream in one call. @default 100 */
export const DEFAULT_BATCH_MAX_SIZE = 100;
/** How long an embedding batch waits for more inputs before it is sent, ms. @default 5 */
export const DEFAULT_BATCH_MAX_WAIT_MS = 5;
/** Inputs one embeddings request may carry (OpenAI's own cap); more get 400. @default 2048 */
export const DEFAULT_MAX_EMBEDDING_INPUTS = 2048;

/** Per-tenant limits per minute; a missing one is not limited. */
export interface GatewayLimits {
  /** Requests per minute per tenant. */
  rpm?: number;
  /** Tokens per minute per tenant (estimated at admission, settled from the answer's `usage`). */
  tpm?: number;
}

/** Everything the gateway is started with. */
export interface GatewayConfig {
  port: number;
  host: string;
  /**
   * Redis for L2, the invalidation bus and global limits; without it everything is per process. One server
   * (`redis://`, `rediss://` over TLS) or a Cluster by its seed nodes (`redis+cluster://h1:6379,h2:6379`,
   * `rediss+cluster://`); `user:password@` logs in every node as that ACL user.
   */
  redisUrl: string | undefined;
  /** A PEM file of the CA certificates a TLS Redis is trusted by, besides the CAs Node trusts. */
  redisCaFile: string | undefined;
  redisCommandTimeoutMs: number;
  /** An OpenAI-compatible base URL including its version path (`https://api.openai.com/v1`). */
  upstreamUrl: string | undefined;
  upstreamApiKey: string | undefined;
  /**
   * Anthropic's base URL as its SDK takes it (`https://api.anthropic.com`; a trailing `/v1` is accepted):
   * where `/v1/messages` goes for every model but the local one.
   */
  anthropicUpstreamUrl: string | undefined;
  /** Sent to the Anthropic upstream as `x-api-key`. */
  anthropicApiKey: string | undefined;
  /** The disk cache (L3) directory, or `false` for no disk cache. */
  cacheDir: string | false;
  cacheTtlMs: number;
  l1MaxEntries: number;
  /** Bearer token of `/admin/*` and `/debug/*`; without one those routes are disabled (404). */
  adminToken: string | undefined;
  /** Client API key -> tenant. Empty: the gateway is open, to loopback clients only. */
  apiKeys: Record<string, string>;
  localChatLatencyMs: number;
  /** Rate limits, or `undefined` for none (the default). */
  limits: GatewayLimits | undefined;
  bodyLimitBytes: number;
  drainTimeoutMs: number;
  maxConcurrency: number;
  /** Processes serving the port (node:cluster); more than one share their state on Redis. */
  workers: number;
  maxQueueSize: number;
  queueTimeoutMs: number;
  upstreamTimeoutMs: number;
  upstreamRetries: number;
  /**
   * Connections to each upstream; `undefined` (the default) allows as many as `maxConcurrency`, so no
   * connection pool below the gateway's own limit makes a call (a long stream above all) wait for another.
   */
  upstreamConnections: number | undefined;
  upstreamFailureThreshold: number;
  upstreamCooldownMs: number;
  batchMaxSize: number;
  batchMaxWaitMs: number;
  maxEmbeddingInputs: number;
  /** OTLP/HTTP traces endpoint; without it spans are made (for `traceparent`) but not exported. */
  otlpUrl: string | undefined;
  /** Sessions whose prompts are compared for prompt-cache breaks; 0 turns the comparison off. */
  promptCacheMaxSessions: number;
  /** Place Anthropic cache breakpoints where the client's leave the history uncached. */
  promptCacheAutoBreakpoints: boolean;
  /** The upstreams models run on, beside (not with) `upstreamUrl` and `anthropicUpstreamUrl` of one API. */
  deployments: DeploymentConfig[];
  /**
   * Prices per million tokens by model (see prices.ts): with them `/metrics` and the dashboard count spend
   * and savings per tenant and model. No price list is built in.
   */
  prices: Prices | undefined;
  /**
   * The log's level: `info` writes one line per request, `warn` and above leave them out.
   * @default 'info' for `clawperf gateway`; 'warn' for `createGateway` (see {@link EMBEDDED_LOG_LEVEL})
   */
  logLevel: LogLevel;
  /** JSON lines, or `pretty` text (needs the optional package pino-pretty). @default 'json' */
  logFormat: LogFormat;
}

const SETTINGS: readonly Setting[] = [
  {
    key: 'port',
    flag: 'port',
    env: 'PORT',
    kind: 'port',
    help: 'port to listen on',
    defaultText: String(DEFAULT_PORT),
  },
  {
    key: 'host',
    flag: 'host',
    env: 'HOST',
    kind: 'string',
    help: 'address to listen on',
    defaultText: DEFAULT_HOST,
  },
  {
    key: 'redisUrl',
    flag: 'redis',
    env: 'REDIS_URL',
    kind: 'url',
    help: 'Redis URL: shared L2 cache, invalidation bus, global limits (redis://, rediss:// for TLS, redis+cluster://h1:p,h2:p for a Cluster)',
    defaultText: 'none (single node)',
  },
  {
    key: 'redisCaFile',
    flag: 'redis-ca-file',
    env: 'CLAWPERF_REDIS_CA_FILE',
    kind: 'string',
    help: 'PEM file of the CA certificates that a rediss:// Redis is trusted by (besides the CAs Node trusts)',
    defaultText: 'none',
  },
  {
    key: 'redisCommandTimeoutMs',
    flag: 'redis-command-timeout-ms',
    env: 'CLAWPERF_REDIS_COMMAND_TIMEOUT_MS',
    kind: 'integer',
    min: 1,
    help: 'ms a Redis command may take before the fallback (memory, disk, local limits) is used',
    defaultText: String(DEFAULT_REDIS_COMMAND_TIMEOUT_MS),
  },
  {
    key: 'upstreamUrl',
    flag: 'upstream',
    env: 'UPSTREAM_URL',
    kind: 'url',
    help: 'OpenAI-compatible base URL with its version path, e.g. https://api.openai.com/v1',
    defaultText: 'none (local models only)',
  },
  {
    key: 'upstreamApiKey',
    flag: 'upstream-api-key',
    env: 'UPSTREAM_API_KEY',
    kind: 'string',
    help: 'API key sent to the upstream as a bearer token',
    defaultText: 'none',
  },
  {
    key: 'anthropicUpstreamUrl',
    flag: 'anthropic-upstream',
    env: 'ANTHROPIC_UPSTREAM_URL',
    kind: 'url',
    help: "Anthropic's base URL for /v1/messages, e.g. https://api.anthropic.com",
    defaultText: 'none (local-chat only)',
  },
  {
    key: 'anthropicApiKey',
    flag: 'anthropic-api-key',
    env: 'ANTHROPIC_API_KEY',
    kind: 'string',
    help: 'API key sent to the Anthropic upstream as x-api-key',
    defaultText: 'none',
  },
  {
    key: 'cacheDir',
    flag: 'cache-dir',
    env: 'CACHE_DIR',
    kind: 'dir',
    help: 'disk cache directory ("off" for no disk cache)',
    defaultText: '$XDG_CACHE_HOME/clawperf, else ~/.cache/clawperf',
  },
  {
    key: 'cacheTtlMs',
    flag: 'cache-ttl-ms',
    env: 'CLAWPERF_CACHE_TTL_MS',
    kind: 'integer',
    min: 1,
    help: 'lifetime of a cached answer, ms',
    defaultText: String(DEFAULT_CACHE_TTL_MS),
  },
  {
    key: 'l1MaxEntries',
    flag: 'l1-max-entries',
    env: 'CLAWPERF_L1_MAX_ENTRIES',
    kind: 'integer',
    min: 1,
    help: 'cached answers held in memory',
    defaultText: String(DEFAULT_L1_MAX_ENTRIES),
  },
  {
    key: 'adminToken',
    flag: 'admin-token',
    env: 'CLAWPERF_ADMIN_TOKEN',
    kind: 'string',
    help: 'bearer token for /admin/* and /debug/* (disabled without one)',
    defaultText: 'none',
  },
  {
    key: 'apiKeys',
    flag: 'api-keys',
    env: 'GATEWAY_API_KEYS',
    kind: 'keys',
    help: 'client API keys as comma-separated key:tenant pairs',
    defaultText: 'none (open to loopback clients only)',
  },
  {
    key: 'localChatLatencyMs',
    flag: 'local-chat-latency-ms',
    env: 'CLAWPERF_LOCAL_CHAT_LATENCY_MS',
    kind: 'integer',
    help: 'latency of the simulated local-chat model, ms',
    defaultText: String(DEFAULT_LOCAL_CHAT_LATENCY_MS),
  },
  {
    key: 'limits',
    flag: 'limits',
    env: 'CLAWPERF_LIMITS',
    kind: 'limits',
    help: 'per-tenant limits, e.g. rpm=60,tpm=90000',
    defaultText: 'off',
  },
  {
    key: 'bodyLimitBytes',
    flag: 'body-limit-bytes',
    env: 'CLAWPERF_BODY_LIMIT_BYTES',
    kind: 'integer',
    min: 1,
    help: 'largest request body; bigger ones get 413',
    defaultText: String(DEFAULT_BODY_LIMIT_BYTES),
  },
  {
    key: 'drainTimeoutMs',
    flag: 'drain-timeout-ms',
    env: 'CLAWPERF_DRAIN_TIMEOUT_MS',
    kind: 'integer',
    help: 'on SIGTERM/SIGINT, longest wait for in-flight requests, ms',
    defaultText: String(DEFAULT_DRAIN_TIMEOUT_MS),
  },
  {
    key: 'maxConcurrency',
    flag: 'max-concurrency',
    env: 'CLAWPERF_MAX_CONCURRENCY',
    kind: 'integer',
    min: 1,
    help: 'upstream calls running at once',
    defaultText: String(DEFAULT_MAX_CONCURRENCY),
  },
  {
    key: 'workers',
    flag: 'workers',
    env: 'CLAWPERF_WORKERS',
    kind: 'workers',
    help: 'processes serving the port, or "auto" (one per core); they share state on Redis (a private redis-server without --redis)',
    defaultText: '1',
  },
  {
    key: 'maxQueueSize',
    flag: 'max-queue-size',
    env: 'CLAWPERF_MAX_QUEUE_SIZE',
    kind: 'integer',
    help: 'requests waiting for an upstream slot before 503',
    defaultText: String(DEFAULT_MAX_QUEUE_SIZE),
  },
  {
    key: 'queueTimeoutMs',
    flag: 'queue-timeout-ms',
    env: 'CLAWPERF_QUEUE_TIMEOUT_MS',
    kind: 'integer',
    min: 1,
    help: 'longest wait for an upstream slot, ms',
    defaultText: String(DEFAULT_QUEUE_TIMEOUT_MS),
  },
  {
    key: 'upstreamTimeoutMs',
    flag: 'upstream-timeout-ms',
    env: 'CLAWPERF_UPSTREAM_TIMEOUT_MS',
    kind: 'integer',
    min: 1,
    help: 'time allowed for an upstream answer (and between streamed chunks), ms',
    defaultText: String(DEFAULT_UPSTREAM_TIMEOUT_MS),
  },
  {
    key: 'upstreamRetries',
    flag: 'upstream-retries',
    env: 'CLAWPERF_UPSTREAM_RETRIES',
    kind: 'integer',
    help: 'retries on 429, 5xx and connection errors',
    defaultText: String(DEFAULT_UPSTREAM_RETRIES),
  },
  {
    key: 'upstreamConnections',
    flag: 'upstream-connections',
    env: 'CLAWPERF_UPSTREAM_CONNECTIONS',
    kind: 'integer',
    min: 1,
    help: 'connections to each upstream (fewer than --max-concurrency make calls wait for one another)',
    defaultText: 'max concurrency',
  },
  {
    key: 'upstreamFailureThreshold',
    flag: 'upstream-failure-threshold',
    env: 'CLAWPERF_UPSTREAM_FAILURE_THRESHOLD',
    kind: 'integer',
    min: 1,
    help: 'consecutive upstream failures that open its circuit',
    defaultText: String(DEFAULT_UPSTREAM_FAILURE_THRESHOLD),
  },
  {
    key: 'upstreamCooldownMs',
    flag: 'upstream-cooldown-ms',
    env: 'CLAWPERF_UPSTREAM_COOLDOWN_MS',
    kind: 'integer',
    min: 0,
    help: 'ms an open upstream circuit refuses calls before one probe',
    defaultText: String(DEFAULT_UPSTREAM_COOLDOWN_MS),
  },
  {
    key: 'batchMaxSize',
    flag: 'batch-max-size',
    env: 'CLAWPERF_BATCH_MAX_SIZE',
    kind: 'integer',
    min: 1,
    help: 'embedding inputs per upstream call',
    defaultText: String(DEFAULT_BATCH_MAX_SIZE),
  },
  {
    key: 'batchMaxWaitMs',
    flag: 'batch-max-wait-ms',
    env: 'CLAWPERF_BATCH_MAX_WAIT_MS',
    kind: 'integer',
    help: 'how long an embedding batch waits for more inputs, ms',
    defaultText: String(DEFAULT_BATCH_MAX_WAIT_MS),
  },
  {
    key: 'maxEmbeddingInputs',
    flag: 'max-embedding-inputs',
    env: 'CLAWPERF_MAX_EMBEDDING_INPUTS',
    kind: 'integer',
    min: 1,
    help: 'inputs of one embeddings request; more get 400',
    defaultText: String(DEFAULT_MAX_EMBEDDING_INPUTS),
  },
  {
    key: 'otlpUrl',
    flag: 'otlp-url',
    env: 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT',
    kind: 'url',
    help: 'OTLP/HTTP traces endpoint (spans are exported only with one)',
    defaultText: 'none',
  },
  {
    key: 'promptCacheMaxSessions',
    flag: 'prompt-cache-max-sessions',
    env: 'CLAWPERF_PROMPT_CACHE_MAX_SESSIONS',
    kind: 'integer',
    min: 0,
    help: 'sessions compared for prompt-cache breaks (0: off)',
    defaultText: String(DEFAULT_MAX_SESSIONS),
  },
  {
    key: 'promptCacheAutoBreakpoints',
    flag: 'prompt-cache-auto-breakpoints',
    env: 'CLAWPERF_PROMPT_CACHE_AUTO_BREAKPOINTS',
    kind: 'boolean',
    help: 'place Anthropic cache breakpoints where the client leaves the history uncached (on/off)',
    defaultText: 'off',
  },
  {
    key: 'deployments',
    flag: 'deployments',
    env: 'CLAWPERF_DEPLOYMENTS',
    kind: 'deployments',
    help: 'upstream deployments per model, as JSON (in a file: a list; see docs/gateway.md)',
    defaultText: 'none',
  },
  {
    key: 'prices',
    flag: 'prices',
    env: 'CLAWPERF_PRICES',
    kind: 'prices',
    help: 'prices per million tokens by model, as JSON: {"<model>":{"input":..,"cachedInput":..,"cacheWrite":..,"output":..}}; spend and savings are counted with them',
    defaultText: 'none (tokens only)',
  },
  {
    key: 'logLevel',
    flag: 'log-level',
    env: 'CLAWPERF_LOG_LEVEL',
    kind: 'choice',
    choices: LOG_LEVELS,
    help: `log level: ${LOG_LEVELS.join(', ')} (info logs every request; warn leaves request lines out)`,
    defaultText: DEFAULT_LOG_LEVEL,
  },
  {
    key: 'logFormat',
    flag: 'log-format',
    env: 'CLAWPERF_LOG_FORMAT',
    kind: 'choice',
    choices: LOG_FORMATS,
    help: 'log format: json lines, or pretty text (needs the optional package pino-pretty)',
    defaultText: DEFAULT_LOG_FORMAT,
  },
];

const BY_FLAG = new Map(SETTINGS.map((s) => [s.flag, s]));
const BY_KEY = new Map(SETTINGS.map((s) => [s.key as string, s]));

/** The default disk cache directory: `$XDG_CACHE_HOME/clawperf`, else `~/.cache/clawperf`. */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env.XDG_CACHE_HOME;
  return xdg ? join(xdg, 'clawperf') : join(homedir(), '.cache', 'clawperf');
}

/** Every setting at its default. */
export function defaultConfig(env: NodeJS.ProcessEnv = process.env): GatewayConfig {
  return {
    port: DEFAULT_PORT,
    host: DEFAULT_HOST,
    redisUrl: undefined,
    redisCaFile: undefined,
    redisCommandTimeoutMs: DEFAULT_REDIS_COMMAND_TIMEOUT_MS,
    upstreamUrl: undefined,
    upstreamApiKey: undefined,
    anthropicUpstreamUrl: undefined,
    anthropicApiKey: undefined,
    cacheDir: defaultCacheDir(env),
    cacheTtlMs: DEFAULT_CACHE_TTL_MS,
    l1MaxEntries: DEFAULT_L1_MAX_ENTRIES,
    adminToken: undefined,
    apiKeys: {},
    localChatLatencyMs: DEFAULT_LOCAL_CHAT_LATENCY_MS,
    limits: undefined,
    bodyLimitBytes: DEFAULT_BODY_LIMIT_BYTES,
    drainTimeoutMs: DEFAULT_DRAIN_TIMEOUT_MS,
    maxConcurrency: DEFAULT_MAX_CONCURRENCY,
    workers: 1,
    maxQueueSize: DEFAULT_MAX_QUEUE_SIZE,
    queueTimeoutMs: DEFAULT_QUEUE_TIMEOUT_MS,
    upstreamTimeoutMs: DEFAULT_UPSTREAM_TIMEOUT_MS,
    upstreamRetries: DEFAULT_UPSTREAM_RETRIES,
    upstreamConnections: undefined,
    upstreamFailureThreshold: DEFAULT_UPSTREAM_FAILURE_THRESHOLD,
    upstreamCooldownMs: DEFAULT_UPSTREAM_COOLDOWN_MS,
    batchMaxSize: DEFAULT_BATCH_MAX_SIZE,
    batchMaxWaitMs: DEFAULT_BATCH_MAX_WAIT_MS,
    maxEmbeddingInputs: DEFAULT_MAX_EMBEDDING_INPUTS,
    otlpUrl: undefined,
    promptCacheMaxSessions: DEFAULT_MAX_SESSIONS,
    promptCacheAutoBreakpoints: false,
    deployments: [],
    prices: undefined,
    logLevel: DEFAULT_LOG_LEVEL,
    logFormat: DEFAULT_LOG_FORMAT,
  };
}

/**
 * Runs `step`. Without `problems` a {@link ConfigError} it throws goes to the caller; with them it is added
 * to them, so a check can list every problem instead of stopping at the first.
 */
function judged(problems: ConfigError[] | undefined, step: () => void): void {
  if (problems === undefined) {
    step();
    return;
  }
  try {
    step();
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    problems.push(error);
  }
}

/**
 * Reads and validates a JSON or YAML config file whose keys are the setting names (`port`, `redisUrl`, ...).
 * With `problems`, every invalid setting is added to them and left out, instead of throwing at the first.
 */
export function readConfigFile(path: string, problems?: ConfigError[]): Partial<GatewayConfig> {
  const out: Record<string, unknown> = {};
  judged(problems, () => {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (error) {
      throw new ConfigError('config', `cannot read ${path}: ${(error as Error).message}`, { cause: error });
    }
    let data: unknown;
    try {
      data = parseYaml(text);
    } catch (error) {
      throw new ConfigError('config', `${path} is not valid JSON or YAML: ${(error as Error).message}`, {
        cause: error,
      });
    }
    if (data === null || data === undefined) return;
    if (typeof data !== 'object' || Array.isArray(data)) {
      throw new ConfigError('config', `${path} must hold an object of settings`);
    }
    for (const [key, value, name] of flatten(data as Record<string, unknown>)) {
      judged(problems, () => {
        const setting = BY_KEY.get(key);
        if (setting === undefined) {
          throw new ConfigError(name, `unknown setting in ${path}; known: ${[...BY_KEY.keys()].join(', ')}`);
        }
        out[key] = convert(setting, key, value);
      });
    }
  });
  return out as Partial<GatewayConfig>;
}

/**
 * A file's settings as flat keys: a group the file writes as an object (`promptCache: { autoBreakpoints:
 * true }`) is the settings its name prefixes (`promptCacheAutoBreakpoints`).
 */
function* flatten(data: Record<string, unknown>): Generator<[key: string, value: unknown, name: string]> {
  for (const [key, value] of Object.entries(data)) {
    const group = value !== null && typeof value === 'object' && !Array.isArray(value) && !BY_KEY.has(key);
    if (!group) {
      yield [key, value, key];
      continue;
    }
    for (const [sub, inner] of Object.entries(value as Record<string, unknown>)) {
      yield [`${key}${sub.charAt(0).toUpperCase()}${sub.slice(1)}`, inner, `${key}.${sub}`];
    }
  }
}

/** What {@link parseArgs} found on the command line. */
export interface ParsedArgs {
  help: boolean;
  configFile: string | undefined;
  values: Partial<GatewayConfig>;
}

/** Parses `--name value` and `--name=value` flags; with `problems`, as {@link readConfigFile} does. */
export function parseArgs(argv: readonly string[], problems?: ConfigError[]): ParsedArgs {
  const values: Record<string, unknown> = {};
  let help = false;
  let configFile: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--help' || arg === '-h') {
      help = true;
      continue;
    }
    judged(problems, () => {
      if (!arg.startsWith('--')) throw new ConfigError(arg, 'unexpected argument; flags start with --');
      const eq = arg.indexOf('=');
      const flag = arg.slice(2, eq === -1 ? undefined : eq);
      let value: string | undefined = eq === -1 ? undefined : arg.slice(eq + 1);
      if (value === undefined) {
        value = argv[i + 1];
        if (value === undefined || value.startsWith('--'))
          throw new ConfigError(`--${flag}`, 'needs a value');
        i++;
      }
      if (flag === 'config') {
        configFile = value;
        return;
      }
      const setting = BY_FLAG.get(flag);
      if (setting === undefined) throw new ConfigError(`--${flag}`, 'unknown flag; see --help');
      values[setting.key] = convert(setting, `--${flag}`, value);
    });
  }
  return { help, configFile, values: values as Partial<GatewayConfig> };
}

/** Settings from environment variables (an empty variable counts as unset); `problems` as in {@link readConfigFile}. */
export function readEnv(env: NodeJS.ProcessEnv, problems?: ConfigError[]): Partial<GatewayConfig> {
  const values: Record<string, unknown> = {};
  for (const setting of SETTINGS) {
    const name = setting.env;
    if (name === undefined) continue;
    const raw = env[name];
    if (raw === undefined || raw === '') continue;
    judged(problems, () => {
      values[setting.key] = convert(setting, name, raw);
    });
  }
  return values as Partial<GatewayConfig>;
}

/**
 * The configuration from defaults, the config file (`--config` or `CLAWPERF_CONFIG`), the environment and
 * the flags, in that order of precedence (flags win).
 *
 * With `problems`, every problem is added to them instead (an invalid setting keeps its default), so a check
 * can list them all: `clawperf gateway check`.
 *
 * @throws {ConfigError} naming the setting, for any invalid value, unknown flag or unreadable file.
 */
export function loadConfig(
  argv: readonly string[] = [],
  env: NodeJS.ProcessEnv = process.env,
  problems?: ConfigError[],
): GatewayConfig & { help: boolean } {
  const args = parseArgs(argv, problems);
  const file = args.configFile ?? (env.CLAWPERF_CONFIG || undefined);
  const fromFile = file === undefined ? {} : readConfigFile(file, problems);
  const config = {
    ...defaultConfig(env),
    ...fromFile,
    ...readEnv(env, problems),
    ...args.values,
    help: args.help,
  };
  checkApis(config, problems);
  judged(problems, () => checkRedis(config));
  return config;
}

/**
 * One API's models come either from its single upstream (`--upstream`, `--anthropic-upstream`) or from
 * `deployments`, not both: the single upstream serves every model, so the two would claim the same ones.
 */
function checkApis(config: GatewayConfig, problems?: ConfigError[]): void {
  const single = { openai: config.upstreamUrl, anthropic: config.anthropicUpstreamUrl };
  config.deployments.forEach((d, i) => {
    judged(problems, () => {
      if (single[d.api] === undefined) return;
      const flag = d.api === 'openai' ? '--upstream' : '--anthropic-upstream';
      throw new ConfigError(
        `deployments[${i}]`,
        `${d.name} serves ${d.api} models, which ${flag} already serves; configure that upstream as a deployment instead`,
      );
    });
  });
}

/** A CA file goes with a TLS Redis, and must hold PEM certificates: checked before any connection is made. */
function checkRedis(config: GatewayConfig): void {
  const file = config.redisCaFile;
  if (file === undefined) return;
  if (config.redisUrl === undefined || !parseRedisUrl('redisUrl', config.redisUrl).tls) {
    throw new ConfigError('redisCaFile', 'needs a rediss:// or rediss+cluster:// Redis URL (redisUrl)');
  }
  let pem: string;
  try {
    pem = readFileSync(file, 'utf8');
  } catch (error) {
    throw new ConfigError('redisCaFile', `cannot read ${file}: ${(error as Error).message}`, {
      cause: error,
    });
  }
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) {
    throw new ConfigError('redisCaFile', `${file} holds no PEM certificate`);
  }
}

/** Validates a configuration given as an object (the programmatic counterpart of {@link loadConfig}). */
export function resolveConfig(input: Partial<GatewayConfig> = {}): GatewayConfig {
  if (input === null || typeof input !== 'object') throw new ConfigError('config', 'must be an object');
  // From code the request lines are asked for (a logLevel, or a logger), as Fastify's own logger is.
  const out: Record<string, unknown> = { ...defaultConfig(), logLevel: EMBEDDED_LOG_LEVEL };
  for (const [key, value] of Object.entries(input)) {
    if (value === undefined) continue;
    const setting = BY_KEY.get(key);
    if (setting === undefined) throw new ConfigError(key, 'unknown setting');
    out[key] = convert(setting, key, value);
  }
  checkApis(out as unknown as GatewayConfig);
  checkRedis(out as unknown as GatewayConfig);
  return out as unknown as GatewayConfig;
}

/** The `--help` text: every setting with its flag, environment variable and default. */
export function helpText(): string {
  const rows = SETTINGS.map((s) => [`--${s.flag} <value>`, s.env ?? '', s.help, s.defaultText]);
  rows.unshift([
    '--config <file>',
    'CLAWPERF_CONFIG',
    'JSON or YAML file of settings (camelCase keys)',
    'none',
  ]);
  const w0 = Math.max(...rows.map((r) => r[0]!.length));
  const w1 = Math.max(...rows.map((r) => r[1]!.length));
  return [
    'Usage: clawperf gateway [options]',
    '       clawperf gateway check [options] [--connect]   (check the configuration; see check --help)',
    '',
    'An OpenAI-compatible performance gateway: cached, batched, rate-limited, backpressured, observable.',
    'Built-in LOCAL models (no provider needed): local-embed (feature-hashing embeddings) and',
    'local-chat (a simulated chat model). Precedence: flags > environment > config file > defaults.',
    '',
    `  ${'flag'.padEnd(w0)}  ${'environment'.padEnd(w1)}  description (default)`,
    ...rows.map((r) => `  ${r[0]!.padEnd(w0)}  ${r[1]!.padEnd(w1)}  ${r[2]} (default: ${r[3]})`),
    `  ${'--help'.padEnd(w0)}  ${''.padEnd(w1)}  show this help`,
    '',
  ].join('\n');
}
