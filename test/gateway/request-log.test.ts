import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import Fastify from 'fastify';
import type { Logger } from 'pino';
import { request } from 'undici';
import { ConfigError } from '../../src/errors.ts';
import { createLogger, type LogLevel, requestLogger } from '../../src/gateway/request-log.ts';
import { createGateway, type Gateway } from '../../src/gateway/server.ts';
import { freePort, waitFor } from '../helpers/servers.ts';
import { type FakeAnthropic, startFakeAnthropic } from './fake-anthropic.ts';
import { type FakeUpstream, startFakeUpstream } from './fake-upstream.ts';

// biome-ignore lint/suspicious/noExplicitAny: log lines are read freely
type Line = Record<string, any>;

/** Everything a logger wrote, and a way to wait for the line that satisfies a test. */
class Capture {
  text = '';
  lines: Line[] = [];
  #waiters: { match: (line: Line) => boolean; resolve: (line: Line) => void }[] = [];

  write(chunk: string): void {
    this.text += chunk;
    for (const part of chunk.split('\n')) {
      if (part === '') continue;
      const line = JSON.parse(part) as Line;
      this.lines.push(line);
      this.#waiters = this.#waiters.filter((w) => {
        if (!w.match(line)) return true;
        w.resolve(line);
        return false;
      });
    }
  }

  /** The request line of the request `id`, once written (it is written after the response has gone). */
  request(id: string): Promise<Line> {
    const match = (line: Line) => line.msg === 'request' && line.requestId === id;
    const found = this.lines.find(match);
    if (found !== undefined) return Promise.resolve(found);
    return new Promise((resolve) => this.#waiters.push({ match, resolve }));
  }
}

const UPSTREAM_KEY = 'sk-upstream-secret-4af9';
const ANTHROPIC_KEY = 'sk-ant-secret-77c2';
const CLIENT_KEY = 'client-key-secret-31d0';
const ADMIN_TOKEN = 'admin-token-secret-9e5b';
const PROMPT = 'the launch codes are tangerine-0451';

const gateways: Gateway[] = [];
let openai: FakeUpstream;
let anthropic: FakeAnthropic;

before(async () => {
  openai = await startFakeUpstream();
  anthropic = await startFakeAnthropic();
  anthropic.usage = {
    input_tokens: 12,
    cache_creation_input_tokens: 30,
    cache_read_input_tokens: 400,
    output_tokens: 9,
  };
});

after(async () => {
  await Promise.all(gateways.map((g) => g.close()));
  await openai.close();
  await anthropic.close();
});

async function logged(logLevel: LogLevel = 'info'): Promise<{ gw: Gateway; log: Capture }> {
  const log = new Capture();
  const logger = await createLogger({ logLevel, logFormat: 'json' }, { destination: log });
  const gw = await createGateway(
    {
      cacheDir: false,
      localChatLatencyMs: 0,
      upstreamUrl: openai.url,
      upstreamApiKey: UPSTREAM_KEY,
      anthropicUpstreamUrl: anthropic.url,
      anthropicApiKey: ANTHROPIC_KEY,
      apiKeys: { [CLIENT_KEY]: 'team-a' },
      adminToken: ADMIN_TOKEN,
    },
    { logger },
  );
  gateways.push(gw);
  return { gw, log };
}

const auth = { authorization: `Bearer ${CLIENT_KEY}` };

async function post(gw: Gateway, url: string, payload: unknown, headers: Record<string, string> = auth) {
  const res = await gw.app.inject({ method: 'POST', url, payload: payload as Line, headers });
  return { status: res.statusCode, headers: res.headers, body: res.body };
}

const chat = (model: string, extra: Line = {}) => ({
  model,
  temperature: 0,
  messages: [{ role: 'user', content: PROMPT }],
  ...extra,
});

