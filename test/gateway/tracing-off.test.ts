import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { trace } from '@opentelemetry/api';
import { createGateway } from '../../src/gateway/server.ts';

// Its own file, so its process has no OpenTelemetry registration left by another test.
describe('a gateway without an OTLP endpoint', () => {
  it("leaves the global OpenTelemetry API alone: the library's spans cost nothing", async () => {
    const g = await createGateway({ cacheDir: false, limits: undefined, redisUrl: undefined });
    try {
      const answer = await g.app.inject({
        method: 'POST',
        url: '/v1/chat/completions',
        payload: { model: 'local-chat', temperature: 0, messages: [{ role: 'user', content: 'hi' }] },
      });
      assert.equal(answer.statusCode, 200);
      assert.match(String(answer.headers.traceparent), /^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
      const span = trace.getTracer('any').startSpan('probe');
      assert.equal(span.isRecording(), false);
      assert.equal(span.spanContext().traceId, '00000000000000000000000000000000');
    } finally {
      await g.close();
    }
  });
});
