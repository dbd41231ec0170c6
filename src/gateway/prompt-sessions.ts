/**
 * Prompt-cache break detection per session. A session is named by the request header `x-clawperf-session`,
 * else Anthropic's `metadata.user_id`, else OpenAI's `prompt_cache_key` or `user`; a request naming none is
 * not tracked (and costs nothing). For each session of each tenant the gateway keeps only hashes of the
 * previous request's prompt blocks, and reports:
 *
 * - a **break** when a request rewrites its prefix instead of appending to it (the provider's cache of
 *   everything after the change is lost): counted per tenant, model and what changed first (`system`,
 *   `tools`, `message`), and logged once with the block index and the prefix tokens it invalidated;
 * - a **stalled breakpoint** when, over {@link STALL_TURNS} turns, cache writes keep growing with the
 *   conversation while cache reads stay flat (each turn rewrites the whole history): counted and logged once
 *   per session.
 *
 * Bounded: at most {@link DEFAULT_MAX_SESSIONS} sessions (least recently used dropped) and the first
 * {@link MAX_SESSION_BLOCKS} blocks of each, about 3 KB a session. Logs name a session by a hash of its id.
 *
 * @module
 */
import { createHash } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { LRUCache } from 'lru-cache';
import { Counter, type Registry } from 'prom-client';
import type { TokenUsage } from '../tracing/index.ts';
import { type BlockKind, type PromptBlock, promptBlocks } from './prompt-blocks.ts';
import type { Api } from './upstream-interface.ts';

/** The request header naming a session. */
export const SESSION_HEADER = 'x-clawperf-session';
/** Sessions tracked at once. @default 10000 */
export const DEFAULT_MAX_SESSIONS = 10_000;
/** Blocks of a prompt compared per session. @default 256 */
export const MAX_SESSION_BLOCKS = 256;
/** Turns over which a stalled breakpoint is seen. @default 4 */
export const STALL_TURNS = 4;

const KINDS: readonly BlockKind[] = ['tools', 'system', 'message'];

/** What a session keeps of its last request. */
interface Session {
  /** The prefix hash at each block. */
  prefixes: Float64Array;
  tokens: Uint32Array;
  kinds: Uint8Array;
  length: number;
  /** Cache reads and writes of the last turns, oldest first. */
  turns: { read: number; write: number }[];
  stallReported: boolean;
}

/** A structured event for the gateway's log. */
export type PromptEvent = Record<string, unknown> & { event: string };

/** The session a request belongs to, if it names one. */
export function sessionOf(
  headers: IncomingHttpHeaders,
  api: Api,
  body: Record<string, unknown>,
): string | undefined {
  const header = headers[SESSION_HEADER];
  if (typeof header === 'string' && header !== '') return header;
  if (api === 'anthropic') {
    const user = (body.metadata as { user_id?: unknown } | undefined)?.user_id;
    return typeof user === 'string' && user !== '' ? user : undefined;
  }
  for (const field of ['prompt_cache_key', 'user']) {
    const v = body[field];
    if (typeof v === 'string' && v !== '') return v;
  }
  return undefined;
}

/** What the tracker needs of one answered request. */
export interface PromptTurn {
  tenant: string;
  session: string;
  api: Api;
  model: string;
  /** The body sent upstream. */
  body: Record<string, unknown>;
  usage: TokenUsage | undefined;
}

export class PromptSessions {
  readonly #sessions: LRUCache<string, Session>;
  readonly #breaks: Counter;
  readonly #stalls: Counter;
  readonly #log: (event: PromptEvent) => void;

  constructor(options: { registry: Registry; log: (event: PromptEvent) => void; maxSessions?: number }) {
    this.#sessions = new LRUCache({ max: options.maxSessions ?? DEFAULT_MAX_SESSIONS });
    this.#log = options.log;
    this.#breaks = new Counter({
      name: 'clawperf_gateway_prompt_cache_breaks_total',
      help: 'Requests that rewrote their session prefix instead of appending to it, by what changed first',
      labelNames: ['tenant', 'model', 'changed'],
      registers: [options.registry],
    });
    this.#stalls = new Counter({
      name: 'clawperf_gateway_prompt_cache_stalled_sessions_total',
      help: 'Sessions whose cache writes kept growing while cache reads stayed flat (a stalled breakpoint)',
      labelNames: ['tenant', 'model'],
      registers: [options.registry],
    });
  }

  /** Sessions tracked now. */
  get size(): number {
    return this.#sessions.size;
  }

  /** Compares a turn with its session's last one, and keeps its hashes for the next. */
  observe(turn: PromptTurn): void {
    const blocks = promptBlocks(turn.api, turn.body);
    const key = `${turn.tenant}\u0000${turn.session}`;
    const previous = this.#sessions.get(key);
    const session = previous ?? {
      prefixes: new Float64Array(MAX_SESSION_BLOCKS),
      tokens: new Uint32Array(MAX_SESSION_BLOCKS),
      kinds: new Uint8Array(MAX_SESSION_BLOCKS),
      length: 0,
      turns: [],
      stallReported: false,
    };
    if (previous !== undefined) this.#compare(turn, session, blocks);
    session.length = Math.min(blocks.length, MAX_SESSION_BLOCKS);
    for (let i = 0; i < session.length; i++) {
      const block = blocks[i]!;
      session.prefixes[i] = block.prefix;
      session.tokens[i] = block.tokens;
      session.kinds[i] = KINDS.indexOf(block.kind);
    }
    if (previous === undefined) this.#sessions.set(key, session);
    if (turn.usage !== undefined) this.#watchStall(turn, session, turn.usage);
  }

  #compare(turn: PromptTurn, session: Session, blocks: readonly PromptBlock[]): void {
    const shared = Math.min(session.length, blocks.length);
    for (let i = 0; i < shared; i++) {
      if (session.prefixes[i] === blocks[i]!.prefix) continue;
      let invalidated = 0;
      for (let j = i; j < session.length; j++) invalidated += session.tokens[j]!;
      const changed = blocks[i]!.kind;
      this.#breaks.labels({ tenant: turn.tenant, model: turn.model, changed }).inc();
      this.#log({
        event: 'prompt_cache_break',
        tenant: turn.tenant,
        model: turn.model,
        session: sessionHash(turn.session),
        changed,
        block: i,
        invalidated_tokens: invalidated,
      });
      return;
    }
  }

  #watchStall(turn: PromptTurn, session: Session, usage: TokenUsage): void {
    const turns = session.turns;
    turns.push({ read: usage.cacheRead ?? 0, write: usage.cacheWrite ?? 0 });
    if (turns.length > STALL_TURNS) turns.shift();
    if (session.stallReported || turns.length < STALL_TURNS) return;
    for (let i = 1; i < turns.length; i++) {
      const grew = turns[i]!.write > turns[i - 1]!.write;
      const flat = turns[i]!.read <= turns[0]!.read;
      if (!grew || !flat) return;
    }
    session.stallReported = true;
    this.#stalls.labels({ tenant: turn.tenant, model: turn.model }).inc();
    this.#log({
      event: 'prompt_cache_stalled',
      tenant: turn.tenant,
      model: turn.model,
      session: sessionHash(turn.session),
      turns: turns.map((t) => ({ read: t.read, write: t.write })),
    });
  }
}

/** How logs name a session: the first 12 characters of the SHA-256 of its id. */
export function sessionHash(session: string): string {
  return createHash('sha256').update(session).digest('hex').slice(0, 12);
}
