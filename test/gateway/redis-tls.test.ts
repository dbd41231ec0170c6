/**
 * Gateway processes on Redis as managed services run it: TLS with a certificate of a private CA (here a
 * self-signed one made with openssl, given with --redis-ca-file) and an ACL user (the default user off), on
 * one server and on a 3-master Cluster whose cluster bus uses TLS too.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type GatewayProcess, startGatewayProcess } from '../helpers/gateway-process.ts';
import {
  type AclUser,
  makeCertificate,
  type RedisCluster,
  type RedisServer,
  startRedis,
  startRedisCluster,
  TEST_COMMAND_TIMEOUT_MS,
  type TestCertificate,
} from '../helpers/redis.ts';
import { waitFor } from '../helpers/servers.ts';

const user: AclUser = { name: 'clawperf-app', password: randomBytes(12).toString('hex') };
let dir: string;
let cert: TestCertificate;
const stops: (() => Promise<void>)[] = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'clawperf-redis-tls-'));
  cert = await makeCertificate(dir);
});
after(async () => {
  for (const stop of stops.reverse()) await stop();
  await rm(dir, { recursive: true, force: true });
});

async function gateway(url: string, trustCa = true): Promise<GatewayProcess> {
  const gw = await startGatewayProcess([
    '--redis',
    url,
    ...(trustCa ? ['--redis-ca-file', cert.cert] : []),
    '--redis-command-timeout-ms',
    String(TEST_COMMAND_TIMEOUT_MS),
    '--admin-token',
    'admin',
  ]);
  stops.push(() => gw.stop());
  return gw;
}

async function redisState(gw: GatewayProcess, state: 'up' | 'down'): Promise<void> {
  await waitFor(async () => (await gw.get('/readyz')).body.redis === state, {
    what: `redis ${state} in /readyz`,
    describe: gw.output,
  });
}

const chat = (content: string) => ({
  model: 'local-chat',
  temperature: 0,
  messages: [{ role: 'user', content }],
});

/**
 * `a` answers and stores in Redis (`exists` says when the entry is there); `b` is served that answer from
 * Redis; an invalidation on `a` reaches `b` over the bus.
 */
async function sharedOverTls(
  a: GatewayProcess,
  b: GatewayProcess,
  exists: (name: string) => boolean,
): Promise<void> {
  const first = await a.post('/v1/chat/completions', chat('over tls'));
  assert.equal(first.headers['x-clawperf-cache'], 'miss');
  const key = String(first.headers['x-clawperf-cache-key']);
  await waitFor(() => exists(`clawperf:gw:e:{${key}}`), { what: 'the answer in Redis' });
  const second = await b.post('/v1/chat/completions', chat('over tls'));
  assert.equal(second.headers['x-clawperf-cache'], 'hit');
  assert.deepEqual(second.body, first.body);

  const heard = await b.metric('clawperf_cache_bus_received_total');
  const inv = await a.post('/admin/cache/invalidate', { key }, { authorization: 'Bearer admin' });
  assert.equal(inv.status, 200);
  await waitFor(async () => (await b.metric('clawperf_cache_bus_received_total')) > heard, {
    what: 'the invalidation to reach the other node',
  });
  assert.equal((await b.post('/v1/chat/completions', chat('over tls'))).headers['x-clawperf-cache'], 'miss');
}

describe('on one Redis server with TLS and an ACL user', () => {
  let redis: RedisServer;
  before(async () => {
    redis = await startRedis({ tls: cert, user });
    stops.push(() => redis.stop());
  });

  it('two gateways given rediss://user:password@ and the CA share answers and invalidations', async () => {
    assert.match(redis.url, /^rediss:\/\/clawperf-app:/);
    const [a, b] = await Promise.all([gateway(redis.url), gateway(redis.url)]);
    await Promise.all([redisState(a, 'up'), redisState(b, 'up')]);
    await sharedOverTls(a, b, (name) => redis.cli('EXISTS', name) === '1');
  });

  it('without the CA the certificate is not trusted, and Redis is down while the gateway serves', async () => {
    const gw = await gateway(redis.url, false);
    await redisState(gw, 'down');
    assert.equal((await gw.post('/v1/chat/completions', chat('no ca'))).status, 200);
  });
});

describe('on a Redis Cluster with TLS and an ACL user', () => {
  let cluster: RedisCluster;
  before(async () => {
    cluster = await startRedisCluster(3, { tls: cert, user });
    stops.push(() => cluster.stop());
  });

  it('two gateways given rediss+cluster://user:password@seeds and the CA share answers and invalidations', async () => {
    assert.match(
      cluster.url,
      /^rediss\+cluster:\/\/clawperf-app:[0-9a-f]+@127\.0\.0\.1:\d+,127\.0\.0\.1:\d+/,
    );
    const [a, b] = await Promise.all([gateway(cluster.url), gateway(cluster.url)]);
    await Promise.all([redisState(a, 'up'), redisState(b, 'up')]);
    await sharedOverTls(a, b, (name) => cluster.masterOf(name).cli('EXISTS', name) === '1');
  });
});
