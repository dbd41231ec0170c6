import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type RedisServer, startRedis } from '../helpers/redis.ts';
import { freePort } from '../helpers/servers.ts';
import { type FakeAnthropic, startFakeAnthropic } from './fake-anthropic.ts';

const root = new URL('../..', import.meta.url).pathname;
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'clawperf-check-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Runs `clawperf gateway check` from source, as a user would, with only `env` besides PATH. */
async function check(args: string[], env: NodeJS.ProcessEnv = {}) {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/gateway/main.ts', 'check', ...args], {
    cwd: root,
    env: { PATH: process.env.PATH, XDG_CACHE_HOME: join(dir, 'xdg'), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c) => {
    stdout += c;
  });
  child.stderr.on('data', (c) => {
    stderr += c;
  });
  const [code] = await once(child, 'exit');
  return { code: code as number, stdout, stderr };
}

/** An OpenAI-shaped upstream that lists its models only for the key `good-key`. */
async function keyedUpstream(): Promise<{ server: Server; url: string }> {
  const server = createServer((req, res) => {
    const ok = req.url === '/v1/models' && req.headers.authorization === 'Bearer good-key';
    res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json' });
    res.end(ok ? '{"object":"list","data":[]}' : '{"error":{"message":"bad key"}}');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1` };
}

describe('clawperf gateway check', () => {
  it('exits 0 on a valid configuration', async () => {
    const r = await check(['--cache-dir', join(dir, 'cache'), '--limits', 'rpm=60']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /the configuration is valid/);
  });

  it('lists every problem of the file, the environment and the flags, and exits 2', async () => {
    const file = join(dir, 'bad.yaml');
    await writeFile(
      file,
      [
        'port: eighty',
        'bogus: 1',
        'limits: { rpm: -1 }',
        'promptCache: { nope: 1 }',
        'deployments:',
        '  - { name: a, api: openai, baseUrl: "http://127.0.0.1:9/v1", models: [m] }',
        '',
      ].join('\n'),
    );
    const blocker = join(dir, 'a-file');
    await writeFile(blocker, '');
    const r = await check(
      [
        '--config',
        file,
        '--max-concurrency',
        '0',
        '--upstream',
        'http://127.0.0.1:9/v1',
        '--host',
        '0.0.0.0',
        '--cache-dir',
        join(blocker, 'cache'),
        '--no-such-flag',
        'x',
      ],
      { CLAWPERF_LOG_LEVEL: 'loud' },
    );
    assert.equal(r.code, 2);
    const expected = [
      /--max-concurrency: must be an integer >= 1, got 0/,
      /--no-such-flag: unknown flag/,
      /port: must be an integer/,
      /bogus: unknown setting/,
      /limits\.rpm: must be an integer >= 1, got -1/,
      /promptCache\.nope: unknown setting/,
      /CLAWPERF_LOG_LEVEL: must be one of trace, debug, info/,
      /deployments\[0\]: a serves openai models, which --upstream already serves/,
      /cacheDir: .* is not a directory/,
      /host: 0\.0\.0\.0 lets other machines connect, but without API keys/,
    ];
    for (const problem of expected) assert.match(r.stderr, problem);
    assert.match(r.stderr, new RegExp(`^clawperf gateway check: ${expected.length} problems\n`));
  });

  it('explains itself with --help', async () => {
    const r = await check(['--help']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /Usage: clawperf gateway check \[options\] \[--connect\]/);
  });
});

describe('clawperf gateway check --connect', () => {
  let redis: RedisServer;
  let anthropic: FakeAnthropic;
  let upstream: { server: Server; url: string };
  before(async () => {
    redis = await startRedis();
    anthropic = await startFakeAnthropic();
    upstream = await keyedUpstream();
  });
  after(async () => {
    await redis.stop();
    await anthropic.close();
    upstream.server.close();
  });

  const deployments = (keys: string[]) =>
    JSON.stringify([
      { name: 'openai-keyed', api: 'openai', baseUrl: upstream.url, apiKeys: keys, models: ['gpt-x'] },
      {
        name: 'claude',
        api: 'anthropic',
        baseUrl: anthropic.url,
        apiKeys: ['ant-key'],
        models: ['claude-x'],
      },
    ]);

  it('reaches Redis and every deployment with each of its keys, and exits 0', async () => {
    const r = await check([
      '--connect',
      '--cache-dir',
      'off',
      '--redis',
      redis.url,
      '--deployments',
      deployments(['good-key']),
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /reached redis \(redis:\/\/127\.0\.0\.1:\d+\)/);
    assert.match(r.stdout, /openai-keyed \(http:\/\/127\.0\.0\.1:\d+\/v1\)/);
    assert.match(r.stdout, /claude \(http:\/\/127\.0\.0\.1:\d+\)/);
    assert.ok(
      anthropic.requests.some((q) => q.path === '/v1/models' && q.headers['x-api-key'] === 'ant-key'),
    );
  });

  it('lists what it cannot reach and the keys refused, and exits 2', async () => {
    const closed = await freePort();
    const r = await check([
      '--connect',
      '--cache-dir',
      'off',
      '--redis',
      `redis://127.0.0.1:${await freePort()}`,
      '--anthropic-upstream',
      `http://127.0.0.1:${closed}`,
      '--deployments',
      JSON.stringify([
        {
          name: 'openai-keyed',
          api: 'openai',
          baseUrl: upstream.url,
          apiKeys: ['good-key', 'bad-key'],
          models: ['gpt-x'],
        },
      ]),
    ]);
    assert.equal(r.code, 2, r.stdout);
    assert.match(r.stderr, /3 problems/);
    assert.match(r.stderr, /redisUrl: cannot reach redis:\/\/127\.0\.0\.1:\d+: .*ECONNREFUSED/);
    assert.match(
      r.stderr,
      /anthropicUpstreamUrl: cannot reach anthropic-default \(http:\/\/127\.0\.0\.1:\d+\): ECONNREFUSED/,
    );
    assert.match(
      r.stderr,
      /deployments\[0\]\.apiKeys\[1\]: openai-keyed \(http:\/\/127\.0\.0\.1:\d+\/v1\) refuses the key \(HTTP 401\)/,
    );
    assert.ok(!r.stderr.includes('bad-key'), 'a key is never printed');
  });
});
