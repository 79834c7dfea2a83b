import { createHash } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { HeaderMap } from './headers.js';

export const TURN_STATE_HEADER = 'x-codex-turn-state';
const SESSION_HEADERS = ['session-id', 'session_id', 'thread-id'] as const;
/** Turn states this gateway issues carry the session id they stand for. */
const TURN_STATE_PREFIX = 'tg1.';

export interface SessionIdentity {
  /** the caller's session id, as the client named it */
  id: string;
  /** the store key: scoped by the proxy key id so two callers never share a session */
  key: string;
  /** what the gateway returns as `x-codex-turn-state` for the client to replay */
  turnState: string;
}

function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  const text = (Array.isArray(value) ? value[0] : value)?.trim();
  return text ? text : undefined;
}

/**
 * The session a request belongs to, or null when it is not bridged. First match wins:
 * `x-codex-turn-state`, then `session-id` / `session_id` / `thread-id`.
 */
export function sessionOf(headers: IncomingHttpHeaders, keyId: string): SessionIdentity | null {
  const turnState = header(headers, TURN_STATE_HEADER);
  let id: string | undefined;
  if (turnState) {
    id = turnState.startsWith(TURN_STATE_PREFIX)
      ? Buffer.from(turnState.slice(TURN_STATE_PREFIX.length), 'base64url').toString('utf8') || turnState
      : turnState;
  } else {
    for (const name of SESSION_HEADERS) {
      id = header(headers, name);
      if (id) break;
    }
  }
  if (!id) return null;
  const digest = createHash('sha256').update(`${keyId}\0${id}`).digest('base64url');
  return { id, key: `${keyId}:${digest}`, turnState: TURN_STATE_PREFIX + Buffer.from(id).toString('base64url') };
}

/** The turn states this gateway issued mean nothing to an upstream: they are not passed on. */
export function withoutGatewayTurnState(headers: HeaderMap): HeaderMap {
  const value = headers[TURN_STATE_HEADER];
  if (typeof value !== 'string' || !value.startsWith(TURN_STATE_PREFIX)) return headers;
  const { [TURN_STATE_HEADER]: _ours, ...rest } = headers;
  return rest;
}
