/**
 * The provider's own prompt cache, as the gateway sees it in each answer's usage: tokens read from it,
 * written to it, and not cached, per tenant and model, as Prometheus counters
 * (`clawperf_gateway_prompt_cache_tokens_total{tenant, model, kind}`); the hit ratio is derived from them
 * (`read / (read + write + uncached)` over a window: the recording rule in docs/alerts.yaml). A
 * non-streamed answer also carries `x-clawperf-prompt-cache: read=N write=M`.
 *
 * @module
 */
import { Counter, type Registry } from 'prom-client';
import type { TokenUsage } from '../tracing/index.ts';

/** The response header with the provider's prompt-cache figures of a non-streamed answer. */
export const PROMPT_CACHE_HEADER = 'x-clawperf-prompt-cache';

/** A usage's prompt-cache figures: read, written, and the rest of the input. */
export function promptCacheFigures(usage: TokenUsage): { read: number; write: number; uncached: number } {
  const read = usage.cacheRead ?? 0;
  const write = usage.cacheWrite ?? 0;
  return { read, write, uncached: Math.max(0, usage.input - read - write) };
}

/** The header value of a usage: `read=N write=M`. */
export function promptCacheHeader(usage: TokenUsage): string {
  const { read, write } = promptCacheFigures(usage);
  return `read=${read} write=${write}`;
}

type Child = { inc(value: number): void };

export class PromptCacheMetrics {
  readonly #tokens: Counter;
  readonly #children = new Map<string, [Child, Child, Child]>();

  constructor(registry: Registry) {
    this.#tokens = new Counter({
      name: 'clawperf_gateway_prompt_cache_tokens_total',
      help: "Input tokens by the provider's prompt cache: read from it, written to it, or not cached",
      labelNames: ['tenant', 'model', 'kind'],
      registers: [registry],
    });
  }

  /** Counts the prompt-cache figures of one answer the provider produced. */
  record(tenant: string, model: string, usage: TokenUsage): void {
    const id = `${tenant}\u0000${model}`;
    let children = this.#children.get(id);
    if (children === undefined) {
      const child = (kind: string) => this.#tokens.labels({ tenant, model, kind });
      children = [child('read'), child('write'), child('uncached')];
      this.#children.set(id, children);
    }
    const { read, write, uncached } = promptCacheFigures(usage);
    children[0].inc(read);
    children[1].inc(write);
    children[2].inc(uncached);
  }
}
