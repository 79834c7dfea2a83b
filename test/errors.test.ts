import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ANTHROPIC_SECRET, OPENAI_SECRET, startTestGateway, useTestGateway, type TestGateway } from './support/gateway.js';
import { ANTHROPIC_BODY, OPENAI_BODY, call, closedPort, type Reply } from './support/http.js';

const gw = useTestGateway();
beforeEach(async () => {
  // an upstream 429 cools the only account down; each test starts with it usable
  for (const id of ['oa-1', 'an-1']) {
    await gw.store.setAccountCooldown(id, 0);
    await gw.store.setAccountDisabled(id, false);
  }
});

const ROUTES = [
  { path: '/v1/responses', body: OPENAI_BODY, shape: 'openai' as const },
  { path: '/v1/messages', body: ANTHROPIC_BODY, shape: 'anthropic' as const },
];

function expectGatewayError(res: Reply, shape: 'openai' | 'anthropic', status: number, code: string, type: string) {
  expect(res.status, res.text).toBe(status);
  if (shape === 'openai') {
    expect(res.json).toEqual({ error: { message: expect.any(String), type, code, param: null } });
  } else {
    expect(res.json).toMatchObject({ type: 'error', error: { type, message: expect.any(String) } });
    expect(res.json.error.code).toBe(code);
  }
  expect(res.headers.get('x-request-id')).toMatch(/^[\w.-]{1,128}$/);
}

const authed = () => ({ 'x-api-key': gw.key.secret });

describe('request body size', () => {
  let small: TestGateway;
  beforeAll(async () => {
    small = await startTestGateway({ config: () => ({ server: { host: '127.0.0.1', port: 0, internalHost: '127.0.0.1', internalPort: 0, bodyLimitBytes: 1024 } }) });
  });
  afterAll(() => small.close());

  it.each(ROUTES)('$path: a body over the configured limit gets 413 in the provider shape, naming the limit', async ({ path, shape }) => {
    const smallKey = await small.createKey();
    const body = { model: 'gpt-5', input: 'x'.repeat(2_000) };
    const res = await call(small.url, path, { headers: { 'x-api-key': smallKey.secret }, body });
    expectGatewayError(res, shape, 413, 'request_too_large', shape === 'openai' ? 'invalid_request_error' : 'request_too_large');
    expect(res.json.error.message).toContain('1024');
    expect(small.mock.requests).toHaveLength(0);
  });

  it('a chunked body (no content-length) that grows over the limit also gets 413', async () => {
    const smallKey = await small.createKey();
    const chunk = new TextEncoder().encode('x'.repeat(512));
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent++ < 4) controller.enqueue(chunk);
        else controller.close();
      },
    });
    const res = await fetch(`${small.url}/v1/responses`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': smallKey.secret },
      body,
      duplex: 'half',
    } as RequestInit);
    const json = (await res.json()) as { error: { code: string; message: string } };
    expect(res.status).toBe(413);
    expect(json.error.code).toBe('request_too_large');
    expect(json.error.message).toContain('1024');
    expect(small.mock.requests).toHaveLength(0);
  });

  it('a body just under the configured limit passes', async () => {
    const smallKey = await small.createKey();
    const body = JSON.stringify({ model: 'gpt-5', input: 'x'.repeat(900) });
    expect(Buffer.byteLength(body)).toBeLessThanOrEqual(1024);
    const res = await call(small.url, '/v1/responses', { headers: { 'x-api-key': smallKey.secret }, body });
    expect(res.status, res.text).toBe(200);
  });

  it('the default limit accepts a 2 MiB agent request and forwards all of it', async () => {
    const input = 'a'.repeat(2 * 1024 * 1024);
    const body = JSON.stringify({ model: 'gpt-5', input });
    const res = await call(gw.url, '/v1/responses', { headers: authed(), body });
    expect(res.status, res.text.slice(0, 200)).toBe(200);
    expect(gw.mock.requests).toHaveLength(1);
    expect(gw.mock.requests[0]!.body.length).toBe(body.length);
    expect((gw.mock.requests[0]!.json as { input: string }).input).toBe(input);
  });
});

describe('bad input', () => {
  it.each(ROUTES)('$path: malformed JSON gets 400 with a clear message and reaches nothing upstream', async ({ path, shape }) => {
    const res = await call(gw.url, path, { headers: authed(), body: '{"model": "gpt-5", "input": ' });
    expectGatewayError(res, shape, 400, 'invalid_json', 'invalid_request_error');
    expect(res.json.error.message).toMatch(/not valid JSON/);
    expect(gw.mock.requests).toHaveLength(0);
  });

  it.each([
    ['GET', '/v1/nothing-here', 'openai'],
    ['POST', '/v1/completions', 'openai'],
    ['POST', '/v1/messages/batches', 'anthropic'],
    ['GET', '/', 'openai'],
  ] as const)('%s %s: unknown route gets 404 in the provider shape', async (method, path, shape) => {
    const res = await call(gw.url, path, { method, headers: authed(), body: method === 'POST' ? {} : undefined });
    expectGatewayError(res, shape, 404, 'not_found', shape === 'openai' ? 'invalid_request_error' : 'not_found_error');
    expect(res.json.error.message).toContain(path);
    expect(gw.mock.requests).toHaveLength(0);
  });

  it.each([
    ['GET', '/v1/chat/completions', 'openai'],
    ['DELETE', '/v1/responses', 'openai'],
    ['PUT', '/v1/messages', 'anthropic'],
    ['POST', '/v1/usage', 'openai'],
    ['POST', '/health/live', 'openai'],
  ] as const)('%s %s: wrong method gets 405', async (method, path, shape) => {
    const res = await call(gw.url, path, { method, headers: authed(), body: method === 'GET' || method === 'DELETE' ? undefined : {} });
    expectGatewayError(res, shape, 405, 'method_not_allowed', 'invalid_request_error');
    expect(res.json.error.message).toContain(method);
    expect(gw.mock.requests).toHaveLength(0);
  });
});

