import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ConfigError } from '../../src/errors.ts';
import {
  DEFAULT_BODY_LIMIT_BYTES,
  DEFAULT_HOST,
  DEFAULT_LOCAL_CHAT_LATENCY_MS,
  DEFAULT_PORT,
  defaultCacheDir,
  helpText,
  loadConfig,
  resolveConfig,
} from '../../src/gateway/config.ts';

const dir = mkdtempSync(join(tmpdir(), 'clawperf-config-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

function configError(fn: () => unknown, setting: string | RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof ConfigError, `expected ConfigError, got ${String(error)}`);
    if (typeof setting === 'string') assert.equal(error.setting, setting);
    else assert.match(error.setting, setting);
    return true;
  });
}

describe('defaults', () => {
  it('serves on 127.0.0.1:8787 with the local models, no limits and a 10 MB body limit', () => {
    const c = loadConfig([], {});
    assert.equal(c.port, DEFAULT_PORT);
    assert.equal(c.port, 8787);
    assert.equal(c.host, DEFAULT_HOST);
    assert.equal(c.upstreamUrl, undefined);
    assert.equal(c.redisUrl, undefined);
    assert.equal(c.limits, undefined);
    assert.equal(c.localChatLatencyMs, DEFAULT_LOCAL_CHAT_LATENCY_MS);
    assert.equal(c.localChatLatencyMs, 50);
    assert.equal(c.bodyLimitBytes, DEFAULT_BODY_LIMIT_BYTES);
    assert.equal(c.bodyLimitBytes, 10 * 1024 * 1024);
    assert.deepEqual(c.apiKeys, {});
    assert.equal(c.help, false);
  });

  it('puts the disk cache under $XDG_CACHE_HOME/clawperf, else ~/.cache/clawperf', () => {
    assert.equal(defaultCacheDir({ XDG_CACHE_HOME: '/x/cache' }), '/x/cache/clawperf');
    assert.match(defaultCacheDir({}), /\.cache\/clawperf$/);
    assert.equal(loadConfig([], { XDG_CACHE_HOME: '/x/cache' }).cacheDir, '/x/cache/clawperf');
  });
});

