import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ANTHROPIC_SECRET, OPENAI_SECRET, allHeaderText, startTestGateway, type TestGateway } from './support/gateway.js';
import { ANTHROPIC_BODY, OPENAI_BODY, call, rawRequest } from './support/http.js';

const ADMIN_TOKEN = 'admin-token-for-header-tests';
const REQUEST_ID = /^[\w.-]{1,128}$/;

let gw: TestGateway;
let key: { id: string; secret: string };

beforeAll(async () => {
  gw = await startTestGateway({
    config: (mockUrl) => ({
      adminToken: ADMIN_TOKEN,
      providers: {
        // without upstream WebSocket support, requests carrying session headers still go over HTTP
        openai: { baseUrl: mockUrl, websocket: false, accounts: [{ id: 'oa-1', apiKey: OPENAI_SECRET }] },
        anthropic: { baseUrl: mockUrl, accounts: [{ id: 'an-1', apiKey: ANTHROPIC_SECRET }] },
      },
    }),
  });
});
afterAll(() => gw.close());
beforeEach(async () => {
  gw.mock.reset();
  key = await gw.createKey();
});

/** What a client, its reverse proxies and a forger may add: none of it may reach the upstream. */
function dirtyHeaders(secret: string) {
  return {
    authorization: `Bearer ${secret}`,
    'x-api-key': secret,
    'proxy-authorization': 'Basic cHJveHk6c2VjcmV0',
    forwarded: 'for=203.0.113.7;proto=https',
    'x-forwarded-for': '203.0.113.7',
    'x-forwarded-proto': 'https',
    'x-forwarded-host': 'gw.example.com',
    'x-real-ip': '203.0.113.7',
    'cf-connecting-ip': '203.0.113.7',
    'cf-ray': '8a1b2c3d4e5f-AMS',
    'x-tollgate-context': 'forged.signature',
    'x-tollgate-forwarded': '1',
    connection: 'keep-alive, X-Hop-One, x-hop-two',
    'x-hop-one': 'must not pass',
    'x-hop-two': 'must not pass either',
    'keep-alive': 'timeout=5, max=1000',
    te: 'trailers',
    // curl sends this for large bodies; undici refuses to send it on
    expect: '100-continue',
  };
}

const PASS_THROUGH = {
  'session-id': 'sess-7f3a9c',
  'thread-id': 'thread_0042',
  'x-codex-turn-state': 'eyJ0dXJuIjozLCJzdGF0ZSI6Inh5eiJ9',
  'anthropic-beta': 'prompt-caching-2024-07-31,interleaved-thinking-2025-05-14',
  'x-claude-code-session-id': '9b2e1c44-0d7b-4c8e-a3a1-5f0c2d9e7b10',
  originator: 'codex_cli_rs',
};

function expectClean(seen: Record<string, string | string[] | undefined>) {
  const text = allHeaderText(seen);
  expect(text).not.toContain(key.secret);
  for (const name of ['proxy-authorization', 'forwarded', 'x-real-ip', 'x-hop-one', 'x-hop-two', 'keep-alive', 'te', 'expect']) {
    expect(seen[name], name).toBeUndefined();
  }
  for (const name of Object.keys(seen)) {
    expect(name).not.toMatch(/^(x-forwarded-|cf-|x-tollgate-)/);
  }
  expect(String(seen.connection ?? '')).not.toMatch(/hop/i);
  expect(text).not.toContain('203.0.113.7');
  expect(text).not.toContain('forged.signature');
}

