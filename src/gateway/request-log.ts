/**
 * The gateway's log: pino, handed to Fastify as its own logger, with one JSON line per request written
 * when the response has gone (Fastify's `requestCompleted`, in place of its two lines per request). A line
 * says what happened and never what was said: no prompt, no answer, no header; keys anywhere in a logged
 * object are redacted.
 *
 * ```json
 * {"level":30,"time":"2026-12-07T18:40:00.000Z","service":"clawperf-gateway","requestId":"7c1e...",
 *  "tenant":"team-a","method":"POST","route":"/v1/chat/completions","model":"gpt-4o-mini",
 *  "deployment":"openai-default","status":200,"cache":"miss","tokensIn":812,"tokensOut":64,
 *  "promptCacheRead":768,"promptCacheWrite":0,"overheadMs":0.412,"upstreamMs":201.7,"durationMs":202.3,
 *  "msg":"request"}
 * ```
 *
 * @module
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { type FastifyReply, type FastifyRequest, LogController } from 'fastify';
import { type ChildLoggerOptions, type DestinationStream, type Logger, pino } from 'pino';
import { ConfigError } from '../errors.ts';
import { type TokenUsage, tokenUsage } from '../tracing/index.ts';
import { DEPLOYMENT_HEADER, type RequestState } from './context.ts';

/** The levels `--log-level` takes; `warn` and above leave the request lines out. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** The formats `--log-format` takes: JSON lines, or pino-pretty's text for a terminal. */
export const LOG_FORMATS = ['json', 'pretty'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

/** The level of `clawperf gateway`: one line per request. @default 'info' */
export const DEFAULT_LOG_LEVEL: LogLevel = 'info';
/**
 * The level of a gateway built from code (`createGateway`) without a `logLevel` or a logger: structured
 * events only, no request lines, as Fastify's own logger is off unless asked for. @default 'warn'
 */
export const EMBEDDED_LOG_LEVEL: LogLevel = 'warn';
/** @default 'json' */
export const DEFAULT_LOG_FORMAT: LogFormat = 'json';

/** The request header whose value becomes the request's id, and the response header that returns it. */
export const REQUEST_ID_HEADER = 'x-request-id';

/** A client's request id is kept when it is 1-128 visible ASCII characters; otherwise one is made. */
const CLIENT_REQUEST_ID = /^[\x21-\x7e]{1,128}$/;

/** The request's id: the client's `x-request-id` when it is a sane one, else a new UUID. */
export function requestId(raw: IncomingMessage): string {
  const given = raw.headers[REQUEST_ID_HEADER];
  return typeof given === 'string' && CLIENT_REQUEST_ID.test(given) ? given : randomUUID();
}

/** Where credentials would sit in anything logged: censored, whatever logs it. */
export const REDACTED_PATHS = [
  'req.headers.authorization',
  'req.headers["x-api-key"]',
  'req.headers["proxy-authorization"]',
  'headers.authorization',
  'headers["x-api-key"]',
  'headers["proxy-authorization"]',
  'apiKey',
  'apiKeys',
  'upstreamApiKey',
  'anthropicApiKey',
  'adminToken',
  'config.apiKeys',
  'config.upstreamApiKey',
  'config.anthropicApiKey',
  'config.adminToken',
];

/** What a logger is made from. */
export interface LoggerSettings {
  logLevel: LogLevel;
  logFormat: LogFormat;
}

/** Options of {@link createLogger}. */
export interface CreateLoggerOptions {
  /** Where the lines go. @default stderr */
  destination?: DestinationStream;
  /** How pino-pretty is loaded, for `logFormat: 'pretty'`. @default `import('pino-pretty')` */
  loadPretty?: () => Promise<unknown>;
}

type PrettyFactory = (options: Record<string, unknown>) => DestinationStream;

/**
 * The gateway's logger at `logLevel`, writing JSON lines (or, with `logFormat: 'pretty'`, pino-pretty's
 * text) to stderr.
 *
 * @throws {ConfigError} for `logFormat: 'pretty'` when the optional package pino-pretty is not installed.
 */
export async function createLogger(
  settings: LoggerSettings,
  options: CreateLoggerOptions = {},
): Promise<Logger> {
  let destination = options.destination;
  if (settings.logFormat === 'pretty') {
    const pretty = await loadPretty(options.loadPretty ?? (() => import('pino-pretty')));
    destination = pretty({
      destination: destination ?? 2,
      sync: true,
      // One request, one line, in a terminal too.
      singleLine: true,
      colorize: destination === undefined && process.stderr.isTTY === true,
    });
  }
  return pino(
    {
      level: settings.logLevel,
      base: { service: 'clawperf-gateway' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
    },
    destination ?? pino.destination(2),
  );
}

async function loadPretty(load: () => Promise<unknown>): Promise<PrettyFactory> {
  let module: unknown;
  try {
    module = await load();
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') {
      throw new ConfigError(
        'logFormat',
        'pretty needs the optional package pino-pretty, which is not installed: run `npm install pino-pretty`, or use --log-format json',
        { cause: error },
      );
    }
    throw error;
  }
  const factory = (module as { default?: unknown }).default ?? module;
  if (typeof factory !== 'function') {
    throw new ConfigError(
      'logFormat',
      'pino-pretty did not load as a function: install pino-pretty 11 or later',
    );
  }
  return factory as PrettyFactory;
}

/** One request, as its log line says it. Fields not known for a request are left out. */
export interface RequestLine {
  tenant: string | undefined;
  method: string;
  /** The route's pattern, or the path when no route matched. */
  route: string;
  /** The model the request asked for. */
  model: string | undefined;
  /** The deployment that produced the answer (`x-clawperf-deployment`). */
  deployment: string | undefined;
  status: number;
  /** `hit`, `miss`, `coalesced` or `bypass` on a model route. */
  cache: string | undefined;
  tokensIn: number | undefined;
  tokensOut: number | undefined;
  /** Input tokens the provider read from its prompt cache, when it says. */
  promptCacheRead: number | undefined;
  /** Input tokens the provider wrote to its prompt cache, when it says. */
  promptCacheWrite: number | undefined;
  /** The gateway's own time until the answer's headers: the `x-clawperf-overhead-ms` header. */
  overheadMs: number | undefined;
  /** Time spent waiting for the upstream. */
  upstreamMs: number | undefined;
  /** From the request's arrival until its response was sent. */
  durationMs: number;
  /** Why the response ended badly (a stream cut short), as a code, never a message. */
  error: string | undefined;
  /** The client closed the connection before the response was complete (a dashboard or a stream left). */
  aborted?: true;
}

/** A model name is the client's text: a longer one is cut, so a line stays a line. */
const MAX_MODEL_LENGTH = 200;

const ms = (value: number) => Math.round(value * 1000) / 1000;

/** The log line of a request whose response has gone. */
export function requestLine(request: FastifyRequest, reply: FastifyReply, error?: Error | null): RequestLine {
  const s = request.clawperf as RequestState | null | undefined;
  const model = (request.body as { model?: unknown } | null | undefined)?.model;
  const deployment = reply.getHeader(DEPLOYMENT_HEADER);
  const usage: TokenUsage | undefined =
    s?.streamed?.usage ?? tokenUsage((s?.answer as { usage?: unknown } | null | undefined)?.usage);
  // Fields left undefined are left out of the line.
  return {
    tenant: s?.tenant,
    method: request.method,
    route: request.routeOptions.url ?? request.url.split('?', 1)[0]!,
    model: typeof model === 'string' ? model.slice(0, MAX_MODEL_LENGTH) : undefined,
    deployment: typeof deployment === 'string' ? deployment : undefined,
    status: reply.statusCode,
    // Only model routes decide a cache outcome; the rest keep the initial `bypass`, which says nothing.
    cache: s?.recorded === true ? s.cache : undefined,
    tokensIn: usage?.input,
    tokensOut: usage?.output,
    promptCacheRead: usage?.cacheRead,
    promptCacheWrite: usage?.cacheWrite,
    overheadMs: s?.overheadMs === undefined ? undefined : ms(s.overheadMs),
    upstreamMs: s === null || s === undefined ? undefined : ms(s.upstreamMs),
    durationMs: s === null || s === undefined ? ms(reply.elapsedTime) : ms(performance.now() - s.start),
    error:
      error === null || error === undefined
        ? undefined
        : String((error as { code?: unknown }).code ?? error.name),
  };
}

/** The label of the request's id in every line logged for a request. */
const REQUEST_ID_LABEL = 'requestId';

/**
 * Fastify's per-request log lines, replaced by one {@link requestLine} per request at `info`, written through
 * the gateway's logger with the request's id in it (no per-request logger is made for it: see
 * {@link requestLogger}). The level is read once: below `info` nothing per request is built.
 */
export class RequestLog extends LogController {
  /** Whether request lines are written. */
  readonly on: boolean;
  readonly #logger: Logger;

  constructor(logger: Logger) {
    super({ requestIdLogLabel: REQUEST_ID_LABEL });
    this.#logger = logger;
    this.on = logger.isLevelEnabled('info');
  }

  override incomingRequest(): void {}

  override requestCompleted(
    error: Error | null | undefined,
    request: FastifyRequest,
    reply: FastifyReply,
  ): void {
    if (this.on) this.#write(request, requestLine(request, reply, error));
  }

  /** The line of a request whose client left before its response was complete (Fastify completes none). */
  requestAborted(request: FastifyRequest, reply: FastifyReply): void {
    if (!this.on) return;
    const line = requestLine(request, reply);
    line.aborted = true;
    this.#write(request, line);
  }

  #write(request: FastifyRequest, line: RequestLine): void {
    this.#logger.info({ [REQUEST_ID_LABEL]: request.id, ...line }, 'request');
  }
}

