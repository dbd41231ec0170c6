/**
 * A SIMULATION of a provider's prompt cache, for `local-chat`: so the gateway's prompt-cache accounting,
 * break detection and breakpoints can be seen end to end with the embedded default. It is not a provider's
 * cache and saves nothing; it only reports the figures a provider would, by its rules, simplified:
 *
 * - **Anthropic** caches at `cache_control` breakpoints. A breakpoint reads the longest prefix written
 *   within the last {@link SIMULATED_CACHE_TTL_MS} that ends at most {@link ANTHROPIC_LOOKBACK_BLOCKS}
 *   blocks before it; the tokens from there to the last breakpoint are written; the tokens after it are
 *   not cached. Each breakpoint's prefix is then written (a read refreshes its lifetime).
 * - **OpenAI** caches automatically: the longest prefix seen within the lifetime (at a block boundary) is
 *   read; every prefix is then written, which OpenAI does not report.
 *
 * Unlike a provider it has no minimum cacheable length (1,024 tokens) and no 128-token granularity.
 *
 * @module
 */
import { LRUCache } from 'lru-cache';
import type { PromptBlock } from './prompt-blocks.ts';

/** How long a written prefix stays readable, ms (Anthropic's default lifetime). @default 300000 */
export const SIMULATED_CACHE_TTL_MS = 5 * 60_000;
/** How many blocks before a breakpoint Anthropic looks for an earlier write. @default 20 */
export const ANTHROPIC_LOOKBACK_BLOCKS = 20;
/** Prefixes remembered at once. @default 100000 */
const MAX_PREFIXES = 100_000;

/** What one request read from and wrote to the cache, in tokens; `uncached` is the rest of its input. */
export interface PromptCacheFigures {
  read: number;
  write: number;
  uncached: number;
}

const sum = (blocks: readonly PromptBlock[], from: number, to: number) => {
  let tokens = 0;
  for (let i = from; i < to; i++) tokens += blocks[i]!.tokens;
  return tokens;
};

export class SimulatedPromptCache {
  readonly #written = new LRUCache<number, true>({
    max: MAX_PREFIXES,
    ttl: SIMULATED_CACHE_TTL_MS,
    updateAgeOnGet: true,
  });

  /** Anthropic's figures for a prompt of `blocks`, and the writes they make. */
  anthropic(blocks: readonly PromptBlock[]): PromptCacheFigures {
    const breakpoints: number[] = [];
    for (let i = 0; i < blocks.length; i++) if (blocks[i]!.breakpoint) breakpoints.push(i);
    const last = breakpoints.at(-1);
    if (last === undefined) return { read: 0, write: 0, uncached: sum(blocks, 0, blocks.length) };
    let readEnd = -1;
    for (const bp of breakpoints) {
      for (let j = bp; j >= Math.max(0, bp - ANTHROPIC_LOOKBACK_BLOCKS + 1); j--) {
        if (this.#written.get(blocks[j]!.prefix) !== undefined) {
          readEnd = Math.max(readEnd, j);
          break;
        }
      }
    }
    for (const bp of breakpoints) this.#written.set(blocks[bp]!.prefix, true);
    return {
      read: sum(blocks, 0, readEnd + 1),
      write: sum(blocks, readEnd + 1, last + 1),
      uncached: sum(blocks, last + 1, blocks.length),
    };
  }

  /** OpenAI's figures for a prompt of `blocks` (its writes are not reported: `write` is 0). */
  openai(blocks: readonly PromptBlock[]): PromptCacheFigures {
    let readEnd = -1;
    for (let j = blocks.length - 1; j >= 0; j--) {
      if (this.#written.get(blocks[j]!.prefix) !== undefined) {
        readEnd = j;
        break;
      }
    }
    for (const block of blocks) this.#written.set(block.prefix, true);
    const read = sum(blocks, 0, readEnd + 1);
    return { read, write: 0, uncached: sum(blocks, readEnd + 1, blocks.length) };
  }
}

/**
 * The cached part of a prompt a local model reports as `prompt` tokens by its own estimate: the share the
 * simulation read, so the two estimates never disagree (a new message is never reported as read).
 */
export function cachedPart(figures: PromptCacheFigures, prompt: number): number {
  const total = figures.read + figures.write + figures.uncached;
  return total === 0 ? 0 : Math.floor((prompt * figures.read) / total);
}
