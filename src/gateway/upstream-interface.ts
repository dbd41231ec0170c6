/**
 * The one interface every model backend implements: the HTTP upstream, the built-in local models, and the
 * guarded upstream that wraps them with backpressure, the breaker's answers, spans and GenAI metrics. A
 * router over several deployments is one more implementation.
 *
 * @module
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import type { OutboundPacer } from './upstream.ts';

/** The API an upstream speaks; the gateway never translates between them. */
export type Api = 'openai' | 'anthropic';

/**
 * What a call asks of the model: `chat` is a chat completion or an Anthropic message, `responses` an
 * OpenAI response.
 */
export type Operation = 'chat' | 'embeddings' | 'count_tokens' | 'responses';

/** One call to a model, in the API of the route it came from. */
export interface UpstreamRequest {
  api: Api;
  operation: Operation;
  model: string;
  /** The body to send. */
  body: Record<string, unknown>;
  /** The client's headers the upstream gets too (Anthropic's `anthropic-version` and `anthropic-beta`). */
  headers?: Record<string, string>;
  /** A streamed answer is wanted (server-sent events). */
  stream: boolean;
  /** Items the call carries: embedding inputs, or 1 for a chat completion. */
  items: number;
  /** Estimated tokens, for outbound pacing. */
  tokens: number;
  /** The deployment and key that must answer (the ones that stored a response this call continues). */
  pin?: DeploymentKey;
}

/** A deployment by name, and one of its keys by index. */
export interface DeploymentKey {
  deployment: string;
  key: number;
}

/** What an upstream answered: a JSON body, or (for a streamed success) its event stream. */
export interface UpstreamReply {
  status: number;
  headers: IncomingHttpHeaders;
  /** The parsed JSON answer; `undefined` for a stream. */
  json: unknown;
  /** The server-sent events of a streamed success, passed on at the upstream's pace. */
  stream: Readable | undefined;
  /** The deployment that answered, and with which key (when a router chose them). */
  deployment?: string;
  key?: number;
}

export interface CallOptions {
  /** Aborts the call (the client went away). */
  signal?: AbortSignal;
  /** Paces the call instead of the client's own pacer (a deployment's key has its own). */
  pacer?: OutboundPacer;
}

/** Who answers calls of a model, as GenAI spans and metrics name it. */
export interface UpstreamIdentity {
  provider: string;
  serverAddress?: string;
  serverPort?: number;
}

/**
 * A model backend. `call` resolves with the upstream's answer, success or a client error to relay, and
 * rejects with a typed error when the upstream failed (`UpstreamError`, `TimeoutError`, `CircuitOpenError`,
 * `OverloadedError`, ...) or with `signal.reason` when aborted.
 */
export interface Upstream {
  call(request: UpstreamRequest, options?: CallOptions): Promise<UpstreamReply>;
  /** Who answers calls of `model` in `api`. */
  identity(call: Pick<UpstreamRequest, 'api' | 'model'>): UpstreamIdentity;
}
