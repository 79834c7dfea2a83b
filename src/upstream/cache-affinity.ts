import type { IncomingHttpHeaders } from 'node:http';
import { topLevelOf, type TopLevel } from '../server/json-depth.js';
import type { ParsedBody } from '../server/types.js';

/** Codex names its conversation in these headers (the first present wins). */
const CODEX_SESSION_HEADERS = ['session_id', 'session-id', 'thread-id'] as const;
const CLAUDE_CODE_SESSION_HEADER = 'x-claude-code-session-id';

function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  const text = (Array.isArray(value) ? value[0] : value)?.trim();
  return text || undefined;
}

function nonEmptyString(value: unknown): string | undefined {
  return typeof value === 'string' && value.trim() ? value.trim() : undefined;
}

/**
 * Claude Code's session from `metadata.user_id`: older versions send
 * `user_<hash>_account_<uuid>_session_<uuid>`, newer ones a JSON object with `session_id`.
 * Anything else is taken whole: still one stable id per caller.
 */
function claudeCodeSession(userId: string): string {
  if (userId.startsWith('{')) {
    try {
      const session = nonEmptyString((JSON.parse(userId) as { session_id?: unknown }).session_id);
      if (session) return session;
    } catch {
      // not JSON after all: the whole id
    }
  }
  return /_session_([^_]+)$/.exec(userId)?.[1] ?? userId;
}

/**
 * The conversation a model call belongs to, as the client names it, for prompt-cache affinity.
 * First found: `prompt_cache_key` (OpenAI Responses / Chat body), Codex's session headers, Claude
 * Code's session (`x-claude-code-session-id`, else `metadata.user_id`). Undefined when none. The
 * body fields come from the top-level scan, so a large body is never parsed for them.
 */
function conversationIn(headers: IncomingHttpHeaders, top: Pick<TopLevel, 'prompt_cache_key' | 'metadataUserId'> | undefined): string | undefined {
  const fromBody = nonEmptyString(top?.prompt_cache_key);
  if (fromBody) return `prompt_cache_key:${fromBody}`;
  for (const name of CODEX_SESSION_HEADERS) {
    const session = header(headers, name);
    if (session) return `session:${session}`;
  }
  const claudeSession = header(headers, CLAUDE_CODE_SESSION_HEADER);
  if (claudeSession) return `claude_code:${claudeSession}`;
  const userId = nonEmptyString(top?.metadataUserId);
  return userId ? `claude_code:${claudeCodeSession(userId)}` : undefined;
}

/** `conversationIn` of a parsed JSON document (undefined or anything else: no body fields). */
export function conversationOf(headers: IncomingHttpHeaders, json: unknown): string | undefined {
  return conversationIn(headers, topLevelOf(json));
}

/** The affinity key of a call: its conversation scoped by the proxy key, so callers never share one. */
export function affinityKeyOf(headers: IncomingHttpHeaders, body: Pick<ParsedBody, 'top'> | undefined, keyId: string): string | undefined {
  const conversation = conversationIn(headers, body?.top);
  return conversation === undefined ? undefined : `${keyId}\0${conversation}`;
}
