/**
 * A request's prompt as the provider's prompt cache sees it: a sequence of blocks in cache order (tools,
 * then the system prompt or instructions, then each message or input item; for Anthropic each content block
 * of a message), each with a hash of its content, the hash of the whole prefix up to it, its estimated
 * tokens, and whether the client marked it as an Anthropic cache breakpoint (`cache_control`). The prompt
 * cache simulation of `local-chat` and the session break detector read prompts through this one view.
 *
 * @module
 */
import { createHash } from 'node:crypto';
import { CHARS_PER_TOKEN } from './openai.ts';
import type { Api } from './upstream-interface.ts';

/** What part of the prompt a block is. */
export type BlockKind = 'tools' | 'system' | 'message';

/** One block of a prompt. */
export interface PromptBlock {
  kind: BlockKind;
  /** The block's own content hash (hex, 16 characters). */
  hash: string;
  /** The hash of every block up to and including this one. */
  prefix: string;
  /** Estimated tokens of the block. */
  tokens: number;
  /** An Anthropic `cache_control` breakpoint ends at this block. */
  breakpoint: boolean;
}

type Json = Record<string, unknown>;

const isObject = (value: unknown): value is Json =>
  value !== null && typeof value === 'object' && !Array.isArray(value);

/** A block's content without its `cache_control` marker, which does not change what it says. */
function content(block: unknown): string {
  if (typeof block === 'string') return block;
  if (isObject(block) && 'cache_control' in block) {
    const { cache_control: _marker, ...rest } = block;
    return JSON.stringify(rest);
  }
  return JSON.stringify(block);
}

function textChars(block: unknown): number {
  if (typeof block === 'string') return block.length;
  if (isObject(block) && typeof block.text === 'string') return block.text.length;
  return JSON.stringify(block).length;
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

/** The blocks of a request body of `api`, in the order the provider caches them. */
export function promptBlocks(api: Api, body: Json): PromptBlock[] {
  const blocks: PromptBlock[] = [];
  let prefix = '';
  for (const { kind, block } of parts(api, body)) {
    const hash = createHash('sha1').update(content(block)).digest('hex').slice(0, 16);
    prefix = createHash('sha1').update(prefix).update(hash).digest('hex').slice(0, 16);
    blocks.push({
      kind,
      hash,
      prefix,
      tokens: Math.ceil(textChars(block) / CHARS_PER_TOKEN),
      breakpoint: isObject(block) && isObject(block.cache_control),
    });
  }
  return blocks;
}
