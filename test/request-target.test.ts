import { describe, expect, it } from 'vitest';
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
