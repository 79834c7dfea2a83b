import { createServer, type Server } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OPENAI_SECRET, startTestGateway, type TestGateway } from './support/gateway.js';

/** Upstreams that accept connections and never answer: the gateway waits for headers. */
let silent: Server;
const connections: Array<{ closed: boolean }> = [];
let gw: TestGateway;
const ADMIN = 'admin-token-' + 'q'.repeat(20);

beforeAll(async () => {
  silent = createServer((socket) => {
    const record = { closed: false };
    connections.push(record);
    socket.on('close', () => (record.closed = true));
    socket.resume(); // read (and drop) the request, so the peer's close is seen
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  const port = (silent.address() as { port: number }).port;
  gw = await startTestGateway({
    config: () => ({
      adminToken: ADMIN,
      upstream: { headersTimeoutMs: 400 },
      providers: {
        openai: { baseUrl: `http://127.0.0.1:${port}`, accounts: [{ id: 'oa-1', apiKey: OPENAI_SECRET }] },
        anthropic: { baseUrl: `http://127.0.0.1:${port}`, accounts: [{ id: 'an-1', apiKey: OPENAI_SECRET }] },
      },
    }),
  });
});

afterAll(async () => {
  await gw.close();
  silent.close();
});

describe('an upstream that never answers', () => {
  it('gets 504 upstream_timeout in the route\'s shape once the headers timeout passes, and the request is not counted', async () => {
    const { secret } = await gw.createKey();
    for (const [path, body, shape] of [
      ['/v1/responses', { model: 'gpt-5', input: 'x' }, 'openai'],
      ['/v1/messages', { model: 'claude-sonnet-4-6', max_tokens: 8, messages: [{ role: 'user', content: 'x' }] }, 'anthropic'],
    ] as const) {
      const res = await fetch(gw.url + path, { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': secret }, body: JSON.stringify(body) });
      expect(res.status).toBe(504);
      expect(res.headers.get('x-request-id')).toBeTruthy();
      const json = await res.json();
      if (shape === 'openai') expect(json.error).toMatchObject({ code: 'upstream_timeout', type: 'server_error' });
      else expect(json).toMatchObject({ type: 'error', error: { type: 'api_error', code: 'upstream_timeout' } });
    }
    const usage = await (await fetch(`${gw.url}/v1/usage`, { headers: { 'x-api-key': secret } })).json();
    expect(usage.request_count).toBe(0);
  });
});

describe('a client that leaves before the upstream answered', () => {
  it('cancels the upstream call, frees the account slot and does not count the request', async () => {
    const { secret } = await gw.createKey();
    const abort = new AbortController();
    const pending = fetch(`${gw.url}/v1/responses`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': secret },
      body: JSON.stringify({ model: 'gpt-5', input: 'never answered' }),
      signal: abort.signal,
    }).catch((err: Error) => err);
    const before = connections.length;
    await expect.poll(() => connections.length).toBe(before + 1);
    abort.abort();
    expect(await pending).toBeInstanceOf(Error);

    await expect.poll(() => connections[before]!.closed).toBe(true);
    const account = async () => (await (await fetch(`${gw.url}/admin/accounts`, { headers: { authorization: `Bearer ${ADMIN}` } })).json()).data[0];
    await expect.poll(async () => (await account()).in_flight).toBe(0);
    expect((await account()).state).toBe('active');
    const usage = await (await fetch(`${gw.url}/v1/usage`, { headers: { 'x-api-key': secret } })).json();
    expect(usage.request_count).toBe(0);
  });
});
