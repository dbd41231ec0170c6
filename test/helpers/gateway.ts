/**
 * A gateway for a test: listening on a free loopback port, with the official `openai` SDK pointed at it
 * (no retries, so one answer is one request). The caller closes every gateway it started in its `after`.
 */
import OpenAI from 'openai';
import type { GatewayConfig } from '../../src/gateway/config.ts';
import { createGateway, type Gateway } from '../../src/gateway/server.ts';

export interface ServedGateway {
  gw: Gateway;
  /** `http://127.0.0.1:<port>` */
  base: string;
  client: OpenAI;
}

/** Starts a gateway (no disk cache, an instant `local-chat` unless `config` says otherwise) and adds it to `started`. */
export async function serveGateway(
  started: Gateway[],
  config: Partial<GatewayConfig> = {},
): Promise<ServedGateway> {
  const gw = await createGateway({ cacheDir: false, localChatLatencyMs: 0, ...config });
  started.push(gw);
  const base = await gw.app.listen({ port: 0, host: '127.0.0.1' });
  const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'unused-on-loopback', maxRetries: 0 });
  return { gw, base, client };
}