describe('a request line', () => {
  let gw: Gateway;
  let log: Capture;
  /** The same gateway over real sockets, where a client can leave. */
  let base: string;
  before(async () => {
    ({ gw, log } = await logged());
    base = await gw.app.listen({ port: 0, host: '127.0.0.1' });
  });

  it('says who asked what, where it went, how the cache did, the tokens and the times', async () => {
    const res = await post(gw, '/v1/chat/completions', chat('gpt-test'), {
      ...auth,
      'x-request-id': 'order-17',
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers['x-request-id'], 'order-17');
    const line = await log.request('order-17');
    assert.equal(line.level, 30);
    assert.ok(!Number.isNaN(Date.parse(line.time)), `time: ${line.time}`);
    assert.equal(line.tenant, 'team-a');
    assert.equal(line.method, 'POST');
    assert.equal(line.route, '/v1/chat/completions');
    assert.equal(line.model, 'gpt-test');
    assert.equal(line.deployment, 'openai-default');
    assert.equal(line.status, 200);
    assert.equal(line.cache, 'miss');
    assert.equal(line.tokensIn, 3);
    assert.equal(line.tokensOut, 5);
    assert.equal(line.overheadMs, Number(res.headers['x-clawperf-overhead-ms']));
    assert.ok(line.upstreamMs > 0);
    assert.ok(line.durationMs >= line.upstreamMs);
  });

  it('says a repeated question was a cache hit, with the tokens of the answer it got', async () => {
    const res = await post(gw, '/v1/chat/completions', chat('gpt-test'), {
      ...auth,
      'x-request-id': 'order-18',
    });
    assert.equal(res.headers['x-clawperf-cache'], 'hit');
    const line = await log.request('order-18');
    assert.equal(line.cache, 'hit');
    assert.equal(line.tokensIn, 3);
    assert.equal(line.upstreamMs, 0);
    assert.equal(line.deployment, undefined);
  });

  it('says a streamed answer replayed from the cache was a hit, with its tokens', async () => {
    const ask = (id: string) =>
      post(
        gw,
        '/v1/chat/completions',
        chat('local-chat', { stream: true, stream_options: { include_usage: true } }),
        {
          ...auth,
          'x-request-id': id,
        },
      );
    await ask('replay-1');
    const first = await log.request('replay-1');
    assert.equal(first.cache, 'miss');
    assert.equal((await ask('replay-2')).headers['x-clawperf-cache'], 'hit');
    const line = await log.request('replay-2');
    assert.equal(line.cache, 'hit');
    assert.equal(line.tokensIn, first.tokensIn);
    assert.equal(line.tokensOut, first.tokensOut);
  });

  it('gives a request without an id a new one, returned in x-request-id', async () => {
    const a = await post(gw, '/v1/embeddings', { model: 'local-embed', input: PROMPT });
    const b = await post(gw, '/v1/embeddings', { model: 'local-embed', input: PROMPT });
    const id = String(a.headers['x-request-id']);
    assert.match(id, /^[0-9a-f-]{36}$/);
    assert.notEqual(b.headers['x-request-id'], id);
    const line = await log.request(id);
    assert.equal(line.route, '/v1/embeddings');
    assert.equal(line.model, 'local-embed');
    assert.equal(line.deployment, 'local');
    assert.equal(line.cache, 'miss');
    assert.equal(typeof line.tokensIn, 'number');
    assert.equal(line.tokensOut, 0);
    assert.equal((await log.request(String(b.headers['x-request-id']))).cache, 'hit');
  });

  it('replaces a client id that is not 1-128 visible characters', async () => {
    for (const given of ['has space', 'x'.repeat(129)]) {
      const res = await post(
        gw,
        '/v1/embeddings',
        { model: 'local-embed', input: 'id' },
        {
          ...auth,
          'x-request-id': given,
        },
      );
      const id = String(res.headers['x-request-id']);
      assert.match(id, /^[0-9a-f-]{36}$/);
      await log.request(id);
    }
  });

  it("carries the provider's prompt-cache reads and writes of a streamed answer", async () => {
    const res = await post(
      gw,
      '/v1/messages',
      { model: 'claude-test', max_tokens: 50, stream: true, messages: [{ role: 'user', content: PROMPT }] },
      { 'x-api-key': CLIENT_KEY, 'anthropic-version': '2023-06-01', 'x-request-id': 'stream-1' },
    );
    assert.equal(res.status, 200);
    const line = await log.request('stream-1');
    assert.equal(line.route, '/v1/messages');
    assert.equal(line.deployment, 'anthropic-default');
    assert.equal(line.cache, 'bypass');
    assert.equal(line.tokensIn, 442);
    assert.equal(line.tokensOut, 9);
    assert.equal(line.promptCacheRead, 400);
    assert.equal(line.promptCacheWrite, 30);
  });

  it('logs refused requests and the other routes too, without a cache outcome', async () => {
    const refused = await post(gw, '/v1/chat/completions', chat('gpt-test'), {
      authorization: 'Bearer wrong-key',
      'x-request-id': 'refused-1',
    });
    assert.equal(refused.status, 401);
    const line = await log.request('refused-1');
    assert.equal(line.status, 401);
    assert.equal(line.tenant, undefined);
    assert.equal(line.cache, undefined);
    const health = await gw.app.inject({ url: '/healthz', headers: { 'x-request-id': 'health-1' } });
    assert.equal(health.statusCode, 200);
    assert.equal((await log.request('health-1')).route, '/healthz');
    await gw.app.inject({ url: '/nowhere?key=abc', headers: { 'x-request-id': 'lost-1' } });
    const lost = await log.request('lost-1');
    assert.equal(lost.status, 404);
    assert.equal(lost.route, '/nowhere');
  });

  it('logs a request whose client left before its answer was complete', async () => {
    openai.fail({ kind: 'slow', ms: 5_000 }, 1);
    const called = openai.nextCall();
    const abort = new AbortController();
    const pending = request(`${base}/v1/chat/completions`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json', 'x-request-id': 'left-1' },
      body: JSON.stringify(chat('gpt-test', { temperature: 1, stream: true })),
      signal: abort.signal,
    });
    await called;
    abort.abort();
    await assert.rejects(pending);
    const line = await log.request('left-1');
    assert.equal(line.aborted, true);
    assert.equal(line.tenant, 'team-a');
    assert.equal(line.route, '/v1/chat/completions');
    assert.equal(line.model, 'gpt-test');
  });

  it('logs the routes that take over their connection once they end', async () => {
    const res = await request(`${base}/debug/eventloop`, {
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'x-request-id': 'debug-1' },
    });
    await res.body.dump();
    assert.equal(res.statusCode, 200);
    const line = await log.request('debug-1');
    assert.equal(line.route, '/debug/eventloop');
    assert.equal(line.status, 200);
    assert.equal(line.aborted, undefined);
  });

  it('holds no prompt, no answer and no key, whatever the request', async () => {
    const ids: string[] = [];
    const send = async (url: string, payload: unknown, headers: Record<string, string>) => {
      const res = await post(gw, url, payload, headers);
      ids.push(String(res.headers['x-request-id']));
      return res;
    };
    const answer = await send('/v1/chat/completions', chat('gpt-test', { temperature: 1 }), auth);
    assert.match(answer.body, /fake answer to the launch codes/);
    await send('/v1/chat/completions', chat('local-chat', { stream: true }), auth);
    await send('/v1/embeddings', { model: 'local-embed', input: [PROMPT, `${PROMPT} again`] }, auth);
    await send(
      '/v1/messages',
      { model: 'claude-test', max_tokens: 50, messages: [{ role: 'user', content: PROMPT }] },
      { 'x-api-key': CLIENT_KEY, 'anthropic-version': '2023-06-01' },
    );
    // A body that is not JSON, a wrong key, a bad field: the error answers quote nothing into the log.
    const broken = await gw.app.inject({
      method: 'POST',
      url: '/v1/chat/completions',
      payload: `{"messages": "${PROMPT}`,
      headers: { ...auth, 'content-type': 'application/json' },
    });
    ids.push(String(broken.headers['x-request-id']));
    await send('/v1/chat/completions', chat('gpt-test'), { authorization: `Bearer ${UPSTREAM_KEY}` });
    await send('/v1/chat/completions', { model: 'gpt-test', messages: PROMPT }, auth);
    await send(
      '/admin/cache/invalidate',
      { tag: 'tenant:team-a' },
      { authorization: `Bearer ${ADMIN_TOKEN}` },
    );
    for (const id of ids) await log.request(id);
    for (const secret of [
      PROMPT,
      'tangerine',
      'fake answer',
      UPSTREAM_KEY,
      ANTHROPIC_KEY,
      CLIENT_KEY,
      ADMIN_TOKEN,
    ]) {
      assert.ok(!log.text.includes(secret), `the log holds ${secret}`);
    }
  });
});