describe('request headers reaching the upstream', () => {
  it('OpenAI route: only the account credential and the client headers that are safe to pass', async () => {
    const res = await rawRequest(gw.url, {
      path: '/v1/responses',
      headers: { 'content-type': 'application/json', ...dirtyHeaders(key.secret), ...PASS_THROUGH },
      body: JSON.stringify(OPENAI_BODY),
    });
    expect(res.status, res.text).toBe(200);
    expect(gw.mock.requests).toHaveLength(1);
    const seen = gw.mock.requests[0]!.headers;
    expectClean(seen);
    expect(seen.authorization).toBe(`Bearer ${OPENAI_SECRET}`);
    expect(seen['x-api-key']).toBeUndefined();
    expect(seen['anthropic-version']).toBeUndefined();
    for (const [name, value] of Object.entries(PASS_THROUGH)) expect(seen[name], name).toBe(value);
  });

  it('Anthropic route: x-api-key is the account secret, the default anthropic-version is added', async () => {
    const res = await rawRequest(gw.url, {
      path: '/v1/messages',
      headers: { 'content-type': 'application/json', ...dirtyHeaders(key.secret), ...PASS_THROUGH },
      body: JSON.stringify(ANTHROPIC_BODY),
    });
    expect(res.status, res.text).toBe(200);
    const seen = gw.mock.requests[0]!.headers;
    expectClean(seen);
    expect(seen['x-api-key']).toBe(ANTHROPIC_SECRET);
    expect(seen.authorization).toBeUndefined();
    expect(seen['anthropic-version']).toBe('2023-06-01');
    for (const [name, value] of Object.entries(PASS_THROUGH)) expect(seen[name], name).toBe(value);
  });

  it('Anthropic route: a client-sent anthropic-version is kept as the only one', async () => {
    const res = await call(gw.url, '/v1/messages', {
      headers: { 'x-api-key': key.secret, 'anthropic-version': '2024-10-22' },
      body: ANTHROPIC_BODY,
    });
    expect(res.status, res.text).toBe(200);
    expect(gw.mock.requests[0]!.headers['anthropic-version']).toBe('2024-10-22');
  });

  it.each([
    ['/v1/responses', '{\n  "zeta" :1,\t"model":"gpt-5" ,"input" :  "héllo \\u00e9 \\n",\n"alpha": [ 3,2 ,1 ] }\n'],
    ['/v1/messages', '{"messages":[{"content":"hi","role":"user"}],   "model":"claude-sonnet-4-5","max_tokens":64  ,"z":{ }}'],
  ])('%s: the raw body bytes reach the upstream unchanged', async (path, body) => {
    const res = await call(gw.url, path, { headers: { 'x-api-key': key.secret }, body });
    expect(res.status, res.text).toBe(200);
    expect(gw.mock.requests[0]!.body).toBe(body);
    expect(Number(gw.mock.requests[0]!.headers['content-length'])).toBe(Buffer.byteLength(body));
  });

  it('keeps the query string of /v1/messages?beta=true', async () => {
    const res = await call(gw.url, '/v1/messages?beta=true', { headers: { authorization: `Bearer ${key.secret}` }, body: ANTHROPIC_BODY });
    expect(res.status, res.text).toBe(200);
    expect(gw.mock.requests[0]!.path).toBe('/v1/messages?beta=true');
  });
});

describe('the upstream WebSocket hop of a bridged Responses session', () => {
  let bridged: TestGateway;
  beforeAll(async () => {
    bridged = await startTestGateway({ mock: gw.mock }); // providers accept WebSocket by default
  });
  afterAll(() => bridged.close());

  it('opens the upstream WebSocket with the account credential and the same clean headers', async () => {
    const bridgedKey = await bridged.createKey();
    const res = await rawRequest(bridged.url, {
      path: '/v1/responses',
      headers: { 'content-type': 'application/json', ...dirtyHeaders(bridgedKey.secret), ...PASS_THROUGH },
      body: JSON.stringify(OPENAI_BODY),
    });
    expect(res.status, res.text).toBe(200);
    expect(gw.mock.requests).toHaveLength(0);
    expect(gw.mock.wsConnections).toHaveLength(1);
    const seen = gw.mock.wsConnections[0]!.headers;
    const text = allHeaderText(seen);
    expect(text).not.toContain(bridgedKey.secret);
    expect(seen.authorization).toBe(`Bearer ${OPENAI_SECRET}`);
    for (const name of ['x-api-key', 'proxy-authorization', 'forwarded', 'x-real-ip', 'x-hop-one', 'x-hop-two', 'keep-alive', 'te', 'expect']) {
      expect(seen[name], name).toBeUndefined();
    }
    for (const name of Object.keys(seen)) expect(name).not.toMatch(/^(x-forwarded-|cf-|x-tollgate-)/);
    expect(text).not.toContain('203.0.113.7');
    for (const name of ['session-id', 'thread-id', 'anthropic-beta', 'x-claude-code-session-id', 'originator'] as const) {
      expect(seen[name], name).toBe(PASS_THROUGH[name]);
    }
  });
});

