import type { IncomingMessage } from 'node:http';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { ANTHROPIC_SECRET, OPENAI_SECRET, allHeaderText, startTestGateway, type TestGateway } from './support/gateway.js';
import { ANTHROPIC_BODY, OPENAI_BODY, call, rawRequest } from './support/http.js';

const ADMIN_TOKEN = 'admin-token-for-header-tests';
const REQUEST_ID = /^[\w.-]{1,128}$/;
/** What the operator configured for the accounts: these, and only these, choose who is billed. */
const OPENAI_ACCOUNT = { id: 'oa-1', apiKey: OPENAI_SECRET, organization: 'org-tollgate', project: 'proj_tollgate', headers: { 'X-Account-Tag': 'team-a' } };
const ANTHROPIC_ACCOUNT = { id: 'an-1', apiKey: ANTHROPIC_SECRET, headers: { 'x-account-tag': 'team-b' } };

let gw: TestGateway;
let key: { id: string; secret: string };

beforeAll(async () => {
  gw = await startTestGateway({
    config: (mockUrl) => ({
      adminToken: ADMIN_TOKEN,
      providers: {
        // without upstream WebSocket support, requests carrying session headers still go over HTTP
        openai: { baseUrl: mockUrl, websocket: false, accounts: [OPENAI_ACCOUNT] },
        anthropic: { baseUrl: mockUrl, accounts: [ANTHROPIC_ACCOUNT] },
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
    cookie: 'session=stolen-cookie-value',
    // headers that choose whose account or organization is billed
    'openai-organization': 'org-doesnotexist',
    'openai-project': 'proj_attacker',
    'chatgpt-account-id': 'acct-attacker',
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
    // anything not on the provider's allow-list
    'x-random-thing': 'unknown to every provider',
    'x-request-id': 'client-request-7',
  };
}
/** Never sent upstream by anyone; the credential and billing headers are checked by their values. */
const NEVER_PASSED = [
  'proxy-authorization', 'cookie', 'forwarded', 'x-real-ip', 'x-hop-one', 'x-hop-two', 'keep-alive', 'te', 'expect', 'x-random-thing', 'x-request-id',
];

/** Sent by the OpenAI SDKs and Codex, every one of them on the OpenAI/ChatGPT allow-list. */
const OPENAI_ALLOWED = {
  'user-agent': 'codex_cli_rs/0.124.0',
  'accept-language': 'en-US',
  'idempotency-key': 'idem-42',
  'x-client-request-id': 'creq-42',
  traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
  tracestate: 'vendor=opaque',
  'x-stainless-os': 'Linux',
  'x-stainless-retry-count': '0',
  'openai-beta': 'responses=experimental',
  'session-id': 'sess-7f3a9c',
  session_id: 'sess-7f3a9c',
  'thread-id': 'thread_0042',
  conversation_id: 'conv-0042',
  'x-codex-turn-state': 'eyJ0dXJuIjozLCJzdGF0ZSI6Inh5eiJ9',
  'x-codex-turn-metadata': '{"turn_id":"t1"}',
  'x-codex-window-id': 'win-1',
  'x-codex-parent-thread-id': 'thread_0041',
  'x-codex-installation-id': 'inst-1',
  'x-codex-beta-features': 'feature_a',
  'x-openai-subagent': 'review',
  originator: 'codex_cli_rs',
  version: '0.124.0',
};
/** Sent by the Anthropic SDK and Claude Code, every one of them on the Anthropic allow-list. */
const ANTHROPIC_ALLOWED = {
  'user-agent': 'claude-cli/2.0.0 (external, cli)',
  'idempotency-key': 'idem-43',
  'x-stainless-lang': 'js',
  'anthropic-beta': 'prompt-caching-2024-07-31,interleaved-thinking-2025-05-14',
  'anthropic-dangerous-direct-browser-access': 'true',
  'x-app': 'cli',
  'x-claude-code-session-id': '9b2e1c44-0d7b-4c8e-a3a1-5f0c2d9e7b10',
};

function expectClean(seen: Record<string, string | string[] | undefined>, secret: string) {
  const text = allHeaderText(seen);
  expect(text).not.toContain(secret);
  for (const name of NEVER_PASSED) expect(seen[name], name).toBeUndefined();
  for (const name of Object.keys(seen)) {
    expect(name).not.toMatch(/^(x-forwarded-|cf-|x-tollgate-)/);
  }
  expect(String(seen.connection ?? '')).not.toMatch(/hop/i);
  for (const forbidden of ['203.0.113.7', 'forged.signature', 'stolen-cookie-value', 'org-doesnotexist', 'proj_attacker', 'acct-attacker']) {
    expect(text).not.toContain(forbidden);
  }
}

/** The OpenAI account's own values, from config. */
function expectOpenAIAccount(seen: Record<string, string | string[] | undefined>) {
  expect(seen.authorization).toBe(`Bearer ${OPENAI_SECRET}`);
  expect(seen['openai-organization']).toBe('org-tollgate');
  expect(seen['openai-project']).toBe('proj_tollgate');
  expect(seen['x-account-tag']).toBe('team-a');
  expect(seen['x-api-key']).toBeUndefined();
  expect(seen['chatgpt-account-id']).toBeUndefined();
}

describe('request headers reaching the upstream', () => {
  it('OpenAI route: the account credential, organization, project and headers, plus every allow-listed client header', async () => {
    const res = await rawRequest(gw.url, {
      path: '/v1/responses',
      headers: { 'content-type': 'application/json', ...dirtyHeaders(key.secret), ...ANTHROPIC_ALLOWED, ...OPENAI_ALLOWED },
      body: JSON.stringify(OPENAI_BODY),
    });
    expect(res.status, res.text).toBe(200);
    expect(gw.mock.requests).toHaveLength(1);
    const seen = gw.mock.requests[0]!.headers;
    expectClean(seen, key.secret);
    expectOpenAIAccount(seen);
    for (const [name, value] of Object.entries(OPENAI_ALLOWED)) expect(seen[name], name).toBe(value);
    // another provider's protocol headers are not OpenAI's
    for (const name of ['anthropic-beta', 'anthropic-dangerous-direct-browser-access', 'x-app', 'x-claude-code-session-id']) {
      expect(seen[name], name).toBeUndefined();
    }
  });

  it('Anthropic route: x-api-key is the account secret, the default anthropic-version is added, Anthropic headers only', async () => {
    const res = await rawRequest(gw.url, {
      path: '/v1/messages',
      headers: { 'content-type': 'application/json', ...dirtyHeaders(key.secret), ...OPENAI_ALLOWED, ...ANTHROPIC_ALLOWED },
      body: JSON.stringify(ANTHROPIC_BODY),
    });
    expect(res.status, res.text).toBe(200);
    const seen = gw.mock.requests[0]!.headers;
    expectClean(seen, key.secret);
    expect(seen['x-api-key']).toBe(ANTHROPIC_SECRET);
    expect(seen.authorization).toBeUndefined();
    expect(seen['anthropic-version']).toBe('2023-06-01');
    expect(seen['x-account-tag']).toBe('team-b');
    for (const [name, value] of Object.entries(ANTHROPIC_ALLOWED)) expect(seen[name], name).toBe(value);
    for (const name of ['openai-organization', 'openai-beta', 'session-id', 'x-codex-turn-state', 'originator']) expect(seen[name], name).toBeUndefined();
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

/** A client WebSocket to `GET /v1/responses`: opened, or the HTTP status of its refusal with its headers and body. */
function upgrade(url: string, headers: Record<string, string>): Promise<{ ws?: WebSocket; status: number; headers: IncomingMessage['headers']; body: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/v1/responses`, { headers });
    ws.once('upgrade', (res) => ws.once('open', () => resolve({ ws, status: 101, headers: res.headers, body: '' })));
    ws.once('unexpected-response', (_req, res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
    });
    ws.once('error', reject);
  });
}

describe('the upstream WebSocket hops: client WebSocket and bridged Responses session', () => {
  let wsGateway: TestGateway;
  beforeAll(async () => {
    wsGateway = await startTestGateway({
      mock: gw.mock,
      // providers accept WebSocket by default
      config: (mockUrl) => ({ providers: { openai: { baseUrl: mockUrl, accounts: [OPENAI_ACCOUNT] } } }),
    });
  });
  afterAll(() => wsGateway.close());

  it('a client WebSocket upgrade opens the upstream one with the same allow-list and the account values', async () => {
    const wsKey = await wsGateway.createKey();
    const { 'x-tollgate-context': _forged, connection: _connection, 'keep-alive': _keepAlive, te: _te, expect: _expect, ...dirty } = dirtyHeaders(wsKey.secret);
    const opened = await upgrade(wsGateway.url, { ...dirty, 'x-tollgate-context': 'forged.signature', ...OPENAI_ALLOWED });
    expect(opened.status, opened.body).toBe(101);
    opened.ws!.close();
    expect(gw.mock.wsConnections).toHaveLength(1);
    const seen = gw.mock.wsConnections[0]!.headers;
    expectClean(seen, wsKey.secret);
    expectOpenAIAccount(seen);
    for (const [name, value] of Object.entries(OPENAI_ALLOWED)) expect(seen[name], name).toBe(value);
  });

  it('a bridged HTTP session opens the upstream WebSocket with the account values and the clean headers', async () => {
    const bridgedKey = await wsGateway.createKey();
    const res = await rawRequest(wsGateway.url, {
      path: '/v1/responses',
      headers: { 'content-type': 'application/json', ...dirtyHeaders(bridgedKey.secret), ...OPENAI_ALLOWED },
      body: JSON.stringify(OPENAI_BODY),
    });
    expect(res.status, res.text).toBe(200);
    expect(gw.mock.requests).toHaveLength(0);
    expect(gw.mock.wsConnections).toHaveLength(1);
    const seen = gw.mock.wsConnections[0]!.headers;
    expectClean(seen, bridgedKey.secret);
    expectOpenAIAccount(seen);
    for (const [name, value] of Object.entries(OPENAI_ALLOWED)) expect(seen[name], name).toBe(value);
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

describe('secrets scrubbed from what upstreams send back', () => {
  const SERVING_SECRET = 'sk-serving-account-' + 's'.repeat(24);
  const OTHER_SECRET = 'sk-proj-other-account-' + 'Q7x'.repeat(8) + 'WXYZ';
  /** Another account's key, whole and in the masked forms upstreams and tools print. */
  const LEAKS = [
    OTHER_SECRET,
    `${OTHER_SECRET.slice(0, 6)}…${OTHER_SECRET.slice(-4)}`,
    `${OTHER_SECRET.slice(0, 10)}...${OTHER_SECRET.slice(-4)}`,
    `${OTHER_SECRET.slice(0, 6)}${'*'.repeat(32)}${OTHER_SECRET.slice(-4)}`,
    `${ANTHROPIC_SECRET.slice(0, 8)}…${ANTHROPIC_SECRET.slice(-6)}`,
  ];
  /** Not one of ours: a masked key with another prefix passes as it is. */
  const FOREIGN = 'sk-zzzzzz…WXYZ';
  const leakyText = `key ${LEAKS.join(' and ')}; not ours: ${FOREIGN}`;
  const leakyError = { error: { message: leakyText, type: 'invalid_request_error', param: null, code: 'invalid_api_key' } };
  // HTTP header values are Latin-1: the `…` forms travel in bodies only
  const ASCII_LEAKS = LEAKS.filter((leak) => !leak.includes('…'));
  const leakyHeaders = { 'x-debug-auth': `Bearer ${OTHER_SECRET}`, 'x-debug-masked': ASCII_LEAKS.slice(1).join(', ') };

  let scrubbing: TestGateway;
  let scrubKey: { id: string; secret: string };
  beforeAll(async () => {
    scrubbing = await startTestGateway({
      mock: gw.mock,
      config: (mockUrl) => ({
        providers: {
          // fill_first: oa-serving answers everything; the leaked key is the idle account's
          openai: {
            baseUrl: mockUrl,
            strategy: 'fill_first',
            accounts: [
              { id: 'oa-serving', apiKey: SERVING_SECRET },
              { id: 'oa-other', apiKey: OTHER_SECRET },
            ],
          },
          anthropic: { baseUrl: mockUrl, accounts: [{ id: 'an-1', apiKey: ANTHROPIC_SECRET }] },
        },
      }),
    });
    scrubKey = await scrubbing.createKey();
  });
  afterAll(() => scrubbing.close());

  function expectScrubbed(text: string, leaks = LEAKS) {
    for (const leak of leaks) expect(text).not.toContain(leak);
    expect(text).not.toContain(OTHER_SECRET.slice(-10));
    expect(text).toContain('[redacted]');
  }
  const headerText = (headers: Record<string, unknown>) => JSON.stringify(headers);
  const expectHeadersScrubbed = (headers: Record<string, unknown>) => expectScrubbed(headerText(headers), ASCII_LEAKS);

  it('an HTTP error: headers and body, whole and masked forms of every account secret', async () => {
    gw.mock.enqueue({ status: 400, headers: leakyHeaders, body: leakyError });
    const res = await rawRequest(scrubbing.url, {
      path: '/v1/responses',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${scrubKey.secret}` },
      body: JSON.stringify(OPENAI_BODY),
    });
    expect(res.status).toBe(400);
    expect(gw.mock.requests[0]!.headers.authorization).toBe(`Bearer ${SERVING_SECRET}`);
    expectScrubbed(res.text);
    expect(res.text).toContain(FOREIGN);
    expect(JSON.parse(res.text).error.code).toBe('invalid_api_key');
    expectHeadersScrubbed(res.headers);
    expect(res.headers['x-debug-auth']).toBe('Bearer [redacted]');
  });

  it('a success: headers scrubbed, the body streams untouched', async () => {
    const body = { id: 'resp_1', object: 'response', status: 'completed', output: [], note: leakyText };
    gw.mock.enqueue({ status: 200, headers: leakyHeaders, body });
    const res = await call(scrubbing.url, '/v1/responses', { headers: { authorization: `Bearer ${scrubKey.secret}` }, body: OPENAI_BODY });
    expect(res.status).toBe(200);
    expect(res.json).toEqual(body);
    expectHeadersScrubbed(Object.fromEntries(res.headers));
  });

  it('a refused WebSocket handshake: headers and body', async () => {
    gw.mock.rejectWsUpgrades(400, { headers: leakyHeaders, body: leakyError });
    const refused = await upgrade(scrubbing.url, { authorization: `Bearer ${scrubKey.secret}` });
    expect(refused.status).toBe(400);
    expectScrubbed(refused.body);
    expect(refused.body).toContain(FOREIGN);
    expectHeadersScrubbed(refused.headers);
  });

  it('a WebSocket error frame', async () => {
    const opened = await upgrade(scrubbing.url, { authorization: `Bearer ${scrubKey.secret}` });
    expect(opened.status).toBe(101);
    gw.mock.errorWsNext({ status: 400, error: leakyError.error });
    const frame = new Promise<string>((resolve) => opened.ws!.once('message', (data) => resolve(data.toString())));
    opened.ws!.send(JSON.stringify({ type: 'response.create', model: 'gpt-5', input: 'hi' }));
    const text = await frame;
    opened.ws!.close();
    expectScrubbed(text);
    expect(JSON.parse(text)).toMatchObject({ type: 'error', status: 400, error: { code: 'invalid_api_key' } });
  });

  it('an error event of a bridged session, answered over HTTP', async () => {
    gw.mock.errorWsNext({ status: 400, error: leakyError.error });
    const res = await call(scrubbing.url, '/v1/responses', {
      headers: { authorization: `Bearer ${scrubKey.secret}`, 'session-id': 'scrub-session' },
      body: OPENAI_BODY,
    });
    expect(gw.mock.wsConnections).toHaveLength(1);
    expect(res.status).toBe(400);
    expectScrubbed(res.text);
    expect(res.json.error.code).toBe('invalid_api_key');
  });
});
