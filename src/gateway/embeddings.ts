/**
 * `POST /v1/embeddings`: each input cached on its own, misses coalesced across requests and sent upstream
 * in batches.
 *
 * @module
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { DEFAULT_BATCHER_MAX_CONCURRENT_BATCHES, RequestBatcher } from '../concurrency/index.ts';
import { UpstreamError } from '../errors.ts';
import { type CacheState, DEPLOYMENT_HEADER, type GatewayContext, JSON_TYPE, sha256 } from './context.ts';
import { isApiError, sendError } from './error-answers.ts';
import { inputTokens } from './local-upstream.ts';
import { type EmbeddingsRequest, parseEmbeddingsRequest, toBase64, totalTokens } from './openai.ts';

/** One input to embed. */
export interface EmbedItem {
  model: string;
  dimensions: number | undefined;
  input: string | number[];
}

/**
 * A cached embedding. The vector is kept as its JSON text, made once when it arrives: a hit splices it into
 * the answer without turning a thousand floats into text again, and the cache's byte budget counts the text
 * it really holds.
 */
export interface EmbedValue {
  /** The vector, as JSON text. */
  j: string;
  /** Tokens of the input. */
  t: number;
  /** The deployment that embedded it (`local` for the local model). */
  d?: string;
}

function isEmbedValue(value: unknown): value is EmbedValue {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as EmbedValue).j === 'string' &&
    typeof (value as EmbedValue).t === 'number'
  );
}

/** The batcher that groups pending inputs by model and dimensions and embeds each group in one call. */
export function createEmbeddingBatcher(ctx: GatewayContext): RequestBatcher<EmbedItem, EmbedValue> {
  const embedGroup = async (
    model: string,
    dimensions: number | undefined,
    inputs: (string | number[])[],
  ): Promise<EmbedValue[]> => {
    const estimates = inputs.map(inputTokens);
    let sum = 0;
    for (const e of estimates) sum += e;
    const body = {
      model,
      input: inputs,
      encoding_format: 'float',
      ...(dimensions === undefined ? {} : { dimensions }),
    };
    const reply = await ctx.upstream.call({
      api: 'openai',
      operation: 'embeddings',
      model,
      body,
      stream: false,
      items: inputs.length,
      tokens: sum,
    });
    const data = (reply.json as { data?: unknown }).data;
    if (!Array.isArray(data) || data.length !== inputs.length) {
      throw new UpstreamError('the upstream answered embeddings of the wrong shape', { status: 200 });
    }
    // The answer's usage is for the whole batch: each input gets its share by its estimate.
    const total = totalTokens(reply.json) ?? sum;
    const vectors = new Array<number[]>(inputs.length);
    for (const d of data as { index?: unknown; embedding?: unknown }[]) {
      const index = typeof d?.index === 'number' ? d.index : -1;
      if (index < 0 || index >= inputs.length || !Array.isArray(d.embedding)) {
        throw new UpstreamError('the upstream answered an embedding without a valid index or vector', {
          status: 200,
        });
      }
      vectors[index] = d.embedding as number[];
    }
    const d = reply.deployment ?? 'local';
    return vectors.map((e, i) => ({
      j: JSON.stringify(e),
      t: Math.round((total * estimates[i]!) / (sum || 1)),
      d,
    }));
  };

  return new RequestBatcher<EmbedItem, EmbedValue>(
    async (items) => {
      const groups = new Map<string, number[]>();
      items.forEach((item, i) => {
        const id = `${item.model}\u0000${item.dimensions ?? ''}`;
        const group = groups.get(id);
        if (group === undefined) groups.set(id, [i]);
        else group.push(i);
      });
      const results = new Array<EmbedValue | Error>(items.length);
      await Promise.all(
        [...groups.values()].map(async (indexes) => {
          const first = items[indexes[0]!]!;
          try {
            const values = await embedGroup(
              first.model,
              first.dimensions,
              indexes.map((i) => items[i]!.input),
            );
            indexes.forEach((i, j) => {
              results[i] = values[j]!;
            });
          } catch (error) {
            for (const i of indexes) results[i] = error as Error;
          }
        }),
      );
      return results;
    },
    {
      maxBatchSize: ctx.config.batchMaxSize,
      maxWaitMs: ctx.config.batchMaxWaitMs,
      // A request alone must never get 503 `overloaded`, which no retry could get past: the queue holds the
      // largest request, and no more batches run than there are upstream slots (a batch waiting for a slot
      // beyond maxQueueSize would be refused).
      maxQueueSize: Math.max(
        ctx.config.maxQueueSize * ctx.config.batchMaxSize,
        ctx.config.maxEmbeddingInputs,
      ),
      maxConcurrentBatches: Math.min(DEFAULT_BATCHER_MAX_CONCURRENT_BATCHES, ctx.config.maxConcurrency),
    },
  );
}