describe("a request's own logger", () => {
  /** A logger writing into a Capture, counting the child loggers made from it. */
  async function counted(logLevel: LogLevel = 'info') {
    const log = new Capture();
    const logger = await createLogger({ logLevel, logFormat: 'json' }, { destination: log });
    const made = { children: 0 };
    const child = logger.child.bind(logger);
    logger.child = ((...args: Parameters<Logger['child']>) => {
      made.children++;
      return child(...args);
    }) as Logger['child'];
    return { log, logger, made };
  }

  it('is not built for requests that log nothing but their request line', async () => {
    const { log, logger, made } = await counted();
    const gw = await createGateway({ cacheDir: false, localChatLatencyMs: 0 }, { logger });
    gateways.push(gw);
    await gw.app.ready();
    const before = made.children;
    for (let i = 0; i < 3; i++) {
      const res = await gw.app.inject({
        method: 'POST',
        url: '/v1/chat/completions',
        payload: chat('local-chat'),
      });
      assert.equal(res.statusCode, 200);
      assert.equal((await log.request(String(res.headers['x-request-id']))).status, 200);
    }
    assert.equal(made.children, before);
  });

  it("is built once something logs through it, and its lines carry the request's id", async () => {
    const { log, logger, made } = await counted();
    const app = Fastify({
      loggerInstance: logger,
      childLoggerFactory: requestLogger as never,
      disableRequestLogging: true,
      genReqId: () => 'r-1',
    });
    app.get('/quiet', async (request) => {
      request.log.debug('below the level: nothing is built');
      return 'ok';
    });
    app.get('/loud', async (request) => {
      request.log.warn({ n: 1 }, 'hello');
      request.log.warn({ n: 2 }, 'again');
      return 'ok';
    });
    await app.ready();
    const before = made.children;
    await app.inject({ method: 'GET', url: '/quiet' });
    assert.equal(made.children, before);
    const res = await app.inject({ method: 'GET', url: '/loud' });
    assert.equal(res.statusCode, 200);
    assert.equal(made.children, before + 1);
    const hello = log.lines.filter((l) => l.msg === 'hello' || l.msg === 'again');
    assert.deepEqual(
      hello.map((l) => [l.msg, l.n, l.reqId]),
      [
        ['hello', 1, 'r-1'],
        ['again', 2, 'r-1'],
      ],
    );
    await app.close();
  });
});

