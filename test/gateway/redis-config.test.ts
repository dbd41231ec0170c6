/**
 * The gateway's Redis settings: the URL forms it accepts (one server or a Cluster, TLS or not, an ACL user)
 * and the CA file, from flags, the environment and a config file; anything else stops startup naming it.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ConfigError } from '../../src/errors.ts';
import { helpText, loadConfig, resolveConfig } from '../../src/gateway/config.ts';

const root = new URL('../..', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'clawperf-redis-config-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const PEM = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

/** Asserts `fn` throws a ConfigError for `setting` whose message matches `message`. */
function refused(fn: () => unknown, setting: string, message: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof ConfigError, `expected ConfigError, got ${String(error)}`);
    assert.equal(error.setting, setting);
    assert.match(error.message, message);
    return true;
  });
}

describe('the Redis URL forms', () => {
  it('takes one server and a Cluster by its seeds, TLS or not, with an ACL user, from each source', () => {
    const forms = [
      'redis://127.0.0.1:6379',
      'rediss://app:secret@redis.example.com:6380/1',
      'redis+cluster://10.0.0.1:7000,10.0.0.2:7000,10.0.0.3:7000',
      'rediss+cluster://app:s%40cret@a.example.com:6379,b.example.com:6379',
    ];
    for (const url of forms) {
      assert.equal(loadConfig(['--redis', url], {}).redisUrl, url);
      assert.equal(loadConfig([], { REDIS_URL: url }).redisUrl, url);
      assert.equal(loadConfig(['--config', file('r.yaml', `redisUrl: "${url}"\n`)], {}).redisUrl, url);
      assert.equal(resolveConfig({ redisUrl: url }).redisUrl, url);
    }
  });

  it('refuses anything else, naming the setting, saying what is wrong and masking the password', () => {
    const bad: [string, RegExp][] = [
      ['http://h:6379', /unknown scheme/],
      ['redis://a:1,b:2', /several hosts need redis\+cluster/],
      ['redis+cluster://a:1,:2', /bad host ":2"/],
      ['rediss+cluster://app:hunter2@a:1/2', /a Cluster URL ends after its hosts/],
    ];
    for (const [url, why] of bad) {
      for (const [load, setting] of [
        [() => loadConfig(['--redis', url], {}), '--redis'],
        [() => loadConfig([], { REDIS_URL: url }), 'REDIS_URL'],
        [() => resolveConfig({ redisUrl: url }), 'redisUrl'],
      ] as const) {
        refused(load, setting, why);
        assert.throws(load, (error: Error) => !error.message.includes('hunter2'));
      }
    }
  });
});

describe('the Redis CA file', () => {
  it('is read from --redis-ca-file, CLAWPERF_REDIS_CA_FILE and the config file (redisCaFile or redis.caFile)', () => {
    const ca = file('ca.pem', PEM);
    const url = 'rediss://h:6380';
    assert.equal(loadConfig(['--redis', url, '--redis-ca-file', ca], {}).redisCaFile, ca);
    assert.equal(loadConfig([], { REDIS_URL: url, CLAWPERF_REDIS_CA_FILE: ca }).redisCaFile, ca);
    const flat = file('flat.yaml', `redisUrl: ${url}\nredisCaFile: ${ca}\n`);
    assert.equal(loadConfig(['--config', flat], {}).redisCaFile, ca);
    const grouped = file('grouped.yaml', `redis:\n  caFile: ${ca}\nredisUrl: ${url}\n`);
    assert.equal(loadConfig(['--config', grouped], {}).redisCaFile, ca);
    assert.match(helpText(), /--redis-ca-file <value>\s+CLAWPERF_REDIS_CA_FILE/);
  });

  it('needs a TLS URL, a readable file and a PEM certificate in it', () => {
    const ca = file('ca2.pem', PEM);
    refused(() => loadConfig(['--redis-ca-file', ca], {}), 'redisCaFile', /needs a rediss:\/\//);
    refused(
      () => loadConfig(['--redis', 'redis+cluster://a:1', '--redis-ca-file', ca], {}),
      'redisCaFile',
      /needs a rediss:\/\//,
    );
    refused(
      () => loadConfig(['--redis', 'rediss://a:1', '--redis-ca-file', join(dir, 'none.pem')], {}),
      'redisCaFile',
      /cannot read/,
    );
    refused(
      () => resolveConfig({ redisUrl: 'rediss://a:1', redisCaFile: file('junk.pem', 'not a cert') }),
      'redisCaFile',
      /holds no PEM certificate/,
    );
  });
});

describe('clawperf gateway with a malformed Redis setting', () => {
  it('exits 2 naming the setting', async () => {
    for (const [args, named] of [
      [['--redis', 'redis://a:1,b:2'], /invalid setting --redis: must be a redis:\/\//],
      [['--redis', 'rediss://a:1', '--redis-ca-file', join(dir, 'none.pem')], /invalid setting redisCaFile/],
    ] as const) {
      const child = spawn(process.execPath, ['--import', 'tsx', 'src/gateway/main.ts', ...args], {
        cwd: root,
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let err = '';
      child.stderr.on('data', (chunk) => {
        err += chunk;
      });
      const [code] = await once(child, 'exit');
      assert.equal(code, 2, err);
      assert.match(err, named);
    }
  });
});