/** The route handler; `batcher` from {@link createEmbeddingBatcher}. */
export function embeddingsHandler(ctx: GatewayContext, batcher: RequestBatcher<EmbedItem, EmbedValue>) {
  return async (request: FastifyRequest, reply: FastifyReply) => {
    const parsed = parseEmbeddingsRequest(request.body, ctx.config.maxEmbeddingInputs);
    if (isApiError(parsed)) return sendError(reply, parsed);
    const req: EmbeddingsRequest = parsed;
    const wrong = ctx.checkModel(req.model, 'embeddings');
    if (wrong !== undefined) return sendError(reply, wrong);
    const tenant = ctx.tenantOf(request);
    if (typeof tenant !== 'string') return sendError(reply, tenant);
    const admitted = await ctx.admit(request, tenant, req.tokens);
    if (isApiError(admitted)) return sendError(reply, admitted);
    const mode = ctx.cacheMode(request);
    const dims = req.dimensions;
    const tags = [`tenant:${tenant}`, `model:${req.model}`];
    // Look each input up on its own, embedding the misses in batches shared with concurrent requests.
    const embed = (input: string | number[]) => batcher.add({ model: req.model, dimensions: dims, input });
    const values = new Array<EmbedValue>(req.inputs.length);
    /** The deployments that embedded this request's own inputs (not those found in the cache). */
    const producers = new Set<string>();
    let cache: CacheState;
    if (mode === 'bypass') {
      cache = 'bypass';
      await ctx.timed(request, () =>
        Promise.all(
          req.inputs.map(async (input, i) => {
            values[i] = await embed(input);
            producers.add(values[i].d ?? 'local');
          }),
        ),
      );
    } else {
      const states = new Set<CacheState>();
      const waited = () => !(states.size === 1 && states.has('hit'));
      await ctx.timed(
        request,
        () =>
          Promise.all(
            req.inputs.map(async (input, i) => {
              const key = `emb:${tenant}:${req.model}:${dims ?? ''}:${sha256(typeof input === 'string' ? input : JSON.stringify(input))}`;
              if (req.inputs.length === 1) request.clawperf.cacheKey = key;
              let found = await ctx.lookup(key, () => embed(input), tags);
              // Anything else under the key (a value of another shape) is a miss, and is replaced.
              if (!isEmbedValue(found.value)) {
                await ctx.cache.del(key).catch(() => {});
                found = await ctx.lookup(key, () => embed(input), tags);
              }
              values[i] = found.value as EmbedValue;
              states.add(found.cache);
              if (found.cache === 'miss') producers.add(values[i].d ?? 'local');
            }),
          ),
        waited,
      );
      cache = states.has('miss') ? 'miss' : states.has('coalesced') ? 'coalesced' : 'hit';
    }
    // The answer is written as JSON text around each vector's text.
    const base64 = req.encodingFormat === 'base64';
    let tokens = 0;
    let body = '{"object":"list","data":[';
    for (let index = 0; index < values.length; index++) {
      const v = values[index]!;
      tokens += v.t;
      body += `${index === 0 ? '' : ','}{"object":"embedding","index":${index},"embedding":${base64 ? JSON.stringify(toBase64(JSON.parse(v.j) as number[])) : v.j}}`;
    }
    body += `],"model":${JSON.stringify(req.model)},"usage":{"prompt_tokens":${tokens},"total_tokens":${tokens}}}`;
    // Settle the limits: the inputs this request had embedded used tokens (all of them, but a hit's).
    ctx.settle(admitted, cache === 'miss' || cache === 'bypass' ? tokens : 0);
    ctx.record(request, 'embeddings', req.model, cache, values.length, { usage: { prompt_tokens: tokens } });
    if (producers.size > 0) reply.header(DEPLOYMENT_HEADER, [...producers].join(', '));
    reply.type(JSON_TYPE);
    return body;
  };
}
