// Header names the gateway sets itself: config refuses them in an account's `headers`, and
// the HTTP layer strips the hop-by-hop ones in both directions.

/** Hop-by-hop headers (RFC 9110 §7.6.1) plus the ones undici or Node manage themselves. */
export const HOP_BY_HOP = new Set([
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

/**
 * Names an operator may not set in an account's `headers`: the credential, what undici or `ws`
 * compute, and the gateway's own.
 */
export function isReservedHeader(name: string): boolean {
  const lower = name.toLowerCase();
  return (
    HOP_BY_HOP.has(lower) ||
    ['authorization', 'x-api-key', 'cookie', 'content-encoding', 'accept-encoding'].includes(lower) ||
    lower.startsWith('sec-websocket-') ||
    lower.startsWith('x-tollgate-')
  );
}

