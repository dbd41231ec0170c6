import assert from 'node:assert/strict';
import { once } from 'node:events';
import { type AddressInfo, createServer, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Cluster, Redis } from 'ioredis';
import {
  DEFAULT_REDIS_COMMAND_TIMEOUT_MS,
  hashTag,
  parseRedisUrl,
  RedisScript,
  releaseRedis,
  toRedis,
  watchConnection,
  whenConnected,
} from '../../src/internal/redis.ts';
import { type RedisServer, startRedis } from '../helpers/redis.ts';

describe('internal redis', () => {
  let redis: RedisServer;
  before(async () => {
    redis = await startRedis();
  });
  after(() => redis.stop());

  it('runs a script by SHA, loading it on the first NOSCRIPT', async () => {
    const owned = toRedis('options.redis', redis.url);
    try {
      await whenConnected(owned.client, 1_000);
      const incr = new RedisScript("return redis.call('INCRBY', KEYS[1], ARGV[1])");
      redis.cli('SCRIPT', 'FLUSH');
      assert.equal(await incr.run(owned.client, ['n'], [2]), 2);
      assert.equal(redis.cli('SCRIPT', 'EXISTS', incr.sha), '1');
      assert.equal(await incr.run(owned.client, ['n'], [3]), 5);
    } finally {
      await releaseRedis(owned);
    }
  });

  it('surfaces script errors other than NOSCRIPT', async () => {
    const owned = toRedis('options.redis', redis.url);
    try {
      await whenConnected(owned.client, 1_000);
      await assert.rejects(
        new RedisScript("return redis.call('NOPE')").run(owned.client, [], []),
        /Unknown Redis command|unknown command/i,
      );
    } finally {
      await releaseRedis(owned);
    }
  });

  it("closes the clients it creates, and never the user's", async () => {
    const mine = new Redis(redis.url);
    const given = toRedis('options.redis', mine);
    assert.equal(given.owned, false);
    await releaseRedis(given);
    assert.equal(await mine.ping(), 'PONG');
    await mine.quit();
    const created = toRedis('options.redis', redis.url);
    assert.equal(created.owned, true);
    await whenConnected(created.client, 1_000);
    await created.client.ping();
    await releaseRedis(created);
    assert.equal(created.client.status, 'end');
  });

  it('fails fast: a command while the connection is down fails at once, nothing waits in a queue', async () => {
    const owned = toRedis('options.redis', 'redis://127.0.0.1:1', 60_000);
    owned.client.on('error', () => {});
    try {
      // Not even the 60 s command timeout is waited for: the test runner's timeout would end the test first.
      await assert.rejects(owned.client.get('k'), /enableOfflineQueue/);
      assert.equal((owned.client as unknown as { offlineQueue: unknown[] }).offlineQueue.length, 0);
      // Never connected, the client is waited for as a first connection: only as long as the caller says (a
      // 60 s wait here took the whole 60 s whenever the client was between two connection attempts).
      await assert.rejects(whenConnected(owned.client, 100), /not connected/);
    } finally {
      await releaseRedis(owned);
    }
  });

  it('bounds a command to a server that stopped answering by a command timeout of at most 100 ms', async () => {
    assert.ok(DEFAULT_REDIS_COMMAND_TIMEOUT_MS <= 100);
    const owned = toRedis('options.redis', redis.url);
    assert.equal((owned.client as Redis).options.commandTimeout, DEFAULT_REDIS_COMMAND_TIMEOUT_MS);
    owned.client.on('error', () => {});
    try {
      await whenConnected(owned.client, 1_000);
      // CLIENT PAUSE (from another connection) holds every command: none is answered within the timeout.
      redis.cli('CLIENT', 'PAUSE', '1000', 'ALL');
      await assert.rejects(owned.client.get('k'), /timed out/);
    } finally {
      redis.cli('CLIENT', 'UNPAUSE');
      await releaseRedis(owned);
    }
  });

  it('whenConnected waits for the first connection, then fails at once after it is lost', async () => {
    const owned = toRedis('options.redis', redis.url);
    owned.client.on('error', () => {});
    const states: boolean[] = [];
    const unwatch = watchConnection(owned.client, (up) => states.push(up));
    try {
      await whenConnected(owned.client, 1_000);
      assert.deepEqual(states, [true]);
      const closed = once(owned.client, 'close');
      redis.cli('CLIENT', 'KILL', 'TYPE', 'normal');
      await closed;
      await assert.rejects(whenConnected(owned.client, 60_000), /not connected \(/);
      await once(owned.client, 'ready');
      assert.deepEqual(states.slice(0, 2), [true, false]);
      assert.equal(states.at(-1), true);
    } finally {
      unwatch();
      await releaseRedis(owned);
    }
  });

  it('once an attempt is over, a reconnect under way is not waited for (an unreachable host)', async () => {
    // A host that accepts connections and never answers: every attempt hangs before Redis is ready.
    const sockets = new Set<Socket>();
    const hole = createServer((socket) => sockets.add(socket));
    await new Promise<void>((resolve) => hole.listen(0, '127.0.0.1', resolve));
    const { port } = hole.address() as AddressInfo;
    const owned = toRedis('options.redis', `redis://127.0.0.1:${port}`, 1_000);
    owned.client.on('error', () => {});
    try {
      // The first attempt is waited for, as long as the caller says.
      await assert.rejects(whenConnected(owned.client, 50), /within 50 ms/);
      const closed = once(owned.client, 'close');
      const retried = once(hole, 'connection');
      for (const socket of sockets) socket.destroy();
      await closed;
      await retried;
      assert.match(owned.client.status, /connect/);
      // The next attempt hangs like the first; a caller is not made to wait for it.
      await assert.rejects(whenConnected(owned.client, 60_000), /not connected \(connect/);
    } finally {
      await releaseRedis(owned);
      for (const socket of sockets) socket.destroy();
      hole.close();
    }
  });

  it('rejects anything but a client or a Redis URL, naming the option', () => {
    assert.throws(
      () => toRedis('options.redis', 'localhost:6379'),
      /options\.redis must be a redis:\/\/, rediss:\/\/, redis\+cluster:\/\/, rediss\+cluster:\/\/ or redis\+unix:\/\/ URL/,
    );
    assert.throws(
      () => toRedis('options.redis', 42),
      /options\.redis must be an ioredis Redis or Cluster instance or a redis:\/\//,
    );
  });

  it('makes a Cluster client from a cluster URL, with the ACL user and TLS on every node', async () => {
    const owned = toRedis('options.redis', 'rediss+cluster://app:s%40cret@10.0.0.1:7000,10.0.0.2', 1_000, {
      ca: 'PEM',
    });
    try {
      assert.ok(owned.client instanceof Cluster);
      assert.deepEqual((owned.client as unknown as { startupNodes: unknown }).startupNodes, [
        { host: '10.0.0.1', port: 7000 },
        { host: '10.0.0.2', port: 6379 },
      ]);
      const node = owned.client.options.redisOptions!;
      assert.equal(node.username, 'app');
      assert.equal(node.password, 's@cret');
      const ca = (node.tls as { ca: string[] }).ca;
      assert.equal(ca.at(-1), 'PEM', 'the given CA');
      assert.ok(ca.length > 1, "and Node's own CAs");
      assert.equal(node.commandTimeout, 1_000);
      assert.equal(owned.client.options.enableOfflineQueue, false);
    } finally {
      await releaseRedis(owned);
    }
  });

  it('connects to the database a one-server URL names', async () => {
    const owned = toRedis('options.redis', `${redis.url}/3`);
    try {
      await whenConnected(owned.client, 2_000);
      await owned.client.set('in-db-3', 'yes');
      assert.equal(redis.cli('-n', '3', 'GET', 'in-db-3'), 'yes');
    } finally {
      await releaseRedis(owned);
    }
  });

  it('refuses a CA for a URL without TLS', () => {
    assert.throws(
      () => toRedis('options.redis', 'redis://127.0.0.1:1', undefined, { ca: 'PEM' }),
      /options\.redis must be a rediss:\/\/ or rediss\+cluster:\/\/ URL when a CA is given/,
    );
  });
});

describe('parseRedisUrl', () => {
  it('reads one server, over TLS or not, and a Cluster by its seeds', () => {
    assert.deepEqual(parseRedisUrl('u', 'redis://h:6380/2'), {
      cluster: false,
      tls: false,
      nodes: [{ host: 'h', port: 6380 }],
      username: undefined,
      password: undefined,
      db: 2,
    });
    assert.deepEqual(parseRedisUrl('u', 'rediss://:pw@h'), {
      cluster: false,
      tls: true,
      nodes: [{ host: 'h', port: 6379 }],
      username: undefined,
      password: 'pw',
      db: 0,
    });
    assert.deepEqual(parseRedisUrl('u', 'redis+cluster://a:1,[::1]:2,b/'), {
      cluster: true,
      tls: false,
      nodes: [
        { host: 'a', port: 1 },
        { host: '::1', port: 2 },
        { host: 'b', port: 6379 },
      ],
      username: undefined,
      password: undefined,
      db: 0,
    });
    assert.equal(parseRedisUrl('u', 'rediss+cluster://u:p@a:1').tls, true);
    assert.equal(parseRedisUrl('u', 'redis://u:p/@ss@h:1').password, 'p/@ss');
  });

  it('names the setting and what is wrong, and never shows the password', () => {
    const cases: [string, RegExp][] = [
      ['http://h:1', /unknown scheme/],
      ['redis://h:1,h:2', /several hosts need redis\+cluster/],
      ['redis+cluster://a:1,,b:2', /bad host ""/],
      ['redis+cluster://a:99999', /bad host "a:99999"/],
      ['redis+cluster://u:hunter2@a:1/3', /a Cluster URL ends after its hosts/],
      ['redis://h:1/x', /unexpected "\/x" after the host/],
      ['redis://h:1/0?family=6', /unexpected "\/0\?family=6" after the host/],
      ['redis://u:hunter2/@h:1,h:2', /several hosts/],
      ['redis+cluster://u:hun@ter2@a:1,b:x', /bad host "b:x"/],
    ];
    for (const [url, why] of cases) {
      assert.throws(
        () => parseRedisUrl('REDIS_URL', url),
        (error: Error) => {
          assert.ok(error instanceof TypeError);
          assert.match(error.message, /^REDIS_URL must be a redis:\/\/, rediss:\/\//);
          assert.match(error.message, why);
          assert.doesNotMatch(error.message, /hunter2/);
          return true;
        },
        url,
      );
    }
  });

  it('builds hash tags that braces inside an id cannot break', () => {
    assert.equal(hashTag('user:1'), '{user:1}');
    assert.equal(hashTag('a}b{c'), '{a_b_c}');
  });
});
