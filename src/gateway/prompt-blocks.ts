/**
 * A request's prompt as the provider's prompt cache sees it: a sequence of blocks in cache order (tools,
 * then the system prompt or instructions, then each message or input item; for Anthropic each content block
 * of a message), each with a hash of its content, the hash of the whole prefix up to it, its estimated
 * tokens, and whether the client marked it as an Anthropic cache breakpoint (`cache_control`). The prompt
 * cache simulation of `local-chat` and the session break detector read prompts through this one view.
 *
 * @module
 */

import { isObject, type Json } from './context.ts';
import { CHARS_PER_TOKEN } from './openai.ts';
import type { Api } from './upstream-interface.ts';

/** What part of the prompt a block is. */
export type BlockKind = 'tools' | 'system' | 'message';

/** One block of a prompt. */
export interface PromptBlock {
  kind: BlockKind;
  /** The block's own content hash (53 bits). */
  hash: number;
  /** The hash of every block up to and including this one (53 bits). */
  prefix: number;
  /** Estimated tokens of the block. */
  tokens: number;
  /** An Anthropic `cache_control` breakpoint ends at this block. */
  breakpoint: boolean;
}

/**
 * The hash of a block's content without its `cache_control` marker (which does not change what it says),
 * and the characters the model reads in it. A plain text block is hashed as its role, type and text,
 * without JSON and without joining them (a joined string would be hashed a character at a time through its
 * parts).
 */
function content(block: unknown): { hash: number; chars: number } {
  if (typeof block === 'string') return { hash: hash53(block), chars: block.length };
  if (isObject(block) && typeof block.text === 'string' && plainText(block)) {
    const role = typeof block.role === 'string' ? block.role : '';
    const text = block.text;
    const h = fnv(fnv(fnv(FNV_OFFSET, role), '\u0001text\u0001'), text);
    const length = role.length + 6 + text.length;
    return { hash: (length % 0x200000) * TWO_32 + (h >>> 0), chars: text.length };
  }
  let json: string;
  if (isObject(block) && 'cache_control' in block) {
    const { cache_control: _marker, ...rest } = block;
    json = JSON.stringify(rest);
  } else json = JSON.stringify(block);
  return { hash: hash53(json), chars: json.length };
}

/** A text block with nothing but its role, type, text and marker. */
function plainText(block: Json): boolean {
  if (block.type !== 'text') return false;
  for (const key in block) {
    if (key !== 'role' && key !== 'type' && key !== 'text' && key !== 'cache_control') return false;
  }
  return true;
}

/** The parts of a request body in cache order, each with its kind. */
function parts(api: Api, body: Json): { kind: BlockKind; block: unknown }[] {
  const out: { kind: BlockKind; block: unknown }[] = [];
  if (Array.isArray(body.tools)) for (const tool of body.tools) out.push({ kind: 'tools', block: tool });
  if (api === 'anthropic') {
    const system = body.system;
    if (typeof system === 'string') out.push({ kind: 'system', block: system });
    else if (Array.isArray(system)) for (const b of system) out.push({ kind: 'system', block: b });
    for (const m of Array.isArray(body.messages) ? body.messages : []) {
      if (!isObject(m)) continue;
      if (Array.isArray(m.content)) {
        // The role opens the message: the same blocks under another role are another prompt.
        for (const [i, b] of m.content.entries()) {
          out.push({ kind: 'message', block: i === 0 && isObject(b) ? { role: m.role, ...b } : b });
        }
      } else {
        // A string is one text block to Anthropic, and caches as one.
        out.push({ kind: 'message', block: { role: m.role, type: 'text', text: m.content } });
      }
    }
    return out;
  }
  if (typeof body.instructions === 'string') out.push({ kind: 'system', block: body.instructions });
  const messages = Array.isArray(body.messages) ? body.messages : undefined;
  const input = body.input;
  for (const m of messages ?? (Array.isArray(input) ? input : typeof input === 'string' ? [input] : [])) {
    const system = isObject(m) && (m.role === 'system' || m.role === 'developer');
    out.push({ kind: system ? 'system' : 'message', block: m });
  }
  return out;
}

/** FNV-1a over the UTF-16 code units of `text`, continuing from `h`. */
function fnv(h: number, text: string): number {
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return h;
}

const FNV_OFFSET = 0x811c9dc5;
const TWO_32 = 0x100000000;

/**
 * A 53-bit hash of `text`: FNV-1a over its UTF-16 code units in the low 32 bits, its length in the high 21.
 * Not cryptographic: it tells prompt blocks apart for the cache simulation and break detection, where a
 * collision (two blocks of the same length and the same 32-bit hash) costs one missed report, and it is
 * several times cheaper than a digest per block.
 */
export function hash53(text: string): number {
  return (text.length % 0x200000) * TWO_32 + (fnv(FNV_OFFSET, text) >>> 0);
}

/** The hash of a prefix extended by a block of hash `hash`, without making a string. */
function extend(prefix: number, hash: number): number {
  const low = Math.imul((prefix % TWO_32) ^ (hash % TWO_32), 0x01000193);
  const high = Math.imul(Math.floor(prefix / TWO_32) ^ Math.floor(hash / TWO_32) ^ (low >>> 11), 0x5bd1e995);
  return (high & 0x1fffff) * TWO_32 + (low >>> 0);
}

/** The blocks of a request body of `api`, in the order the provider caches them. */
export function promptBlocks(api: Api, body: Json): PromptBlock[] {
  const blocks: PromptBlock[] = [];
  let prefix = 0;
  for (const { kind, block } of parts(api, body)) {
    const { hash, chars } = content(block);
    prefix = extend(prefix, hash);
    blocks.push({
      kind,
      hash,
      prefix,
      tokens: Math.ceil(chars / CHARS_PER_TOKEN),
      breakpoint: isObject(block) && isObject(block.cache_control),
    });
  }
  return blocks;
}
