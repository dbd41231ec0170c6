/**
 * OpenAI's Responses API as a {@link Protocol}: the request as `parseResponsesRequest` validates it, usage
 * by the one token definition, typed event streams passed through unchanged, errors in OpenAI's shape. A
 * response is stored at the provider under the operator's key, so the protocol records which tenant
 * created each response id and refuses a `previous_response_id` of another tenant as the provider refuses
 * an unknown one.
 *
 * @module
 */
import { DEFAULT_MAX_VALUE_BYTES } from '../cache/index.ts';
import { DEFAULT_COMPLETION_ESTIMATE } from './context.ts';
import { isApiError, sendError } from './error-answers.ts';
import { type ApiError, invalid, totalTokens } from './openai.ts';
import type { Protocol, ProtocolRequest } from './protocol.ts';
import type { ResponseOwners } from './response-owners.ts';
import { parseResponsesRequest, type ResponsesRequest, responsesPromptTokens } from './responses.ts';
import { ResponsesStreamTap, replayResponse } from './responses-stream.ts';
import type { DeploymentKey } from './upstream-interface.ts';

/** A Responses request, parsed, with what the shared path needs. */
export interface OpenAIResponsesRequest extends ProtocolRequest {
  responses: ResponsesRequest;
}

/** The answer OpenAI gives for a `previous_response_id` it does not know. */
export function previousNotFound(id: string): ApiError {
  return invalid(
    'previous_response_id',
    `Previous response with id '${id}' not found.`,
    'previous_response_not_found',
  );
}

/** The Responses protocol, recording response ids in `owners`. */
export function openAIResponses(owners: ResponseOwners): Protocol<OpenAIResponsesRequest> {
  const remember = (answer: unknown, tenant: string, at: DeploymentKey | undefined) => {
    const id = (answer as { id?: unknown } | null)?.id;
    if (typeof id === 'string') owners.remember(id, tenant, at);
  };
  return {
    endpoint: 'responses',
    api: 'openai',

    parse(body): OpenAIResponsesRequest | ApiError {
      const responses = parseResponsesRequest(body);
      if (isApiError(responses)) return responses;
      // The answer does not depend on whether it is streamed, nor on who asks.
      const {
        stream: _stream,
        stream_options: _options,
        user: _user,
        safety_identifier: _safety,
        prompt_cache_key: _cacheKey,
        metadata: _metadata,
        ...identity
      } = responses.body;
      return {
        responses,
        model: responses.model,
        stream: responses.stream,
        deterministic: responses.deterministic,
        estimate:
          responsesPromptTokens(responses) + (responses.maxOutputTokens ?? DEFAULT_COMPLETION_ESTIMATE),
        identity,
      };
    },

    async authorize(request, tenant) {
      const previous = request.responses.previousResponseId;
      if (previous === undefined) return undefined;
      const at = await owners.find(previous, tenant);
      if (at === false) return previousNotFound(previous);
      // It continues where the response is stored: that deployment and key alone.
      request.pin = at;
      return undefined;
    },

    answered(_request, answer, tenant, at) {
      remember(answer, tenant, at);
    },

    upstreamBody(request) {
      // A stream's usage arrives with `response.completed`: nothing to ask for, nothing to drop.
      return request.responses.body;
    },

    usage: totalTokens,

    replay: replayResponse,

    tap(_request, assemble, tenant, at) {
      return new ResponsesStreamTap({
        assemble,
        maxBytes: DEFAULT_MAX_VALUE_BYTES,
        onId: (id) => owners.remember(id, tenant, at),
      });
    },

    sendError,
  };
}
