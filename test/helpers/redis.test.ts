import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Cluster, Redis } from 'ioredis';
import { type RedisCluster, type RedisServer, startRedis, startRedisCluster } from './redis.ts';
import { requireBinary } from './servers.ts';

describe('the redis test helper', () => {
  let redis: RedisServer;
  before(async () => {
    redis = await startRedis();
  });
  after(() => redis.stop());

  it('starts a redis-server without persistence on a loopback port', () => {
    assert.equal(redis.cli('PING'), 'PONG');
    assert.equal(redis.cli('CONFIG', 'GET', 'save'), 'save');
    assert.match(redis.cli('CONFIG', 'GET', 'appendonly'), /appendonly\nno/);
    assert.equal(redis.url, `redis://127.0.0.1:${redis.port}`);
  });

  it('kills the server as a crash would and restarts it on the same port, empty', async () => {
    redis.cli('SET', 'k', 'v');
    await redis.kill();
    assert.throws(() => redis.cli('PING'));
    await redis.restart();
    assert.equal(redis.cli('PING'), 'PONG');
    assert.equal(redis.cli('EXISTS', 'k'), '0');
  });

  it('lets a client reconnect by itself after a restart', async () => {
    const client = new Redis(redis.url, { retryStrategy: () => 50, maxRetriesPerRequest: 1 });
    client.on('error', () => {});
    try {
      assert.equal(await client.ping(), 'PONG');
      await redis.kill();
      await redis.restart();
      for (let i = 0; i < 100 && client.status !== 'ready'; i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal(await client.set('after', '1'), 'OK');
    } finally {
      client.disconnect();
    }
  });
});

describe('the redis cluster test helper', () => {
  let cluster: RedisCluster;
  before(async () => {
    cluster = await startRedisCluster(3);
  });
  after(() => cluster.stop());

  it('joins three masters that share all 16384 slots', () => {
    const info = cluster.nodes[0]!.cli('CLUSTER', 'INFO');
    assert.match(info, /cluster_state:ok/);
    assert.match(info, /cluster_slots_assigned:16384/);
    assert.match(info, /cluster_known_nodes:3/);
  });

  it('serves a cluster client whose keys spread over the masters', async () => {
    const client = new Cluster(cluster.startupNodes);
    try {
      for (let i = 0; i < 30; i++) await client.set(`key:${i}`, String(i));
      assert.equal(await client.get('key:7'), '7');
      const perNode = cluster.nodes.map((n) => Number(n.cli('DBSIZE')));
      assert.equal(
        perNode.reduce((a, b) => a + b, 0),
        30,
      );
      assert.ok(perNode.filter((n) => n > 0).length > 1, `keys per master: ${perNode.join(', ')}`);
    } finally {
      await client.quit();
    }
  });
});

describe('requireBinary', () => {
  it('fails naming the Debian package when a server binary is missing', () => {
    assert.throws(
      () => requireBinary('clawperf-no-such-server', 'clawperf-pkg'),
      /Debian package "clawperf-pkg"/,
    );
  });
});