describe('response headers going back to the client', () => {
  it('passes upstream headers back except hop-by-hop ones', async () => {
    gw.mock.enqueue({
      status: 200,
      headers: {
        connection: 'x-upstream-hop',
        'x-upstream-hop': 'must not pass',
        'keep-alive': 'timeout=7, max=99',
        'proxy-authenticate': 'Basic realm="upstream"',
        'x-upstream-custom': 'kept',
        'openai-processing-ms': '42',
        'x-request-id': 'req_upstream_123',
      },
      body: { id: 'resp_scripted', object: 'response', status: 'completed', output: [] },
    });
    const res = await rawRequest(gw.url, {
      path: '/v1/responses',
      headers: { 'content-type': 'application/json', 'x-api-key': key.secret },
      body: JSON.stringify(OPENAI_BODY),
    });
    expect(res.status, res.text).toBe(200);
    expect(JSON.parse(res.text)).toMatchObject({ id: 'resp_scripted' });
    expect(res.headers['x-upstream-custom']).toBe('kept');
    expect(res.headers['openai-processing-ms']).toBe('42');
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    expect(res.rawHeaderNames).not.toContain('x-upstream-hop');
    expect(res.rawHeaderNames).not.toContain('proxy-authenticate');
    expect(String(res.headers.connection ?? '')).not.toContain('x-upstream-hop');
    expect(String(res.headers['keep-alive'] ?? '')).not.toContain('max=99');
    // the gateway's own request id stays authoritative; the upstream's is kept under another name
    expect(res.headers['x-request-id']).not.toBe('req_upstream_123');
    expect(res.headers['x-request-id']).toMatch(REQUEST_ID);
    expect(res.headers['x-upstream-request-id']).toBe('req_upstream_123');
  });
});

describe('x-request-id', () => {
  const proxied = (headers: Record<string, string>) =>
    call(gw.url, '/v1/responses', { headers: { 'x-api-key': key.secret, ...headers }, body: OPENAI_BODY });

  it('is generated when the client sent none, different for each request', async () => {
    const a = await proxied({});
    const b = await proxied({});
    expect(a.status).toBe(200);
    expect(a.headers.get('x-request-id')).toMatch(REQUEST_ID);
    expect(b.headers.get('x-request-id')).toMatch(REQUEST_ID);
    expect(a.headers.get('x-request-id')).not.toBe(b.headers.get('x-request-id'));
  });

  it.each(['client-req.42_X', 'a', 'x'.repeat(128)])('echoes a well-formed client id (%s)', async (id) => {
    const res = await proxied({ 'x-request-id': id });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-request-id')).toBe(id);
  });

  it.each([
    ['with spaces', 'has spaces in it'],
    ['too long', 'y'.repeat(129)],
    ['with odd characters', 'id;drop=1'],
  ])('replaces a malformed client id (%s) with a generated one', async (_name, id) => {
    const res = await proxied({ 'x-request-id': id });
    expect(res.status).toBe(200);
    const returned = res.headers.get('x-request-id');
    expect(returned).toMatch(REQUEST_ID);
    expect(returned).not.toBe(id);
  });

  const OTHER_RESPONSES: Array<[string, string, RequestInit, number]> = [
    ['401 on a model route', '/v1/responses', { method: 'POST', body: '{}' }, 401],
    ['401 on /v1/usage', '/v1/usage', {}, 401],
    ['404 on an unknown route', '/v1/nothing-here', {}, 404],
    ['405 on a wrong method', '/v1/chat/completions', {}, 405],
    ['GET /health/live', '/health/live', {}, 200],
    ['GET /health/ready', '/health/ready', {}, 200],
    ['GET /metrics (internal listener only)', '/metrics', {}, 404],
    ['admin with the token', '/admin/keys', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } }, 200],
    ['admin without the token', '/admin/keys', {}, 401],
  ];
  const send = async (path: string, init: RequestInit, requestId: string) => {
    const res = await fetch(gw.url + path, { ...init, headers: { ...(init.headers as Record<string, string>), 'x-request-id': requestId } });
    await res.arrayBuffer();
    return res;
  };

  it.each(OTHER_RESPONSES)('is echoed on %s', async (_name, path, init, status) => {
    const id = 'trace-0123.abc_DEF';
    const res = await send(path, init, id);
    expect(res.status).toBe(status);
    expect(res.headers.get('x-request-id')).toBe(id);
  });

  it.each(OTHER_RESPONSES)('is generated on %s when the client id is malformed', async (_name, path, init, status) => {
    const bad = 'not ok ' + 'z'.repeat(130);
    const res = await send(path, init, bad);
    expect(res.status).toBe(status);
    expect(res.headers.get('x-request-id')).toMatch(REQUEST_ID);
    expect(res.headers.get('x-request-id')).not.toBe(bad);
    expect(gw.mock.requests).toHaveLength(0);
  });
});
