/**
 * Profiling over HTTP, for an operator with a token: `/debug/pprof/profile?seconds=` (CPU profile),
 * `/debug/pprof/heap` (heap snapshot, or `?seconds=` for a sampling heap profile) and `/debug/eventloop`.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { ProfilerBusyError } from '../errors.ts';
import * as check from '../internal/options.ts';
import { PerformanceProfiler } from './profiler.ts';

/** Default length of a CPU or sampling heap profile requested without `seconds`. @default 10 */
export const DEFAULT_PROFILE_SECONDS = 10;
/** Longest profile a request may ask for. @default 60 */
export const DEFAULT_MAX_PROFILE_SECONDS = 60;
/** Default window of `/debug/eventloop`. @default 1 */
export const DEFAULT_EVENTLOOP_SECONDS = 1;

export interface ProfilingHandlerOptions {
  /**
   * The bearer token requests must carry (`Authorization: Bearer <token>`). Without one every endpoint is
   * disabled (404): profiling is never open by accident.
   */
  token?: string;
  /** The profiler to drive. @default a new PerformanceProfiler, closed by `close()` */
  profiler?: PerformanceProfiler;
  /** Longest `seconds` a request may ask for. @default 60 */
  maxProfileSeconds?: number;
}

/** A node:http handler for the profiling endpoints, with `close()`. */
export interface ProfilingHandler {
  (req: IncomingMessage, res: ServerResponse): Promise<void>;
  /** Closes the profiler it created (a given one is left to its owner). */
  close(): Promise<void>;
}

const PATHS = new Set(['/debug/pprof/profile', '/debug/pprof/heap', '/debug/eventloop']);

/** True for the paths the profiling handler serves, so a server can route `/debug/*` to it. */
export function isProfilingPath(url: string | undefined): boolean {
  return PATHS.has((url ?? '').split('?', 1)[0] ?? '');
}

/**
 * Creates the profiling request handler. Every request needs `Authorization: Bearer <token>` (compared in
 * constant time); a missing or wrong token gets 401. A second profile while one runs gets 409.
 *
 * @example
 * const debug = createProfilingHandler({ token: process.env.CLAWPERF_DEBUG_TOKEN });
 * http.createServer((req, res) => (isProfilingPath(req.url) ? debug(req, res) : app(req, res)));
 * // curl -H "Authorization: Bearer $TOKEN" 'http://host/debug/pprof/profile?seconds=10' > cpu.cpuprofile
 */
export function createProfilingHandler(options: ProfilingHandlerOptions = {}): ProfilingHandler {
  const o = check.object<ProfilingHandlerOptions>('options', options);
  if (o.token !== undefined) check.string('options.token', o.token);
  if (o.profiler !== undefined) {
    check.instance('options.profiler', o.profiler, PerformanceProfiler, 'a PerformanceProfiler');
  }
  const maxSeconds = check.number(
    'options.maxProfileSeconds',
    o.maxProfileSeconds ?? DEFAULT_MAX_PROFILE_SECONDS,
  );
  const expected = o.token === undefined ? undefined : digest(o.token);
  const owned = o.profiler === undefined;
  let profiler: PerformanceProfiler | undefined = o.profiler;

  const handler = (async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (expected === undefined) {
      return send(res, 404, 'profiling endpoints are disabled: no token is configured\n');
    }
    const auth = req.headers.authorization ?? '';
    const given = auth.startsWith('Bearer ') ? auth.slice(7) : '';
    if (!timingSafeEqual(digest(given), expected)) {
      res.setHeader('www-authenticate', 'Bearer');
      return send(res, 401, 'a valid bearer token is required\n');
    }
    if (!PATHS.has(url.pathname)) return send(res, 404, 'not found\n');
    if (req.method !== 'GET') {
      res.setHeader('allow', 'GET');
      return send(res, 405, 'method not allowed\n');
    }
    const secondsParam = url.searchParams.get('seconds');
    let seconds: number | undefined;
    if (secondsParam !== null) {
      seconds = Number(secondsParam);
      if (!(seconds > 0 && seconds <= maxSeconds)) {
        return send(res, 400, `seconds must be a number in (0, ${maxSeconds}], got ${secondsParam}\n`);
      }
    }
    profiler ??= new PerformanceProfiler();
    // A client that hangs up ends a running profile early instead of letting it run its full length.
    const hangup = new AbortController();
    res.once('close', () => hangup.abort());
    let running: 'cpu' | 'sampling' | undefined;
    try {
      if (url.pathname === '/debug/eventloop') {
        const lag = await profiler.measureEventLoopLag({
          durationMs: Math.round((seconds ?? DEFAULT_EVENTLOOP_SECONDS) * 1e3),
          signal: hangup.signal,
        });
        return send(res, 200, JSON.stringify(lag), 'application/json');
      }
      if (url.pathname === '/debug/pprof/profile') {
        await profiler.startCPUProfile();
        running = 'cpu';
        await sleep((seconds ?? DEFAULT_PROFILE_SECONDS) * 1e3, hangup.signal);
        running = undefined;
        const profile = await profiler.stopCPUProfile();
        res.setHeader('content-disposition', `attachment; filename="cpu-${stamp()}.cpuprofile"`);
        return send(res, 200, JSON.stringify(profile), 'application/json');
      }
      if (seconds !== undefined) {
        await profiler.startHeapSampling();
        running = 'sampling';
        await sleep(seconds * 1e3, hangup.signal);
        running = undefined;
        const profile = await profiler.stopHeapSampling();
        res.setHeader('content-disposition', `attachment; filename="heap-${stamp()}.heapprofile"`);
        return send(res, 200, JSON.stringify(profile), 'application/json');
      }
      const dir = await mkdtemp(join(tmpdir(), 'clawperf-heap-'));
      try {
        const file = await profiler.takeHeapSnapshot(dir);
        res.writeHead(200, {
          'content-type': 'application/json',
          'content-disposition': `attachment; filename="heap-${stamp()}.heapsnapshot"`,
        });
        await pipeline(createReadStream(file), res);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    } catch (error) {
      if (running === 'cpu') await profiler.stopCPUProfile().catch(() => {});
      if (running === 'sampling') await profiler.stopHeapSampling().catch(() => {});
      if (res.headersSent || hangup.signal.aborted) {
        res.destroy();
        return;
      }
      if (error instanceof ProfilerBusyError) return send(res, 409, `${error.message}\n`);
      return send(res, 500, `profiling failed: ${(error as Error).message}\n`);
    }
  }) as ProfilingHandler;
  handler.close = async () => {
    if (owned) await profiler?.close();
  };
  return handler;
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}

function send(res: ServerResponse, status: number, body: string, type = 'text/plain; charset=utf-8'): void {
  res.writeHead(status, { 'content-type': type, 'content-length': String(Buffer.byteLength(body)) });
  res.end(body);
}

function stamp(): string {
  return new Date().toISOString().replace(/[:.]/g, '');
}

/** Waits `ms`, or until the signal aborts (then rejects with its reason). */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((done, fail) => {
    if (signal.aborted) return fail(signal.reason);
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      done();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      fail(signal.reason);
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
