import { randomUUID } from 'node:crypto';
import { Cluster } from 'ioredis';
import { StoreError } from '../errors.ts';
import * as check from '../internal/options.ts';
import type { RedisClient } from '../internal/redis.ts';

/** What one node tells the others: drop these keys, everything with this tag, or everything. */
export type BusMessage = { keys: readonly string[] } | { tag: string } | { all: true };

/** Receives what other nodes published, and hears when messages may have been lost. */
export interface BusListener {
  message(message: BusMessage): void;
  /** The subscription was down for a while: messages sent meanwhile are lost. */
  reconnected(): void;
}

/** How nodes tell each other to drop their in-memory copies. Messages carry keys or tags, never values. */
export interface InvalidationBus {
  /** This node's id; messages from it are not delivered back to it. */
  readonly nodeId: string;
  /** Starts delivering other nodes' messages to `listener`. */
  subscribe(listener: BusListener): Promise<void>;
  publish(message: BusMessage): Promise<void>;
  close(): Promise<void>;
}

export interface RedisBusOptions {
  /** Client to publish with; the bus subscribes on its own duplicate of it. Not closed by the bus. */
  client: RedisClient;
  /** Pub/sub channel shared by every node of one cache. */
  channel: string;
  /** This node's id. @default a random UUID per instance */
  nodeId?: string;
}

interface Wire {
  n: string;
  k?: string[];
  t?: string;
  a?: 1;
  /** A probe a node sends itself to learn that its subscription is live again. */
  p?: number;
}

/**
 * How often a Cluster node whose subscription dropped publishes a probe to itself until one arrives, ms.
 * @default 200
 */
export const BUS_PROBE_INTERVAL_MS = 200;

/**
 * The invalidation bus on Redis pub/sub. Each instance has its own random node id and ignores its own
 * messages. When the subscriber's connection drops and comes back, the listener hears `reconnected()`, since
 * whatever was published meanwhile is lost.
 *
 * On a Redis Cluster the bus uses sharded pub/sub (`SSUBSCRIBE`/`SPUBLISH`, Redis 7): a message goes to the
 * master that owns the channel's slot and its replicas, not over the cluster bus to every node, so the
 * Cluster's pub/sub load does not grow with its size. ioredis moves the subscription to the slot's new
 * master after a failover and back to a node that restarts. A dropped subscription is not ready again
 * when ioredis says its subscribers are (it says so after failed attempts too), so after a drop the bus
 * publishes probes to itself and reports `reconnected()` when one comes back: from then on it hears
 * every message.
 */
export class RedisBus implements InvalidationBus {
  readonly nodeId: string;
  readonly #client: RedisClient;
  readonly #channel: string;
  readonly #sharded: boolean;
  #subscriber: RedisClient | undefined;
  #closed = false;
  /** Probes sent since the subscription dropped; 0 while it is up. */
  #probe = 0;
  #probeTimer: NodeJS.Timeout | undefined;
  #received = 0;
  #published = 0;
  #reconnects = 0;

  constructor(options: RedisBusOptions) {
    check.object('options', options);
    this.#client = options.client;
    this.#channel = check.string('options.channel', options.channel);
    this.nodeId = options.nodeId ?? randomUUID();
    this.#sharded = this.#client instanceof Cluster;
  }

  /** Messages received from other nodes. */
  get received(): number {
    return this.#received;
  }

  get published(): number {
    return this.#published;
  }

  /** Times the subscription came back after a drop. */
  get reconnects(): number {
    return this.#reconnects;
  }

  async subscribe(listener: BusListener): Promise<void> {
    if (this.#subscriber !== undefined) throw new StoreError('redis', 'the bus is already subscribed');
    const deliver = (channel: string, text: string) => {
      if (channel !== this.#channel) return;
      let wire: Wire;
      try {
        wire = JSON.parse(text) as Wire;
      } catch {
        return;
      }
      if (wire.n === this.nodeId) {
        if (wire.p !== undefined && this.#probe !== 0) this.#resubscribed(listener);
        return;
      }
      if (wire.p !== undefined) return;
      this.#received++;
      if (wire.a === 1) listener.message({ all: true });
      else if (typeof wire.t === 'string') listener.message({ tag: wire.t });
      else if (Array.isArray(wire.k)) listener.message({ keys: wire.k });
    };
    if (this.#client instanceof Cluster) {
      // A subscription is a standing state, not a command to time out (see below). ioredis replaces a
      // shard's subscriber whose connection ended and sends SSUBSCRIBE again; one it replaced may have
      // missed messages.
      const subscriber = this.#client.duplicate([], {
        enableOfflineQueue: true,
        shardedSubscribers: true,
        redisOptions: { ...this.#client.options.redisOptions, commandTimeout: undefined },
      });
      this.#subscriber = subscriber;
      subscriber.on('error', () => undefined);
      subscriber.on('-subscriber', () => this.#dropped());
      subscriber.on('smessage', deliver);
      await subscriber.ssubscribe(this.#channel);
      return;
    }
    // A subscribed connection can do nothing else, so it gets its own; it must queue its SUBSCRIBE until
    // connected and resubscribe after every reconnect. A subscription is a standing state, not a command to
    // time out: its (re)SUBSCRIBE waits for the connection however long that takes, and no timeout of it can
    // fire with nobody to catch it.
    const subscriber = this.#client.duplicate({
      enableOfflineQueue: true,
      autoResubscribe: true,
      commandTimeout: undefined,
    });
    this.#subscriber = subscriber;
    let dropped = false;
    subscriber.on('error', () => undefined);
    subscriber.on('close', () => {
      dropped = true;
    });
    subscriber.on('ready', () => {
      if (!dropped || this.#closed) return;
      dropped = false;
      this.#reconnects++;
      listener.reconnected();
    });
    subscriber.on('message', deliver);
    await subscriber.subscribe(this.#channel);
  }

  /** A Cluster subscriber lost a connection: probe until the subscription is live again. */
  #dropped(): void {
    if (this.#closed || this.#probeTimer !== undefined) return;
    const send = () => {
      this.#probe++;
      const wire: Wire = { n: this.nodeId, p: this.#probe };
      this.#send(JSON.stringify(wire)).catch(() => undefined);
    };
    this.#probeTimer = setInterval(send, BUS_PROBE_INTERVAL_MS);
    this.#probeTimer.unref();
    send();
  }

  /** A probe came back: messages reach this node again, and those sent while it was away are lost. */
  #resubscribed(listener: BusListener): void {
    clearInterval(this.#probeTimer);
    this.#probeTimer = undefined;
    this.#probe = 0;
    if (this.#closed) return;
    this.#reconnects++;
    listener.reconnected();
  }

  #send(text: string): Promise<unknown> {
    return this.#sharded
      ? (this.#client as Cluster).spublish(this.#channel, text)
      : this.#client.publish(this.#channel, text);
  }

  async publish(message: BusMessage): Promise<void> {
    const wire: Wire = { n: this.nodeId };
    if ('all' in message) wire.a = 1;
    else if ('tag' in message) wire.t = message.tag;
    else wire.k = [...message.keys];
    await this.#send(JSON.stringify(wire));
    this.#published++;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#probeTimer);
    const subscriber = this.#subscriber;
    if (subscriber === undefined) return;
    try {
      await subscriber.quit();
    } catch {
      subscriber.disconnect();
    }
  }
}
