/**
 * The one definition of how many tokens a provider's answer used, read from its `usage` object. Limits,
 * metrics, spans and logs all count through it, so they agree.
 *
 * - Input tokens are every token of the prompt, cached or not. OpenAI's `prompt_tokens` (chat
 *   completions) and `input_tokens` (Responses) already include the cached part
 *   (`prompt_tokens_details.cached_tokens` / `input_tokens_details.cached_tokens`). Anthropic's
 *   `input_tokens` excludes it: its input is `input_tokens + cache_creation_input_tokens +
 *   cache_read_input_tokens`.
 * - Cache reads and writes are reported apart (Anthropic reports both; OpenAI reports reads only).
 *
 * The shapes tell themselves apart: only Anthropic's usage carries `cache_creation_input_tokens` or
 * `cache_read_input_tokens`, and without them its `input_tokens` is the whole input anyway.
 *
 * @module
 */

/** Tokens one answer used. */
export interface TokenUsage {
  /** Every prompt token, cached or not. */
  input: number;
  output: number;
  /** Prompt tokens read from the provider's prompt cache (a part of `input`), when reported. */
  cacheRead?: number;
  /** Prompt tokens written to the provider's prompt cache (a part of `input`), when reported. */
  cacheWrite?: number;
}

const count = (value: unknown): number | undefined =>
  typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : undefined;

function nested(usage: Record<string, unknown>, field: string, key: string): number | undefined {
  const details = usage[field];
  return details !== null && typeof details === 'object'
    ? count((details as Record<string, unknown>)[key])
    : undefined;
}

/** The tokens a `usage` object reports (OpenAI chat or Responses, or Anthropic); undefined when it reports none. */
export function tokenUsage(usage: unknown): TokenUsage | undefined {
  if (usage === null || typeof usage !== 'object') return undefined;
  const u = usage as Record<string, unknown>;
  const cacheWrite = count(u.cache_creation_input_tokens);
  const anthropicRead = count(u.cache_read_input_tokens);
  let input: number | undefined;
  let cacheRead: number | undefined;
  if (cacheWrite !== undefined || anthropicRead !== undefined) {
    input = (count(u.input_tokens) ?? 0) + (cacheWrite ?? 0) + (anthropicRead ?? 0);
    cacheRead = anthropicRead;
  } else if (count(u.prompt_tokens) !== undefined) {
    input = count(u.prompt_tokens);
    cacheRead = nested(u, 'prompt_tokens_details', 'cached_tokens');
  } else {
    input = count(u.input_tokens);
    cacheRead = nested(u, 'input_tokens_details', 'cached_tokens');
  }
  const output = count(u.completion_tokens) ?? count(u.output_tokens);
  if (input === undefined && output === undefined) {
    const total = count(u.total_tokens);
    return total === undefined ? undefined : { input: total, output: 0 };
  }
  const result: TokenUsage = { input: input ?? 0, output: output ?? 0 };
  if (cacheRead !== undefined) result.cacheRead = cacheRead;
  if (cacheWrite !== undefined) result.cacheWrite = cacheWrite;
  return result;
}

/** Input plus output tokens of a `usage` object: what token limits settle to. */
export function totalTokenUsage(usage: unknown): number | undefined {
  const t = tokenUsage(usage);
  return t === undefined ? undefined : t.input + t.output;
}