describe('the log level', () => {
  it('leaves the request lines out at warn', async () => {
    const { gw, log } = await logged('warn');
    const res = await post(gw, '/v1/embeddings', { model: 'local-embed', input: 'quiet' });
    assert.equal(res.status, 200);
    assert.equal(typeof res.headers['x-request-id'], 'string');
    await gw.close();
    assert.deepEqual(
      log.lines.filter((l) => l.msg === 'request'),
      [],
    );
  });

  it('writes no request lines from a gateway built from code without a level or a logger', async () => {
    const gw = await createGateway({ cacheDir: false });
    gateways.push(gw);
    assert.equal(gw.config.logLevel, 'warn');
    assert.equal((gw.app.log as Logger).isLevelEnabled('info'), false);
    assert.equal((gw.app.log as Logger).isLevelEnabled('warn'), true);
  });
});

describe('the pretty format', () => {
  it('writes text, not JSON', async () => {
    let out = '';
    const logger = await createLogger(
      { logLevel: 'info', logFormat: 'pretty' },
      {
        destination: new Writable({
          write(chunk, _encoding, done) {
            out += chunk;
            done();
          },
        }),
      },
    );
    logger.info({ status: 200 }, 'request');
    assert.match(out, /INFO.*request/);
    assert.match(out, /"status":200/);
    assert.throws(() => JSON.parse(out));
  });

  it('asks for pino-pretty by name when it is not installed', async () => {
    const missing = Object.assign(new Error("Cannot find package 'pino-pretty'"), {
      code: 'ERR_MODULE_NOT_FOUND',
    });
    await assert.rejects(
      createLogger({ logLevel: 'info', logFormat: 'pretty' }, { loadPretty: () => Promise.reject(missing) }),
      (error: unknown) =>
        error instanceof ConfigError &&
        error.setting === 'logFormat' &&
        /npm install pino-pretty/.test(error.message) &&
        error.cause === missing,
    );
  });
});

