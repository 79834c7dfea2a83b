import type { IncomingHttpHeaders } from 'node:http';
import { HOP_BY_HOP } from '../config/reserved-headers.js';
import type { ProviderName } from '../config/schema.js';

export type HeaderMap = Record<string, string | string[]>;

/**
 * What a client may send upstream, per provider: everything else is dropped. Credentials
 * (`authorization`, `x-api-key`, `cookie`) and the headers that choose whose account or
 * organization is billed (`openai-organization`, `openai-project`, `chatgpt-account-id`) are
 * deliberately absent: the account's own values come from config (upstream/credentials.ts).
 */
const COMMON = [
  // content negotiation; accept-encoding is set by the gateway (identity) so meters can read bodies
  'content-type',
  'accept',
  'accept-language',
  'user-agent',
  // retries of the same call are deduplicated upstream
  'idempotency-key',
  'x-client-request-id',
  // W3C trace context, continued across the owner hop
  'traceparent',
  'tracestate',
];
/** The official SDKs' telemetry (`x-stainless-os`, `-retry-count`, …), harmless and varied. */
const PREFIXES = ['x-stainless-'];

/** OpenAI API and ChatGPT's Codex backend: the Responses protocol and the session headers Codex sends. */
const OPENAI_FAMILY = [
  ...COMMON,
  'openai-beta', // responses=experimental, responses_websockets=…
  // Codex session and turn identity: prompt-cache routing and turn continuity upstream
  'session-id',
  'session_id',
  'thread-id',
  'conversation_id',
  'x-codex-turn-state',
  'x-codex-turn-metadata',
  'x-codex-window-id',
  'x-codex-parent-thread-id',
  'x-codex-installation-id',
  'x-codex-beta-features',
  'x-openai-subagent',
  // which client and version is calling (Codex: originator=codex_cli_rs, version=0.x)
  'originator',
  'version',
];

/** Anthropic Messages: protocol version and betas, plus what Claude Code sends about itself. */
const ANTHROPIC = [
  ...COMMON,
  'anthropic-version',
  'anthropic-beta',
  'anthropic-dangerous-direct-browser-access', // set by the SDK in browser-like runtimes
  'x-app', // Claude Code: `cli`
  'x-claude-code-session-id',
];

const ALLOWED: Record<ProviderName, ReadonlySet<string>> = {
  openai: new Set(OPENAI_FAMILY),
  chatgpt: new Set(OPENAI_FAMILY),
  anthropic: new Set(ANTHROPIC),
};

const NONE: ReadonlySet<string> = new Set();

/** The headers `Connection` names, which end at this hop (the usual `keep-alive` is hop-by-hop anyway). */
function namedInConnection(headers: IncomingHttpHeaders | HeaderMap): ReadonlySet<string> {
  const value = headers.connection;
  if (value === undefined || value === 'keep-alive') return NONE;
  const list = Array.isArray(value) ? value.join(',') : value;
  return new Set(list.split(',').map((token) => token.trim().toLowerCase()).filter(Boolean));
}

function isStripped(name: string, connectionNamed: ReadonlySet<string>): boolean {
  return (
    HOP_BY_HOP.has(name) ||
    connectionNamed.has(name) ||
    name.startsWith('x-tollgate-') ||
    name.startsWith('x-forwarded-') ||
    name.startsWith('cf-')
  );
}

/**
 * The one allow-list for every upstream hop of `provider` (HTTP, SSE, WebSocket handshake, and
 * the owner forward, whose receiver applies it again): only what the provider's API defines and
 * the session headers real clients send. The account's credential and headers are added after.
 */
export function upstreamRequestHeaders(provider: ProviderName, headers: IncomingHttpHeaders): HeaderMap {
  const allowed = ALLOWED[provider];
  const named = namedInConnection(headers);
  const out: HeaderMap = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || named.has(name)) continue;
    if (allowed.has(name) || PREFIXES.some((prefix) => name.startsWith(prefix))) out[name] = value;
  }
  return out;
}

/** Response headers going back to the client: everything but hop-by-hop ones. */
export function clientResponseHeaders(headers: IncomingHttpHeaders | HeaderMap): HeaderMap {
  const named = namedInConnection(headers);
  const out: HeaderMap = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || isStripped(name, named)) continue;
    out[name] = value;
  }
  return out;
}

/**
 * An upstream's response headers for the client: the gateway's own `x-request-id` stays the
 * request id, so the upstream's travels as `x-upstream-request-id`.
 */
export function upstreamResponseHeaders(headers: IncomingHttpHeaders | HeaderMap): HeaderMap {
  const out = clientResponseHeaders(headers);
  if (out['x-request-id'] !== undefined) {
    out['x-upstream-request-id'] = out['x-request-id'];
    delete out['x-request-id'];
  }
  return out;
}

/** A request target's path, without its query string. */
export function pathOf(url: string): string {
  const at = url.indexOf('?');
  return at === -1 ? url : url.slice(0, at);
}

/**
 * A request target's query string as it goes upstream: '' when there is none (model calls mostly),
 * else as a URL parser writes it (percent-encoded, without a fragment), as undici would get it
 * from a whole URL.
 */
export function queryOf(url: string): string {
  return url.includes('?') ? new URL(url, 'http://query.invalid').search : '';
}

export function firstValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}
