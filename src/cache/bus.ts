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
}

/**
 * The invalidation bus on Redis pub/sub. Each instance has its own random node id and ignores its own
 * messages. When the subscriber's connection drops and comes back, the listener hears `reconnected()`, since
 * whatever was published meanwhile is lost.
 */
export class RedisBus implements InvalidationBus {
  readonly nodeId: string;
  readonly #client: RedisClient;
  readonly #channel: string;
  #subscriber: RedisClient | undefined;
  #closed = false;
  #received = 0;
  #published = 0;
  #reconnects = 0;

  constructor(options: RedisBusOptions) {
    check.object('options', options);
    this.#client = options.client;
    this.#channel = check.string('options.channel', options.channel);
    this.nodeId = options.nodeId ?? randomUUID();
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
    // A subscribed connection can do nothing else, so it gets its own; it must queue its SUBSCRIBE until
    // connected and resubscribe after every reconnect.
    const subscriber =
      this.#client instanceof Cluster
        ? this.#client.duplicate([], {
            enableOfflineQueue: true,
            redisOptions: { ...this.#client.options.redisOptions, commandTimeout: undefined },
          })
        : // A subscription is a standing state, not a command to time out: its (re)SUBSCRIBE waits for the
          // connection however long that takes, and no timeout of it can fire with nobody to catch it.
          this.#client.duplicate({
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
    subscriber.on('message', (channel: string, text: string) => {
      if (channel !== this.#channel) return;
      let wire: Wire;
      try {
        wire = JSON.parse(text) as Wire;
      } catch {
        return;
      }
      if (wire.n === this.nodeId) return;
      this.#received++;
      if (wire.a === 1) listener.message({ all: true });
      else if (typeof wire.t === 'string') listener.message({ tag: wire.t });
      else if (Array.isArray(wire.k)) listener.message({ keys: wire.k });
    });
    await subscriber.subscribe(this.#channel);
  }

  async publish(message: BusMessage): Promise<void> {
    const wire: Wire = { n: this.nodeId };
    if ('all' in message) wire.a = 1;
    else if ('tag' in message) wire.t = message.tag;
    else wire.k = [...message.keys];
    await this.#client.publish(this.#channel, JSON.stringify(wire));
    this.#published++;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const subscriber = this.#subscriber;
    if (subscriber === undefined) return;
    try {
      await subscriber.quit();
    } catch {
      subscriber.disconnect();
    }
  }
}