describe('clawperf gateway on the command line', () => {
  const root = new URL('../..', import.meta.url).pathname;
  const children: ChildProcess[] = [];
  after(() => {
    for (const child of children)
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });

  /** Runs the gateway from source with `args`, sends one request, stops it, and resolves with its stderr. */
  async function oneRequest(args: string[]): Promise<{ id: string; stderr: string }> {
    const port = await freePort();
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', 'src/gateway/main.ts', '--port', String(port), '--cache-dir', 'off', ...args],
      { cwd: root, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    children.push(child);
    let stderr = '';
    child.stderr!.on('data', (c) => {
      stderr += c;
    });
    const exited = once(child, 'exit');
    const base = `http://127.0.0.1:${port}`;
    await waitFor(async () => (await request(`${base}/healthz`)).statusCode === 200, {
      what: 'the gateway to listen',
      describe: () => stderr,
    });
    const id = `cli-${port}`;
    const res = await request(`${base}/v1/embeddings`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': id },
      body: JSON.stringify({ model: 'local-embed', input: PROMPT }),
    });
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['x-request-id'], id);
    await res.body.dump();
    child.kill('SIGTERM');
    assert.deepEqual(await exited, [0, null], stderr);
    return { id, stderr };
  }

  it('logs every request as a JSON line on stderr by default', async () => {
    const { id, stderr } = await oneRequest([]);
    const lines = stderr
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Line);
    const line = lines.find((l) => l.requestId === id);
    assert.ok(line, stderr);
    assert.equal(line.msg, 'request');
    assert.equal(line.model, 'local-embed');
    assert.equal(line.tenant, 'default');
    assert.ok(!stderr.includes(PROMPT));
  });

  it('writes no request line at --log-level warn', async () => {
    const { id, stderr } = await oneRequest(['--log-level', 'warn']);
    assert.ok(!stderr.includes(id), stderr);
    assert.match(stderr, /listening on/);
  });

  it('writes text with --log-format pretty', async () => {
    const { id, stderr } = await oneRequest(['--log-format', 'pretty']);
    const line = stderr.split('\n').find((l) => l.includes(id));
    assert.ok(line !== undefined, stderr);
    assert.match(line, /INFO/);
    assert.doesNotMatch(line, /^\{/);
  });

  it('refuses an unknown level, naming the setting and the choices', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/gateway/main.ts', '--log-level', 'loud'], {
      cwd: root,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    children.push(child);
    let stderr = '';
    child.stderr!.on('data', (c) => {
      stderr += c;
    });
    const [code] = await once(child, 'exit');
    assert.equal(code, 2);
    assert.match(stderr, /invalid setting --log-level: must be one of trace, debug, info, warn/);
  });
});
