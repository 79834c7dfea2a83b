import { LRUCache } from 'lru-cache';

/** Base URLs split into origin and path prefix: parsing a URL per request is measurable. */
const splitBaseUrls = new LRUCache<string, { origin: string; prefix: string }>({ max: 1_000 });

/**
 * Where undici sends a request for `path` under `baseUrl` (which may carry a path prefix, e.g.
 * `/backend-api/codex`): the origin, and the full path there. Each base URL is parsed once.
 */
export function requestTarget(baseUrl: string, path: string): { origin: string; path: string } {
  let base = splitBaseUrls.get(baseUrl);
  if (!base) {
    const url = new URL(baseUrl);
    splitBaseUrls.set(baseUrl, (base = { origin: url.origin, prefix: url.pathname.replace(/\/+$/, '') }));
  }
  return { origin: base.origin, path: base.prefix + path };
}