describe('upstream errors pass through', () => {
  const OPENAI_ERROR = '{\n  "error": {\n    "message": "Invalid \'input\': expected a string.",\n    "type": "invalid_request_error",\n    "param": "input",\n    "code": null\n  }\n}';
  const ANTHROPIC_ERROR = '{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}';

  it.each([
    ['/v1/responses', 400, OPENAI_ERROR],
    ['/v1/messages', 400, ANTHROPIC_ERROR],
    ['/v1/responses', 429, '{"error":{"message":"Rate limit reached for gpt-5 on tokens per min (TPM).","type":"tokens","param":null,"code":"rate_limit_exceeded"}}'],
    ['/v1/messages', 429, '{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}'],
    ['/v1/responses', 500, '{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}'],
    ['/v1/messages', 529, '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'],
  ])('%s: upstream %i keeps its status and body', async (path, status, body) => {
    // enough answers for every attempt the gateway might make
    const headers: Record<string, string> = status === 429 ? { 'retry-after': '20' } : {};
    gw.mock.enqueue(...Array.from({ length: 3 }, () => ({ status, body, headers })));
    const res = await call(gw.url, path, { headers: authed(), body: path === '/v1/messages' ? ANTHROPIC_BODY : OPENAI_BODY });
    expect(res.status).toBe(status);
    expect(res.text).toBe(body);
    expect(res.headers.get('x-request-id')).toMatch(/^[\w.-]{1,128}$/);
    if (status === 429) expect(res.headers.get('retry-after')).toBe('20');
    // one account: it was tried once, no invented retries
    expect(gw.mock.requests).toHaveLength(1);
  });

  it.each([
    ['/v1/responses', OPENAI_SECRET, OPENAI_BODY],
    ['/v1/messages', ANTHROPIC_SECRET, ANTHROPIC_BODY],
  ])('%s: an upstream error that echoes the account secret has it scrubbed', async (path, secret, requestBody) => {
    const body = `{"error":{"message":"Incorrect API key provided: ${secret}. You can find your API key at https://example.com.","code":"bad_key","echo":"${secret}"}}`;
    gw.mock.enqueue({ status: 400, body });
    const res = await call(gw.url, path, { headers: authed(), body: requestBody });
    expect(res.status).toBe(400);
    expect(res.text).not.toContain(secret);
    expect(res.text).toBe(body.split(secret).join('[redacted]'));
  });
});

describe('upstream unreachable', () => {
  let dead: TestGateway;
  beforeAll(async () => {
    const port = await closedPort();
    const baseUrl = `http://127.0.0.1:${port}`;
    dead = await startTestGateway({
      config: () => ({
        providers: {
          openai: { baseUrl, accounts: [{ id: 'oa-1', apiKey: OPENAI_SECRET }] },
          anthropic: { baseUrl, accounts: [{ id: 'an-1', apiKey: ANTHROPIC_SECRET }] },
        },
      }),
    });
  });
  afterAll(() => dead.close());

  it.each(ROUTES)('$path: connection refused gets 502 upstream_unreachable in the provider shape', async ({ path, body, shape }) => {
    const deadKey = await dead.createKey();
    const res = await call(dead.url, path, { headers: { 'x-api-key': deadKey.secret, 'x-request-id': 'trace-502' }, body });
    expectGatewayError(res, shape, 502, 'upstream_unreachable', shape === 'openai' ? 'server_error' : 'api_error');
    expect(res.headers.get('x-request-id')).toBe('trace-502');
    expect(res.json.error.message).toMatch(/ECONNREFUSED/);
    expect(res.text).not.toContain(OPENAI_SECRET);
    expect(res.text).not.toContain(ANTHROPIC_SECRET);
  });
});

describe('health', () => {
  it('GET /health/live answers 200', async () => {
    const res = await call(gw.url, '/health/live');
    expect(res.status).toBe(200);
    expect(res.json).toEqual({ status: 'ok' });
  });

  it('GET /health/ready answers 200 with the store kind', async () => {
    const res = await call(gw.url, '/health/ready');
    expect(res.status).toBe(200);
    expect(res.json).toEqual({ status: 'ready', store: 'memory' });
  });
});
