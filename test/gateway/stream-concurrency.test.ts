/**
 * Concurrent streams are bounded by `maxConcurrency` alone: no connection pool or other internal cap below it
 * makes one stream wait for another to finish. A FAKE upstream (no real provider can run here) holds every
 * streamed answer open until as many requests as the test sends have all arrived, so it finishes only if they
 * all reach it at once.
 */
import assert from 'node:assert/strict';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import type { Gateway } from '../../src/gateway/server.ts';
import { serveGateway } from '../helpers/gateway.ts';

const started: Gateway[] = [];
after(async () => {
  await Promise.all(started.map((g) => g.close()));
});

/** An upstream that starts every stream at once and ends them all when `expected` are open together. */
async function holdingUpstream(expected: number) {
  const open: ServerResponse[] = [];
  let most = 0;
  const chunk = (text: string) =>
    `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 1, model: 'fake-chat', choices: [{ index: 0, delta: { content: text }, finish_reason: null }] })}\n\n`;
  const finish = () => {
    for (const res of open.splice(0)) res.end(`${chunk('!')}data: [DONE]\n\n`);
  };
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(chunk('hi'));
      open.push(res);
      most = Math.max(most, open.length);
      if (open.length === expected) finish();
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/v1`,
    most: () => most,
    close: async () => {
      finish();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

describe('concurrent streams', () => {
  it('opens as many upstream streams at once as maxConcurrency allows, beyond the old pool of 64', async () => {
    const streams = 100;
    const upstream = await holdingUpstream(streams);
    try {
      const { client } = await serveGateway(started, {
        upstreamUrl: upstream.url,
        maxConcurrency: 128,
        queueTimeoutMs: 60_000,
      });
      const read = async (i: number) => {
        const stream = await client.chat.completions.create({
          model: 'fake-chat',
          stream: true,
          messages: [{ role: 'user', content: `stream ${i}` }],
        });
        let text = '';
        for await (const part of stream) text += part.choices[0]?.delta.content ?? '';
        return text;
      };
      // If a cap below 100 held some streams back, the upstream would never end the ones it holds: the
      // deadline turns that into a failure that says how many got through.
      let deadline: NodeJS.Timeout | undefined;
      const stalled = new Promise<never>((_, reject) => {
        deadline = setTimeout(
          () =>
            reject(new Error(`only ${upstream.most()} of ${streams} streams reached the upstream at once`)),
          20_000,
        );
      });
      const texts = await Promise.race([
        Promise.all(Array.from({ length: streams }, (_, i) => read(i))),
        stalled,
      ]);
      clearTimeout(deadline);
      assert.equal(upstream.most(), streams);
      assert.deepEqual(new Set(texts), new Set(['hi!']));
    } finally {
      await upstream.close();
    }
  });
});
