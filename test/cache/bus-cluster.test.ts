/**
 * The invalidation bus on a real Redis Cluster (3 masters, a replica each): sharded pub/sub, and a
 * subscription that comes back by itself after its connection is killed and after its master fails over.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { type BusMessage, RedisBus } from '../../src/cache/index.ts';
import { type RedisClient, releaseRedis, toRedis } from '../../src/internal/redis.ts';
import { type RedisCluster, startRedisCluster, TEST_COMMAND_TIMEOUT_MS } from '../helpers/redis.ts';

const CHANNEL = 'clawperf:test:bus';
/** Longest wait for a message or a resubscription: a failover takes the 2 s node timeout and a vote. */
const DEADLINE_MS = 15_000;

let cluster: RedisCluster;
const clients: RedisClient[] = [];
const buses: RedisBus[] = [];

before(async () => {
  cluster = await startRedisCluster(3, { replicas: 1 });
});
after(async () => {
  for (const bus of buses) await bus.close();
  for (const client of clients) await releaseRedis({ client, owned: true });
  await cluster.stop();
});

/** Resolves with the next value `subscribe` hands its callback, failing after {@link DEADLINE_MS}. */
function next<T>(what: string, subscribe: (deliver: (value: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${what} within ${DEADLINE_MS} ms`)), DEADLINE_MS);
    subscribe((value) => {
      clearTimeout(timer);
      resolve(value);
    });
  });
}

/** A node's bus, with hooks for the next message and the next reconnection. */
class Node {
  readonly bus: RedisBus;
  #onMessage: ((m: BusMessage) => void) | undefined;
  #onReconnected: (() => void) | undefined;

  private constructor(bus: RedisBus) {
    this.bus = bus;
  }

  static async start(): Promise<Node> {
    const { client } = toRedis('redis', cluster.url, TEST_COMMAND_TIMEOUT_MS);
    client.on('error', () => undefined);
    clients.push(client);
    const node = new Node(new RedisBus({ client, channel: CHANNEL }));
    buses.push(node.bus);
    await node.bus.subscribe({
      message: (m) => node.#onMessage?.(m),
      reconnected: () => node.#onReconnected?.(),
    });
    return node;
  }

  message(): Promise<BusMessage> {
    return next('bus message', (deliver) => {
      this.#onMessage = deliver;
    });
  }

  reconnected(): Promise<void> {
    return next('resubscription', (deliver) => {
      this.#onReconnected = () => deliver(undefined);
    });
  }
}

/** Publishes on `from` until `to` hears it: a publish can fail while its master is being replaced. */
async function delivered(from: Node, to: Node, message: BusMessage): Promise<void> {
  const heard = to.message();
  const deadline = Date.now() + DEADLINE_MS;
  for (;;) {
    try {
      await from.bus.publish(message);
      break;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  assert.deepEqual(await heard, message);
}

describe('the invalidation bus on a Redis Cluster', () => {
  it('uses sharded pub/sub on the master of its channel, not cluster-wide pub/sub', async () => {
    const [a, b] = [await Node.start(), await Node.start()];
    await delivered(a, b, { keys: ['k1', 'k2'] });
    await delivered(b, a, { tag: 't' });
    const owner = cluster.masterOf(CHANNEL);
    assert.equal(owner.cli('PUBSUB', 'SHARDNUMSUB', CHANNEL), `${CHANNEL}\n2`);
    for (const node of cluster.nodes) assert.equal(node.cli('PUBSUB', 'NUMSUB', CHANNEL), `${CHANNEL}\n0`);
  });

  it('resubscribes after its connection is killed, and says messages may have been lost', async () => {
    const [a, b] = [await Node.start(), await Node.start()];
    const back = Promise.all([a.reconnected(), b.reconnected()]);
    cluster.masterOf(CHANNEL).cli('CLIENT', 'KILL', 'TYPE', 'pubsub');
    await back;
    assert.equal(a.bus.reconnects, 1);
    await delivered(a, b, { keys: ['after-kill'] });
    await delivered(b, a, { all: true });
  });

  it('follows its channel to the new master after a failover', async () => {
    const [a, b] = [await Node.start(), await Node.start()];
    const old = cluster.masterOf(CHANNEL);
    const back = Promise.all([a.reconnected(), b.reconnected()]);
    await old.kill();
    await back;
    await delivered(a, b, { keys: ['after-failover'] });
    await delivered(b, a, { tag: 'after-failover' });
    assert.notEqual(cluster.masterOf(CHANNEL).port, old.port);
  });
});
