import type { ProviderName } from '../config/schema.js';
import type { WireFormat } from '../usage/tokens.js';

/** A public model route and what serves it: provider routing knowledge, in one table. */
export interface ModelRoute {
  url: string;
  /** providers that can serve it, in order of preference */
  providers: ProviderName[];
  /** the canonical upstream API path */
  upstreamPath: string;
  /** how to read usage; null = not a metered model call */
  format: WireFormat | null;
}

export const MODEL_ROUTES: ModelRoute[] = [
  { url: '/v1/responses', providers: ['openai', 'chatgpt'], upstreamPath: '/v1/responses', format: 'openai-responses' },
  { url: '/backend-api/codex/responses', providers: ['chatgpt', 'openai'], upstreamPath: '/v1/responses', format: 'openai-responses' },
  { url: '/v1/chat/completions', providers: ['openai'], upstreamPath: '/v1/chat/completions', format: 'openai-chat' },
  { url: '/v1/messages', providers: ['anthropic'], upstreamPath: '/v1/messages', format: 'anthropic-messages' },
  { url: '/v1/messages/count_tokens', providers: ['anthropic'], upstreamPath: '/v1/messages/count_tokens', format: null },
];

/** The Responses routes: the ones a session can be bridged on, over HTTP or WebSocket. */
export const RESPONSES_ROUTES = MODEL_ROUTES.filter((route) => route.format === 'openai-responses');

/** The Responses route at `url`, or undefined. */
export function responsesRoute(url: string): ModelRoute | undefined {
  return RESPONSES_ROUTES.find((route) => route.url === url);
}
