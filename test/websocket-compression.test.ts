import WebSocket from 'ws';
import { afterEach, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from './support/gateway.js';

let gw: TestGateway | undefined;
afterEach(async () => {
  await gw?.close();
  gw = undefined;
});

async function oneTurn(g: TestGateway, perMessageDeflate: boolean) {
  const { secret } = await g.createKey();
  const ws = new WebSocket(`${g.url.replace('http', 'ws')}/v1/responses`, { headers: { authorization: `Bearer ${secret}` }, perMessageDeflate });
  const events: string[] = [];
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => ws.send(JSON.stringify({ type: 'response.create', model: 'gpt-5', input: 'x'.repeat(4096) })));
    ws.on('message', (data) => {
      const event = JSON.parse(String(data)) as { type: string };
      events.push(event.type);
      if (event.type === 'response.completed') resolve();
    });
    ws.once('error', reject);
  });
  const extensions = ws.extensions;
  ws.close();
  return { events, extensions };
}

describe('permessage-deflate', () => {
  it('is negotiated with a client that offers it, and not forced on one that does not', async () => {
    gw = await startTestGateway();
    const offered = await oneTurn(gw, true);
    expect(offered.extensions).toContain('permessage-deflate');
    expect(offered.events.at(-1)).toBe('response.completed');
    const plain = await oneTurn(gw, false);
    expect(plain.extensions).toBe('');
    expect(plain.events.at(-1)).toBe('response.completed');
  });

  it('is offered to the upstream only when upstream.websocketCompression is on', async () => {
    gw = await startTestGateway();
    await oneTurn(gw, true);
    expect(gw.mock.wsConnections[0]!.headers['sec-websocket-extensions']).toBeUndefined();
    await gw.close();
    gw = await startTestGateway({ config: () => ({ upstream: { websocketCompression: true } }) });
    await oneTurn(gw, true);
    expect(gw.mock.wsConnections[0]!.headers['sec-websocket-extensions']).toContain('permessage-deflate');
  });
});
