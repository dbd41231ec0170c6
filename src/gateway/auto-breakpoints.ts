/**
 * Automatic Anthropic prompt-cache breakpoints (`promptCache.autoBreakpoints`, off by default). Anthropic
 * caches a prompt only up to its `cache_control` breakpoints, and a breakpoint finds an earlier write only
 * within the {@link LOOKBACK_BLOCKS} blocks before it. A client that marks only its system prompt pays for
 * the whole conversation history as uncached input every turn; one that marks only the last message loses
 * its cache whenever a turn adds more than 20 blocks (a tool-heavy agent turn), and then rewrites the whole
 * history every turn.
 *
 * When no client marker is in the last message, this places one at the end of the prompt, so the next turn
 * reads what this one wrote. Then, while breakpoints are left (never more than Anthropic's
 * {@link MAX_BREAKPOINTS}, never removing the client's), it places more every {@link LOOKBACK_BLOCKS}
 * blocks back from the end toward the client's previous marker, so this turn finds what the last one wrote
 * however many blocks it added (up to about 20 per breakpoint left). Blocks that cannot carry
 * `cache_control` (thinking) are skipped.
 *
 * @module
 */
import { isObject, type Json } from './context.ts';

/** Breakpoints Anthropic accepts in one request. */
export const MAX_BREAKPOINTS = 4;
/** Blocks before a breakpoint Anthropic searches for an earlier write. */
export const LOOKBACK_BLOCKS = 20;

/** Block types `cache_control` may not be put on. */
const UNMARKABLE = new Set(['thinking', 'redacted_thinking']);

/** A content block of the prompt, and where it lives. */
interface Slot {
  /** Index of its message, or -1 for the system prompt and tools. */
  message: number;
  block: unknown;
  marked: boolean;
}

/** The body with breakpoints placed as the module says; the body itself when none is needed. */
export function withAutoBreakpoints(body: Json): Json {
  const messages = Array.isArray(body.messages) ? (body.messages as unknown[]) : [];
  if (messages.length === 0) return body;
  const slots: Slot[] = [];
  const marked = (block: unknown) => isObject(block) && isObject(block.cache_control);
  for (const tool of Array.isArray(body.tools) ? body.tools : [])
    slots.push({ message: -1, block: tool, marked: marked(tool) });
  if (Array.isArray(body.system)) {
    for (const block of body.system) slots.push({ message: -1, block, marked: marked(block) });
  } else if (body.system !== undefined) slots.push({ message: -1, block: body.system, marked: false });
  messages.forEach((m, i) => {
    const content = isObject(m) ? m.content : undefined;
    if (Array.isArray(content))
      for (const block of content) slots.push({ message: i, block, marked: marked(block) });
    else slots.push({ message: i, block: content, marked: false });
  });
  const last = messages.length - 1;
  const markers: number[] = [];
  slots.forEach((slot, i) => {
    if (slot.marked) markers.push(i);
  });
  // Where the prompt's end is written from, and the client's marker before it (the reach needed).
  const endMarked = markers.length > 0 && slots[markers.at(-1)!]!.message === last;
  const floor = (endMarked ? markers.at(-2) : markers.at(-1)) ?? -1;
  let at = endMarked ? markers.at(-1)! - LOOKBACK_BLOCKS : slots.length - 1;
  const chosen: number[] = [];
  while (at > floor && markers.length + chosen.length < MAX_BREAKPOINTS) {
    let i = at;
    while (i > floor && !markable(slots[i]!)) i--;
    if (i <= floor) break;
    chosen.push(i);
    at = i - LOOKBACK_BLOCKS;
  }
  if (chosen.length === 0) return body;
  return mark(body, slots, new Set(chosen));
}

function markable(slot: Slot): boolean {
  if (slot.message < 0) return false;
  const block = slot.block;
  if (typeof block === 'string') return true;
  return isObject(block) && typeof block.type === 'string' && !UNMARKABLE.has(block.type);
}

/** A copy of `body` whose chosen message blocks carry `cache_control` (a string content becomes a block). */
function mark(body: Json, slots: readonly Slot[], chosen: ReadonlySet<number>): Json {
  const messages = (body.messages as Json[]).map((m) => ({ ...m }));
  const marker = { type: 'ephemeral' };
  const blockIndex = new Map<number, number>();
  slots.forEach((slot, i) => {
    if (slot.message < 0) return;
    const n = blockIndex.get(slot.message) ?? 0;
    blockIndex.set(slot.message, n + 1);
    if (!chosen.has(i)) return;
    const message = messages[slot.message]!;
    if (typeof message.content === 'string') {
      message.content = [{ type: 'text', text: message.content, cache_control: marker }];
      return;
    }
    const content = [...(message.content as Json[])];
    content[n] = { ...content[n], cache_control: marker };
    message.content = content;
  });
  return { ...body, messages };
}
