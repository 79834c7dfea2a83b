import type { IncomingHttpHeaders } from 'node:http';

export type HeaderMap = Record<string, string | string[]>;

/** Hop-by-hop headers (RFC 9110 §7.6.1) plus the ones undici or Node manage themselves. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'expect',
  'host',
  'content-length',
  'proxy-authenticate',
  'proxy-authorization',
]);

/** Client credentials and what a client or its proxies say about the client: never upstream. */
const CLIENT_ONLY = new Set(['authorization', 'x-api-key', 'forwarded', 'x-real-ip', 'cookie']);

/** WebSocket handshake headers that `ws` generates for the upstream connection itself. */
export const WEBSOCKET_HANDSHAKE = new Set([
  'sec-websocket-key',
  'sec-websocket-version',
  'sec-websocket-extensions',
  'sec-websocket-accept',
]);

function namedInConnection(headers: IncomingHttpHeaders | HeaderMap): Set<string> {
  const value = headers.connection;
  const list = Array.isArray(value) ? value.join(',') : value ?? '';
  return new Set(list.split(',').map((token) => token.trim().toLowerCase()).filter(Boolean));
}

function isStripped(name: string, connectionNamed: Set<string>): boolean {
  return (
    HOP_BY_HOP.has(name) ||
    connectionNamed.has(name) ||
    name.startsWith('x-tollgate-') ||
    name.startsWith('x-forwarded-') ||
    name.startsWith('cf-')
  );
}

/**
 * The one strip list for every upstream hop (HTTP, SSE, WebSocket, owner forward): what is
 * left is safe to send on. The caller adds the account's credential afterwards.
 */
export function upstreamRequestHeaders(headers: IncomingHttpHeaders, extraStrip?: ReadonlySet<string>): HeaderMap {
  const named = namedInConnection(headers);
  const out: HeaderMap = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || CLIENT_ONLY.has(name) || isStripped(name, named) || extraStrip?.has(name)) continue;
    out[name] = value;
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

export function queryOf(url: string): string {
  const at = url.indexOf('?');
  return at === -1 ? '' : url.slice(at);
}

export function firstValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}
