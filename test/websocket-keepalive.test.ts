import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from './support/gateway.js';

// short for a quick test, yet longer than the event-loop stalls of a loaded machine: a pong
// read late is a pong missed
const KEEPALIVE_MS = 500;
let gw: TestGateway;
let secret: string;

beforeAll(async () => {
  gw = await startTestGateway({ config: () => ({ server: { host: '127.0.0.1', port: 0, internalHost: '127.0.0.1', internalPort: 0, websocketKeepaliveMs: KEEPALIVE_MS } }) });
  secret = (await gw.createKey()).secret;
});
afterAll(() => gw.close());

function connect(autoPong: boolean): Promise<{ ws: WebSocket; closed: Promise<number>; pings: () => number }> {
  let pings = 0;
  const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/v1/responses`, { headers: { authorization: `Bearer ${secret}` }, autoPong });
  ws.on('ping', () => pings++);
  const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve({ ws, closed, pings: () => pings }));
    ws.once('error', reject);
  });
}

describe('WebSocket keepalive', () => {
  it('pings a client that answers and keeps it connected', async () => {
    const client = await connect(true);
    await expect.poll(() => client.pings()).toBeGreaterThanOrEqual(3);
    expect(client.ws.readyState).toBe(WebSocket.OPEN);
    expect(gw.mock.wsConnections.at(-1)!.closed).toBe(false);
    client.ws.close();
  });

  it('drops a client that stops answering pings, and its upstream socket with it', async () => {
    const client = await connect(false);
    const upstream = gw.mock.wsConnections.at(-1)!;
    const code = await client.closed;
    expect(client.pings()).toBeGreaterThanOrEqual(1);
    expect(code).toBe(1006); // terminated, no close frame
    await expect.poll(() => upstream.closed).toBe(true);
  });
});
