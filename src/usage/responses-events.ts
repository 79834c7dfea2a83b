// The Responses API's events (SSE data or WebSocket frames), as far as usage and turns go:
// one definition for the HTTP meter, the bridge session and the WebSocket relay.
import { fromResponsesUsage, type TokenUsage } from './tokens.js';

/** The events that end a response; each carries the response, with its usage. */
const RESPONSE_END_EVENTS = new Set(['response.completed', 'response.done', 'response.incomplete', 'response.failed']);

/** The events after which nothing more of a turn follows: a response's end, or an `error`. */
export function endsTurn(type: string): boolean {
  return type === 'error' || RESPONSE_END_EVENTS.has(type);
}

/**
 * Cheap pre-filter for the hot path: only events containing a usage *object* are worth
 * JSON.parse. `"usage":null` (chat chunks, response.created) is skipped.
 */
export const HAS_USAGE = /"usage"\s*:\s*\{/;

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Usage from one Responses API event, if it is a response's end that carries it. */
export function usageFromResponsesEvent(event: unknown): TokenUsage | null {
  if (!isObj(event) || typeof event.type !== 'string' || !RESPONSE_END_EVENTS.has(event.type)) return null;
  return isObj(event.response) ? fromResponsesUsage(event.response.usage) : null;
}
