import { createServer, type Server } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OPENAI_SECRET, startTestGateway, type TestGateway } from './support/gateway.js';

/** An upstream that accepts connections and never answers: the gateway waits for headers. */
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
      providers: { openai: { baseUrl: `http://127.0.0.1:${port}`, accounts: [{ id: 'oa-1', apiKey: OPENAI_SECRET }] } },
    }),
  });
});

afterAll(async () => {
  await gw.close();
  silent.close();
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
    await expect.poll(() => connections.length).toBe(1);
    abort.abort();
    expect(await pending).toBeInstanceOf(Error);

    await expect.poll(() => connections[0]!.closed).toBe(true);
    const account = async () => (await (await fetch(`${gw.url}/admin/accounts`, { headers: { authorization: `Bearer ${ADMIN}` } })).json()).data[0];
    await expect.poll(async () => (await account()).in_flight).toBe(0);
    expect((await account()).state).toBe('active');
    const usage = await (await fetch(`${gw.url}/v1/usage`, { headers: { 'x-api-key': secret } })).json();
    expect(usage.request_count).toBe(0);
  });
});
