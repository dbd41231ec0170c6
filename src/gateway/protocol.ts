/**
 * What a chat-like API the gateway speaks is made of, apart from the request path every such route shares
 * (completion-route.ts): its codecs. Adding an API means writing one {@link Protocol}, not a copy of the path.
 *
 * @module
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import type { FastifyReply } from 'fastify';
import type { TokenUsage } from '../tracing/index.ts';
import type { Endpoint } from './context.ts';
import type { ApiError } from './openai.ts';
import type { Api, DeploymentKey } from './upstream-interface.ts';

/** A request after parsing, as the shared path needs it. */
export interface ProtocolRequest {
  model: string;
  stream: boolean;
  /** Tokens the limits reserve before the call (settled to the answer's usage after it). */
  estimate: number;
  /**
   * What makes two requests the same answer, for the cache key; `undefined` when the answer is not
   * deterministic (it is then cached only when the client forces it).
   */
  identity: unknown;
  /** Whether the answer is deterministic (the same request gets the same answer). */
  deterministic: boolean;
  /** The client's headers the upstream gets too. */
  headers?: Record<string, string>;
  /** The deployment and key that must answer (set by `authorize`). */
  pin?: DeploymentKey;
}

/** The tap a live stream passes through on its way to the client. */
export interface ProtocolTap extends Readable {
  /** Tokens the stream used, once its usage was seen. */
  readonly total: number | undefined;
  /** The stream's usage (with the provider's prompt-cache figures), once seen. */
  readonly usage: TokenUsage | undefined;
  /** Feeds the upstream's stream through the tap; a source that fails ends it with an error event. */
  relay(source: Readable): this;
  /** The whole answer rebuilt from the stream, when it could be rebuilt exactly. */
  completion(): Record<string, unknown> | undefined;
}

/** The codecs of one API: parse and validate, the upstream body, usage, streams and errors. */
export interface Protocol<R extends ProtocolRequest> {
  /** The route recorded in metrics, `clawperf_gateway_answers_total` and cache keys. */
  readonly endpoint: Exclude<Endpoint, 'embeddings'>;
  /** The API its upstream speaks. */
  readonly api: Api;
  /** Parses and validates a request: the request, or the error answer naming what was wrong. */
  parse(body: unknown, headers: IncomingHttpHeaders): R | ApiError;
  /** The body the upstream gets; for a stream, one that makes the upstream report its usage. */
  upstreamBody(request: R): Record<string, unknown>;
  /**
   * Refuses what only some tenants may ask (continuing a stored response another tenant created); runs
   * after authentication, before admission.
   */
  authorize?(request: R, tenant: string): Promise<ApiError | undefined>;
  /**
   * Told of each answer a request produced (a miss or a bypass, not a cached answer), with its tenant and
   * the deployment and key that answered (when a router chose them).
   */
  answered?(request: R, answer: unknown, tenant: string, at: DeploymentKey | undefined): void;
  /** Tokens an answer used, input and output: what the limits settle to. */
  usage(answer: unknown): number | undefined;
  /** A cached answer replayed as this API's server-sent events. */
  replay(answer: unknown, request: R): Iterable<string>;
  /**
   * The tap of a live stream of `tenant` from the deployment and key `at`; `assemble` when its answer is to
   * be rebuilt for the cache.
   */
  tap(request: R, assemble: boolean, tenant: string, at: DeploymentKey | undefined): ProtocolTap;
  /** Sends an error answer in this API's shape. */
  sendError(reply: FastifyReply, error: ApiError): FastifyReply;
}