describe('sources and precedence', () => {
  it('reads every documented environment variable', () => {
    const c = loadConfig([], {
      PORT: '9000',
      HOST: '0.0.0.0',
      REDIS_URL: 'redis://127.0.0.1:6380',
      UPSTREAM_URL: 'https://api.openai.com/v1/',
      UPSTREAM_API_KEY: 'sk-up',
      CACHE_DIR: '/tmp/c',
      CLAWPERF_ADMIN_TOKEN: 'admin',
      GATEWAY_API_KEYS: 'k1:alice, k2:bob',
      CLAWPERF_LOCAL_CHAT_LATENCY_MS: '0',
      CLAWPERF_LIMITS: 'rpm=60,tpm=90000',
    });
    assert.equal(c.port, 9000);
    assert.equal(c.host, '0.0.0.0');
    assert.equal(c.redisUrl, 'redis://127.0.0.1:6380');
    assert.equal(c.upstreamUrl, 'https://api.openai.com/v1');
    assert.equal(c.upstreamApiKey, 'sk-up');
    assert.equal(c.cacheDir, '/tmp/c');
    assert.equal(c.adminToken, 'admin');
    assert.deepEqual(c.apiKeys, { k1: 'alice', k2: 'bob' });
    assert.equal(c.localChatLatencyMs, 0);
    assert.deepEqual(c.limits, { rpm: 60, tpm: 90000 });
  });

  it('lets flags override the environment, and the environment override the config file', () => {
    const yaml = file(
      'a.yaml',
      'port: 7000\nhost: 127.0.0.2\nlimits:\n  rpm: 5\napiKeys:\n  key-a: team-a\n',
    );
    const c = loadConfig(['--config', yaml, '--port=7002'], { PORT: '7001', HOST: '127.0.0.3' });
    assert.equal(c.port, 7002);
    assert.equal(c.host, '127.0.0.3');
    assert.deepEqual(c.limits, { rpm: 5 });
    assert.deepEqual(c.apiKeys, { 'key-a': 'team-a' });
  });

  it('reads a JSON config file too, and --limits, --redis, --upstream', () => {
    const json = file('a.json', JSON.stringify({ cacheDir: 'off', localChatLatencyMs: 5 }));
    const c = loadConfig(
      [
        '--config',
        json,
        '--limits',
        'tpm=100',
        '--redis',
        'redis://h:1',
        '--upstream',
        'http://localhost:11434/v1',
      ],
      {},
    );
    assert.equal(c.cacheDir, false);
    assert.equal(c.localChatLatencyMs, 5);
    assert.deepEqual(c.limits, { tpm: 100 });
    assert.equal(c.redisUrl, 'redis://h:1');
    assert.equal(c.upstreamUrl, 'http://localhost:11434/v1');
  });

  it('reads the Anthropic upstream (a trailing /v1 dropped) and the prompt-cache group of a file', () => {
    const yaml = file(
      'pc.yaml',
      'anthropicUpstreamUrl: https://api.anthropic.com/v1/\npromptCache:\n  autoBreakpoints: true\n  maxSessions: 50\n',
    );
    const c = loadConfig(['--config', yaml], { ANTHROPIC_API_KEY: 'sk-ant' });
    assert.equal(c.anthropicUpstreamUrl, 'https://api.anthropic.com');
    assert.equal(c.anthropicApiKey, 'sk-ant');
    assert.equal(c.promptCacheAutoBreakpoints, true);
    assert.equal(c.promptCacheMaxSessions, 50);
    assert.equal(
      loadConfig(['--prompt-cache-auto-breakpoints', 'off', '--config', yaml], {}).promptCacheAutoBreakpoints,
      false,
    );
    assert.equal(
      loadConfig([], { CLAWPERF_PROMPT_CACHE_AUTO_BREAKPOINTS: 'on' }).promptCacheAutoBreakpoints,
      true,
    );
    assert.equal(loadConfig([], {}).promptCacheAutoBreakpoints, false);
  });

  it('takes a number of workers or auto (one per core), and refuses fewer than one', () => {
    assert.equal(loadConfig([], {}).workers, 1);
    assert.equal(loadConfig(['--workers', '3'], {}).workers, 3);
    assert.equal(loadConfig(['--workers', 'auto'], {}).workers, availableParallelism());
    assert.equal(loadConfig([], { CLAWPERF_WORKERS: 'AUTO' }).workers, availableParallelism());
    assert.throws(() => loadConfig(['--workers', '0'], {}), /--workers/);
    assert.throws(() => loadConfig(['--workers', 'many'], {}), /--workers/);
  });

  it('recognises --help', () => {
    assert.equal(loadConfig(['--help'], {}).help, true);
  });
});

