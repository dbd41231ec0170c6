/**
 * `POST /v1/chat/completions`: the shared completion path (completion-route.ts) speaking OpenAI's chat
 * completions (openai-chat.ts).
 *
 * @module
 */
import { completionRoute } from './completion-route.ts';
import type { GatewayContext } from './context.ts';
import { openAIChat } from './openai-chat.ts';

/** The route handler. */
export function chatHandler(ctx: GatewayContext) {
  return completionRoute(ctx, openAIChat);
}
