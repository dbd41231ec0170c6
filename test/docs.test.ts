/**
 * The documentation's code runs. Every ```ts block of the pages below is written to its own file, with the
 * `clawperf` imports pointed at src/ (through the package.json "exports" map) and every other package import
 * resolved from this repository, and run as a program with `node --import tsx`: it must exit 0, by itself,
 * within the time limit. The blocks get real servers through the environment they read (REDIS_URL,
 * DATABASE_URL, INFLUX_URL, and an OTLP/HTTP endpoint that accepts every export), PORT=0 and METRICS_PORT=0
 * so the servers they start take free ports, and XDG_CACHE_HOME in a temp directory so the gateway's disk
 * cache stays out of the user's home.
 *
 * A block that cannot run here (it calls a paid provider, say) carries `<!-- not run: reason -->` on the line
 * before its fence; it is not run, and the reason is required.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { type InfluxServer, startInfluxDB } from './helpers/influxdb.ts';
import { type PostgresServer, startPostgres } from './helpers/postgres.ts';
import { type RedisServer, startRedis } from './helpers/redis.ts';

/** The pages whose snippets are self-contained library usage (not the gateway CLI, shell or YAML). */
const PAGES = [
  'docs/concurrency.md',
  'docs/rate-limiting.md',
  'docs/resources.md',
  'docs/cache.md',
  'docs/cache-consistency.md',
  'docs/cache-policies.md',
  'docs/gateway.md',
  'docs/observability.md',
  'docs/tracing.md',
];
/** Longest run of one snippet, tsx's compile included. */
const SNIPPET_TIMEOUT_MS = 15_000;
/** Blocks marked `not run` across all pages: a handful at most, or the docs stop proving anything. */
const MAX_NOT_RUN = 3;

const root = fileURLToPath(new URL('..', import.meta.url));

interface Block {
  page: string;
  /** 1-based line of the opening fence. */
  line: number;
  code: string;
  /** Set when the block carries `<!-- not run: reason -->`. */
  notRun?: string;
}

const NOT_RUN = /^<!--\s*not run\b:?\s*(.*?)\s*-->$/;

/** The ```ts blocks of a page. */
function extractBlocks(page: string, markdown: string): Block[] {
  const lines = markdown.split('\n');
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (!/^```ts\s*$/.test(lines[i]!)) continue;
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length && !/^```\s*$/.test(lines[i]!); i++) body.push(lines[i]!);
    assert.ok(i < lines.length, `${page}:${start + 1}: the code block is never closed`);
    let before = start - 1;
    while (before >= 0 && lines[before]!.trim() === '') before--;
    const marker = before >= 0 ? lines[before]!.trim() : '';
    const block: Block = { page, line: start + 1, code: body.join('\n') };
    const notRun = NOT_RUN.exec(marker);
    if (notRun !== null) block.notRun = notRun[1]!;
    blocks.push(block);
  }
  return blocks;
}

const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as {
  name: string;
  exports: Record<string, string | { default: string }>;
};

/** `clawperf/cache` -> the file URL of src/cache/index.ts, as the "exports" map points dist/ at it. */
function sourceEntry(specifier: string): string {
  const subpath = specifier === pkg.name ? '.' : `.${specifier.slice(pkg.name.length)}`;
  const target = pkg.exports[subpath];
  assert.ok(target !== undefined, `${specifier} is not in package.json "exports"`);
  const built = typeof target === 'string' ? target : target.default;
  const source = built.replace(/^\.\/dist\//, 'src/').replace(/\.js$/, '.ts');
  return pathToFileURL(join(root, source)).href;
}

/**
 * Points every import of the snippet at an absolute URL, so it runs from a temp directory: the package's own
 * specifiers at src/, other packages at this repository's node_modules.
 */
function rewriteImports(code: string): string {
  return code.replace(
    /(\bfrom\s+|\bimport\s+|\bimport\()(['"])([^'"]+)\2/g,
    (whole, keyword: string, quote: string, specifier: string) => {
      if (specifier.startsWith('node:') || specifier.startsWith('.') || specifier.startsWith('/'))
        return whole;
      const url =
        specifier === pkg.name || specifier.startsWith(`${pkg.name}/`)
          ? sourceEntry(specifier)
          : import.meta.resolve(specifier);
      return `${keyword}${quote}${url}${quote}`;
    },
  );
}

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  output: string;
}

/** Runs `file` with tsx; kills it when it has not exited after SNIPPET_TIMEOUT_MS. */
function runSnippet(file: string, env: NodeJS.ProcessEnv): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', file], {
      cwd: root,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk) => {
      output += chunk;
    });
    child.stderr.on('data', (chunk) => {
      output += chunk;
    });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, SNIPPET_TIMEOUT_MS);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, timedOut, output });
    });
  });
}

const blocks: Block[] = [];
for (const page of PAGES) blocks.push(...extractBlocks(page, await readFile(join(root, page), 'utf8')));

describe('documentation snippets', () => {
  let dir: string;
  let redis: RedisServer;
  let postgres: PostgresServer;
  let influx: InfluxServer;
  let env: NodeJS.ProcessEnv;
  // Stands in for an OpenTelemetry collector: accepts every OTLP/HTTP export.
  const collector: Server = createServer((req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'));
  });
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'clawperf-docs-'));
    collector.listen(0, '127.0.0.1');
    await once(collector, 'listening');
    [redis, postgres, influx] = await Promise.all([startRedis(), startPostgres(), startInfluxDB()]);
    await influx.query('CREATE DATABASE clawperf');
    env = {
      REDIS_URL: redis.url,
      DATABASE_URL: postgres.url,
      INFLUX_URL: influx.url,
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `http://127.0.0.1:${(collector.address() as AddressInfo).port}/v1/traces`,
      XDG_CACHE_HOME: join(dir, 'cache'),
      PORT: '0',
      METRICS_PORT: '0',
    };
  });
  after(async () => {
    collector.close();
    await Promise.all([redis?.stop(), postgres?.stop(), influx?.stop()]);
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it('every page has ts blocks, and the few not run each give a reason', () => {
    for (const page of PAGES) {
      assert.ok(
        blocks.some((b) => b.page === page),
        `${page} has no ts block`,
      );
    }
    const notRun = blocks.filter((b) => b.notRun !== undefined);
    assert.ok(
      notRun.length <= MAX_NOT_RUN,
      `${notRun.length} blocks are marked not run: ${notRun.map((b) => `${b.page}:${b.line}`).join(', ')}`,
    );
    for (const b of notRun)
      assert.ok(b.notRun!.length > 0, `${b.page}:${b.line}: "not run" without a reason`);
  });

  for (const block of blocks) {
    if (block.notRun !== undefined) continue;
    it(`${block.page}:${block.line} runs and exits by itself`, async () => {
      const file = join(dir, `${block.page.replace(/\W/g, '-')}-${block.line}.mts`);
      await writeFile(file, rewriteImports(block.code));
      // Redis is flushed between blocks, so no block sees another's keys, limits or cached values.
      redis.cli('FLUSHALL');
      const run = await runSnippet(file, env);
      assert.ok(
        !run.timedOut,
        `${block.page}:${block.line} did not exit within ${SNIPPET_TIMEOUT_MS} ms (a timer, socket or server left open?)\n${run.output}`,
      );
      assert.equal(
        run.code,
        0,
        `${block.page}:${block.line} exited with ${run.code ?? run.signal}\n${run.output}`,
      );
    });
  }
});
