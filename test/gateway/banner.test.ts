import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { bannerLines } from '../../src/gateway/banner.ts';
import { resolveConfig } from '../../src/gateway/config.ts';

const address = 'http://127.0.0.1:8787';

describe('the startup banner', () => {
  it('says what is on: URL, models, cache levels, Redis, limits, deployments, workers', () => {
    const text = bannerLines(
      resolveConfig({
        cacheDir: '/var/cache/clawperf',
        redisUrl: 'redis://:redis-password-5521@10.0.0.5:6379',
        limits: { rpm: 60, tpm: 90_000 },
        apiKeys: { 'client-key-1': 'team-a', 'client-key-2': 'team-b' },
        adminToken: 'admin-token-8812',
        logLevel: 'info',
        deployments: [
          {
            name: 'openai-main',
            api: 'openai',
            baseUrl: 'https://user:url-password-0021@api.example.com/v1',
            apiKeys: ['sk-deployment-key-4410', 'sk-deployment-key-4411'],
            models: ['gpt-4o-mini'],
          },
        ] as never,
      }),
      address,
    ).join('\n');
    assert.match(text, /listening on http:\/\/127\.0\.0\.1:8787/);
    assert.match(text, /models: local-embed, local-chat \(LOCAL models[^\n]*; gpt-4o-mini on deployments/);
    assert.match(text, /cache: memory \(10000 entries\) \+ disk \(\/var\/cache\/clawperf\) \+ Redis/);
    assert.match(text, /redis: redis:\/\/10\.0\.0\.5:6379 \(L2 cache, invalidation bus, global limits\)/);
    assert.match(text, /limits per tenant: rpm=60, tpm=90000/);
    assert.match(
      text,
      /deployments: openai-main \(openai, https:\/\/api\.example\.com\/v1, gpt-4o-mini; priority 0, weight 1, 2 keys\)/,
    );
    assert.match(text, /workers: 1/);
    assert.match(text, /auth: 2 API keys, 2 tenants/);
    assert.match(text, /admin and debug endpoints: enabled/);
    assert.match(text, /log: info \(a line per request\), json/);
    for (const secret of [
      'redis-password',
      'url-password',
      'sk-deployment-key',
      'client-key',
      'admin-token',
    ]) {
      assert.ok(!text.includes(secret), `the banner shows ${secret}`);
    }
  });

  it('says what is off on the embedded default', () => {
    const text = bannerLines(resolveConfig({ cacheDir: false }), address).join('\n');
    assert.match(text, /cache: memory \(10000 entries\), answers kept/);
    assert.match(text, /redis: none/);
    assert.match(text, /limits: off/);
    assert.match(text, /deployments: none/);
    assert.match(text, /loopback only/);
    assert.match(text, /admin and debug endpoints: disabled/);
    assert.match(text, /log: warn, json/);
  });

  it('names the single upstreams without their credentials', () => {
    const text = bannerLines(
      resolveConfig({
        upstreamUrl: 'https://key:up-secret-77@api.openai.com/v1',
        anthropicUpstreamUrl: 'https://api.anthropic.com',
        upstreamApiKey: 'sk-upstream-3391',
      }),
      address,
    ).join('\n');
    assert.match(text, /every other OpenAI model via https:\/\/api\.openai\.com\/v1 \(openai-default\)/);
    assert.match(
      text,
      /every other \/v1\/messages model via https:\/\/api\.anthropic\.com \(anthropic-default\)/,
    );
    assert.ok(!text.includes('up-secret') && !text.includes('sk-upstream'));
  });
});