describe('validation names the setting', () => {
  it('rejects a bad port from flag, environment and file', () => {
    configError(() => loadConfig(['--port', 'eighty'], {}), '--port');
    configError(() => loadConfig([], { PORT: '70000' }), 'PORT');
    configError(() => loadConfig(['--config', file('p.yaml', 'port: -1\n')], {}), 'port');
  });

  it('rejects bad URLs, limits, keys, integers and empty strings', () => {
    configError(() => loadConfig([], { REDIS_URL: 'http://not-redis' }), 'REDIS_URL');
    configError(() => loadConfig(['--upstream', 'not a url'], {}), '--upstream');
    configError(() => loadConfig(['--limits', 'rpm=ten'], {}), '--limits.rpm');
    configError(() => loadConfig(['--limits', 'qps=3'], {}), '--limits');
    configError(() => loadConfig([], { GATEWAY_API_KEYS: 'no-tenant' }), 'GATEWAY_API_KEYS');
    configError(
      () => loadConfig([], { CLAWPERF_LOCAL_CHAT_LATENCY_MS: '-5' }),
      'CLAWPERF_LOCAL_CHAT_LATENCY_MS',
    );
    configError(() => loadConfig(['--admin-token='], {}), '--admin-token');
  });

  it('rejects unknown flags, unknown file keys, missing values and unreadable files', () => {
    configError(() => loadConfig(['--prot', '1'], {}), '--prot');
    configError(() => loadConfig(['--config', file('u.yaml', 'prot: 1\n')], {}), 'prot');
    configError(() => loadConfig(['--port'], {}), '--port');
    configError(() => loadConfig(['--config', join(dir, 'missing.yaml')], {}), 'config');
    configError(() => loadConfig(['--config', file('bad.yaml', 'port: [1\n')], {}), 'config');
    configError(() => loadConfig(['--config', file('list.yaml', '- 1\n')], {}), 'config');
    configError(() => loadConfig(['--config', file('l.yaml', 'limits:\n  rpm: 0\n')], {}), 'limits.rpm');
    configError(
      () => loadConfig(['--config', file('g.yaml', 'promptCache:\n  autoBreakpoint: true\n')], {}),
      'promptCache.autoBreakpoint',
    );
    configError(
      () => loadConfig(['--prompt-cache-auto-breakpoints', 'maybe'], {}),
      '--prompt-cache-auto-breakpoints',
    );
  });

  it('validates deployments, naming the entry and the field', () => {
    const yaml = (text: string) => ['--config', file('d.yaml', text)];
    const ok = loadConfig(
      yaml(
        'deployments:\n  - name: a\n    api: openai\n    baseUrl: https://api.openai.com/v1/\n    apiKeys: [sk-1, sk-2]\n    models: [gpt-4o-mini]\n    weight: 3\n  - name: b\n    api: anthropic\n    baseUrl: https://api.anthropic.com/v1\n    models: { claude: claude-sonnet-4-5 }\n    priority: 1\n    maxConcurrency: 8\n',
      ),
      {},
    );
    assert.equal(ok.deployments.length, 2);
    assert.deepEqual(ok.deployments[0]!.models, { 'gpt-4o-mini': 'gpt-4o-mini' });
    assert.equal(ok.deployments[0]!.baseUrl, 'https://api.openai.com/v1');
    assert.equal(ok.deployments[0]!.maxConcurrency, 'adaptive');
    assert.equal(ok.deployments[1]!.baseUrl, 'https://api.anthropic.com');
    assert.deepEqual(ok.deployments[1]!.models, { claude: 'claude-sonnet-4-5' });
    const entry = (fields: string) =>
      yaml(
        `deployments:\n  - name: a\n    api: openai\n    baseUrl: http://x/v1\n    models: [m]\n${fields}`,
      );
    configError(() => loadConfig(entry('    weight: 0\n'), {}), 'deployments[0].weight');
    configError(() => loadConfig(entry('    api2: x\n'), {}), 'deployments[0].api2');
    configError(
      () => loadConfig(entry('    providerLimits: { qps: 3 }\n'), {}),
      'deployments[0].providerLimits.qps',
    );
    configError(() => loadConfig(entry('    maxConcurrency: lots\n'), {}), 'deployments[0].maxConcurrency');
    configError(
      () => loadConfig(yaml('deployments:\n  - name: a\n    api: grpc\n'), {}),
      'deployments[0].api',
    );
    configError(
      () =>
        loadConfig(yaml('deployments:\n  - { name: a, api: openai, baseUrl: "http://x", models: [] }\n'), {}),
      'deployments[0].models',
    );
    configError(
      () =>
        loadConfig(
          yaml(
            'deployments:\n  - { name: a, api: openai, baseUrl: "http://x", models: [m] }\n  - { name: a, api: openai, baseUrl: "http://y", models: [m] }\n',
          ),
          {},
        ),
      'deployments[1].name',
    );
    // The single upstream of an API serves every model: a deployment of that API beside it is an error.
    configError(() => loadConfig([...entry(''), '--upstream', 'http://u/v1'], {}), 'deployments[0]');
    configError(() => loadConfig(['--deployments', '[{"name":"a"}'], {}), '--deployments');
  });

  it('validates a programmatic configuration the same way', () => {
    assert.equal(resolveConfig({ port: 0 }).port, 0);
    configError(() => resolveConfig({ port: 1.5 }), 'port');
    configError(() => resolveConfig({ nope: 1 } as never), 'nope');
    assert.deepEqual(resolveConfig({ limits: 'rpm=3' as never }).limits, { rpm: 3 });
  });
});

describe('--help', () => {
  it('lists every setting with its flag, environment variable and default', () => {
    const text = helpText();
    for (const word of [
      '--port',
      'PORT',
      '8787',
      '--host',
      '127.0.0.1',
      '--redis',
      'REDIS_URL',
      '--upstream',
      'UPSTREAM_URL',
      'UPSTREAM_API_KEY',
      'CACHE_DIR',
      '$XDG_CACHE_HOME/clawperf',
      'CLAWPERF_ADMIN_TOKEN',
      'GATEWAY_API_KEYS',
      'CLAWPERF_LOCAL_CHAT_LATENCY_MS',
      '--limits',
      '--config',
      '10485760',
      '--drain-timeout-ms',
      'local-embed',
      'local-chat',
    ]) {
      assert.ok(text.includes(word), `help lacks ${word}`);
    }
  });
});
