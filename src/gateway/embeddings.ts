/**
 * `POST /v1/embeddings`: each input cached on its own, misses coalesced across requests and sent upstream
 * in batches.
 *
 * @module
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { DEFAULT_BATCHER_MAX_CONCURRENT_BATCHES, RequestBatcher } from '../concurrency/index.ts';
import { UpstreamError } from '../errors.ts';
import { requestSpan, setGenAIUsage } from '../tracing/index.ts';
import { type GatewayContext, JSON_TYPE, sha256 } from './context.ts';
import { isApiError, sendError } from './error-answers.ts';
import { inputTokens, LOCAL_EMBED_MODEL } from './local-upstream.ts';
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
    if (model === LOCAL_EMBED_MODEL) {
      return ctx.upstreamCall('embeddings', model, inputs.length, async () => {
        const { vectors, tokens } = ctx.local.embed(inputs, dimensions);
        return vectors.map((e, i) => ({ j: JSON.stringify(e), t: tokens[i]! }));
      });
    }
    const body = await ctx.upstreamCall('embeddings', model, inputs.length, async () =>
      ctx.expectSuccess(
        await ctx.upstream!.postJson(
          '/embeddings',
          {
            model,
            input: inputs,
            encoding_format: 'float',
            ...(dimensions === undefined ? {} : { dimensions }),
          },
          { tokens: estimates.reduce((a, b) => a + b, 0) },
        ),
      ),
    );
    const data = (body as { data?: unknown }).data;
    if (!Array.isArray(data) || data.length !== inputs.length) {
      throw new UpstreamError('the upstream answered embeddings of the wrong shape', { status: 200 });
    }
    const sum = estimates.reduce((a, b) => a + b, 0) || 1;
    const total = totalTokens(body) ?? sum;
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
    return vectors.map((e, i) => ({ j: JSON.stringify(e), t: Math.round((total * estimates[i]!) / sum) }));
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
    ctx.setSpan(request, 'embeddings', req.model);
    const mode = ctx.cacheMode(request);
    const dims = req.dimensions;
    const keys = req.inputs.map(
      (input) =>
        `emb:${tenant}:${req.model}:${dims ?? ''}:${sha256(typeof input === 'string' ? input : JSON.stringify(input))}`,
    );
    const values = new Array<EmbedValue | undefined>(keys.length);
    if (mode !== 'bypass') {
      const found = await ctx.cache.getMany(keys).catch(() => new Array<undefined>(keys.length));
      // Anything else under the key (a value of another shape) is a miss, and is replaced.
      for (let i = 0; i < keys.length; i++) {
        const value = found[i];
        if (isEmbedValue(value)) values[i] = value;
        else if (value !== undefined) await ctx.cache.del(keys[i]!).catch(() => {});
      }
    }
    const missing: number[] = [];
    for (let i = 0; i < keys.length; i++) if (values[i] === undefined) missing.push(i);
    request.clawperf.cache = mode === 'bypass' ? 'bypass' : missing.length === 0 ? 'hit' : 'miss';
    if (keys.length === 1) request.clawperf.cacheKey = keys[0];
    if (missing.length > 0) {
      const tags = [`tenant:${tenant}`, `model:${req.model}`];
      await ctx.timed(request, () =>
        Promise.all(
          missing.map(async (i) => {
            const item: EmbedItem = { model: req.model, dimensions: dims, input: req.inputs[i]! };
            values[i] = (
              mode === 'bypass'
                ? await batcher.add(item)
                : await ctx.loadThrough(keys[i]!, () => batcher.add(item), tags)
            ) as EmbedValue;
          }),
        ),
      );
    }
    ctx.counts.servedItems += keys.length;
    if (request.clawperf.cache === 'hit') ctx.counts.cacheHits++;
    else if (request.clawperf.cache === 'miss') ctx.counts.cacheMisses++;
    else ctx.counts.cacheBypass++;
    ctx.answered('embeddings', request.clawperf.cache);
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
    ctx.settle(admitted, missing.length === 0 ? 0 : tokens);
    setGenAIUsage(requestSpan(request)!, { inputTokens: tokens });
    reply.type(JSON_TYPE);
    return body;
  };
}