type LogMethod = (...args: unknown[]) => void;
type Method = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';

/**
 * A request's logger (`request.log`), which Fastify makes for every request: pino's child logger, with the
 * request's id bound, is built the first time something logs through it at an enabled level. Most requests
 * log nothing of their own (their request line is written by {@link RequestLog}), and building the child
 * was about a tenth of a cached answer's instructions.
 */
class RequestLogger {
  readonly #parent: Logger;
  readonly #bindings: Record<string, unknown>;
  #child: Logger | undefined;

  constructor(parent: Logger, bindings: Record<string, unknown>) {
    this.#parent = parent;
    this.#bindings = bindings;
  }

  get level(): string {
    return (this.#child ?? this.#parent).level;
  }

  set level(level: string) {
    this.#logger().level = level;
  }

  fatal(...args: unknown[]): void {
    this.#log('fatal', args);
  }

  error(...args: unknown[]): void {
    this.#log('error', args);
  }

  warn(...args: unknown[]): void {
    this.#log('warn', args);
  }

  info(...args: unknown[]): void {
    this.#log('info', args);
  }

  debug(...args: unknown[]): void {
    this.#log('debug', args);
  }

  trace(...args: unknown[]): void {
    this.#log('trace', args);
  }

  silent(): void {}

  child(bindings: Record<string, unknown>, options?: object): Logger {
    return this.#logger().child(bindings, options);
  }

  #log(method: Method, args: unknown[]): void {
    if (this.#child === undefined && !this.#parent.isLevelEnabled(method)) return;
    const logger = this.#logger();
    (logger[method] as LogMethod).apply(logger, args);
  }

  #logger(): Logger {
    this.#child ??= this.#parent.child(this.#bindings);
    return this.#child;
  }
}

/**
 * Fastify's `childLoggerFactory`: a {@link RequestLogger}, or pino's child at once when the route sets its
 * own level or serializers.
 */
export function requestLogger(
  logger: Logger,
  bindings: Record<string, unknown>,
  options: ChildLoggerOptions,
): Logger {
  if (options.level !== undefined || options.serializers !== undefined)
    return logger.child(bindings, options);
  return new RequestLogger(logger, bindings) as unknown as Logger;
}
