import { describe, expect, it } from 'vitest';
import { queryOf } from '../src/http/headers.js';
import { requestTarget } from '../src/http/request-target.js';

describe('requestTarget: a base URL and an API path as undici takes them', () => {
  it.each([
    ['http://127.0.0.1:8081', '/internal/bridge/responses?x=1', 'http://127.0.0.1:8081', '/internal/bridge/responses?x=1'],
    ['http://127.0.0.1:8081/', '/internal/bridge/responses', 'http://127.0.0.1:8081', '/internal/bridge/responses'],
    ['https://chatgpt.com/backend-api/codex', '/responses', 'https://chatgpt.com', '/backend-api/codex/responses'],
    ['https://proxy.example:8443/openai//', '/v1/models', 'https://proxy.example:8443', '/openai/v1/models'],
  ])('%s + %s', (base, path, origin, fullPath) => {
    expect(requestTarget(base, path)).toEqual({ origin, path: fullPath });
    // the second time from the parsed base: the same answer
    expect(requestTarget(base, path)).toEqual({ origin, path: fullPath });
  });
});

describe('queryOf: the query string a call takes upstream', () => {
  it.each([
    ['/v1/responses', ''],
    ['/v1/responses?', ''],
    ['/v1/models?limit=5&after=m-1', '?limit=5&after=m-1'],
    ['/v1/responses?q=a b"<>', '?q=a%20b%22%3C%3E'],
    ['/v1/responses?x=1#fragment', '?x=1'],
  ])('%s -> "%s"', (url, query) => {
    expect(queryOf(url)).toBe(query);
  });
});
