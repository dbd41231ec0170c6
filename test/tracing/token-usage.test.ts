import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { tokenUsage, totalTokenUsage, usageFromResponse } from '../../src/tracing/index.ts';

describe('tokenUsage', () => {
  it('counts Anthropic cache writes and reads as input, which its input_tokens leaves out', () => {
    const usage = {
      input_tokens: 12,
      cache_creation_input_tokens: 2000,
      cache_read_input_tokens: 30000,
      output_tokens: 90,
    };
    assert.deepEqual(tokenUsage(usage), { input: 32012, output: 90, cacheRead: 30000, cacheWrite: 2000 });
    assert.equal(totalTokenUsage(usage), 32102);
  });

  it('takes OpenAI prompt_tokens whole: its cached_tokens are a part of them', () => {
    const usage = {
      prompt_tokens: 1500,
      completion_tokens: 20,
      total_tokens: 1520,
      prompt_tokens_details: { cached_tokens: 1024 },
    };
    assert.deepEqual(tokenUsage(usage), { input: 1500, output: 20, cacheRead: 1024 });
  });

  it('reads OpenAI Responses usage, cached_tokens again a part of input_tokens', () => {
    const usage = { input_tokens: 300, output_tokens: 7, input_tokens_details: { cached_tokens: 256 } };
    assert.deepEqual(tokenUsage(usage), { input: 300, output: 7, cacheRead: 256 });
  });

  it('reads Anthropic usage without cache figures as its input_tokens', () => {
    assert.deepEqual(tokenUsage({ input_tokens: 5, output_tokens: 3 }), { input: 5, output: 3 });
  });

  it('falls back to total_tokens alone, and reports nothing for what is not usage', () => {
    assert.equal(totalTokenUsage({ total_tokens: 42 }), 42);
    assert.equal(tokenUsage(undefined), undefined);
    assert.equal(tokenUsage({ foo: 1 }), undefined);
    assert.equal(tokenUsage({ input_tokens: -1, output_tokens: 'x' }), undefined);
  });

  it('is what GenAI spans and metrics record', () => {
    const usage = usageFromResponse({
      id: 'msg_1',
      model: 'claude-x',
      stop_reason: 'end_turn',
      usage: {
        input_tokens: 10,
        cache_read_input_tokens: 100,
        cache_creation_input_tokens: 0,
        output_tokens: 4,
      },
    });
    assert.equal(usage.inputTokens, 110);
    assert.equal(usage.outputTokens, 4);
    assert.equal(usage.cacheReadInputTokens, 100);
    assert.equal(usage.cacheCreationInputTokens, 0);
    // Embeddings report no output rather than zero.
    assert.equal(usageFromResponse({ usage: { prompt_tokens: 3, total_tokens: 3 } }).outputTokens, undefined);
  });
});
