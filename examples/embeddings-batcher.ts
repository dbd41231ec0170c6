/**
 * Batching OpenAI embedding requests with RequestBatcher: 250 single `add(text)` calls become a few
 * `/embeddings` requests of up to 100 inputs. HTTP errors reject the callers instead of passing as vectors;
 * 429 and 5xx are retried with backoff, honouring `Retry-After`. Works with any OpenAI-compatible server:
 *
 *   OPENAI_BASE_URL=https://api.openai.com/v1 OPENAI_API_KEY=sk-... node --import tsx examples/embeddings-batcher.ts
 *
 * EMBEDDING_MODEL picks the model (default text-embedding-3-small).
 */
import { RequestBatcher } from '../src/concurrency/batcher.ts';
import { UpstreamError } from '../src/errors.ts';

const baseUrl = (process.env.OPENAI_BASE_URL ?? 'https://api.openai.com/v1').replace(/\/+$/, '');
const apiKey = process.env.OPENAI_API_KEY ?? '';
const model = process.env.EMBEDDING_MODEL ?? 'text-embedding-3-small';
const MAX_ATTEMPTS = 5;
const MAX_BACKOFF_MS = 20_000;
const REQUEST_TIMEOUT_MS = 30_000;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Exponential backoff with jitter: about 0.5 s, 1 s, 2 s, ... capped. */
const backoffMs = (attempt: number) =>
  Math.min(MAX_BACKOFF_MS, 500 * 2 ** attempt) * (0.5 + Math.random() / 2);

/** The server's own hint: `retry-after-ms` (OpenAI), else `Retry-After` in seconds or as an HTTP date. */
function retryAfterMs(response: Response): number | undefined {
  const ms = Number(response.headers.get('retry-after-ms'));
  if (ms > 0) return ms;
  const value = response.headers.get('retry-after');
  if (value === null) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1_000);
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

/** One upstream call for a whole batch; results in input order. */
async function embed(texts: string[]): Promise<number[][]> {
  for (let attempt = 0; ; attempt++) {
    const last = attempt + 1 >= MAX_ATTEMPTS;
    let response: Response;
    try {
      response = await fetch(`${baseUrl}/embeddings`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${apiKey}` },
        body: JSON.stringify({ model, input: texts }),
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
    } catch (error) {
      // Connection refused, reset or timed out: worth another try.
      if (last) throw new UpstreamError(`POST ${baseUrl}/embeddings failed`, {}, { cause: error });
      await sleep(backoffMs(attempt));
      continue;
    }
    if (response.ok) {
      const body = (await response.json()) as { data: { index: number; embedding: number[] }[] };
      // Ordered by `index`; a short answer leaves the missing callers rejected by the batcher.
      return body.data.sort((a, b) => a.index - b.index).map((d) => d.embedding);
    }
    const hint = retryAfterMs(response);
    const detail = (await response.text()).slice(0, 300);
    const retryable = response.status === 429 || response.status >= 500;
    if (!retryable || last) {
      throw new UpstreamError(`embeddings: HTTP ${response.status}: ${detail}`, {
        status: response.status,
        ...(hint === undefined ? {} : { retryAfterMs: hint }),
      });
    }
    const waitMs = Math.min(MAX_BACKOFF_MS, hint ?? backoffMs(attempt));
    console.warn(`HTTP ${response.status}; retrying a batch of ${texts.length} in ${Math.round(waitMs)} ms`);
    await sleep(waitMs);
  }
}

const batcher = new RequestBatcher(embed, {
  maxBatchSize: 100, // inputs per request
  maxWaitMs: 20, // how long a lone text waits for company
  maxConcurrentBatches: 2, // requests in flight at once
  key: (text: string) => text, // the same text twice in a batch is sent once
});

// 250 callers, as independent requests to a gateway would be; 50 of the texts repeat.
const texts = Array.from({ length: 250 }, (_, i) => `sentence number ${Math.floor(i * 0.8)}`);
const outcomes = await Promise.allSettled(texts.map((text) => batcher.add(text)));
await batcher.close();

const vectors = outcomes.filter((o) => o.status === 'fulfilled');
const failures = outcomes.filter((o) => o.status === 'rejected');
const { batches, deduped } = batcher.stats();
console.log(
  `${vectors.length} embeddings (dimension ${vectors[0]?.value.length ?? 0}) from ${batches} requests; ` +
    `${deduped} duplicates sent once; ${failures.length} failed`,
);
if (failures.length > 0) {
  console.error(String(failures[0]!.reason), failures[0]!.reason?.cause ?? '');
  process.exitCode = 1;
}
