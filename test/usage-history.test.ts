import OpenAI from 'openai';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRedis, type TestRedis } from './support/redis.js';
import { startTestGateway, type TestGateway } from './support/gateway.js';

const ADMIN_TOKEN = 'admin-token-' + 'h'.repeat(20);
let redis: TestRedis;
let gw: TestGateway;

beforeAll(async () => {
  redis = await startRedis();
  gw = await startTestGateway({
    config: () => ({ adminToken: ADMIN_TOKEN, internalSecret: 'internal-secret-' + 'h'.repeat(16), redis: { url: redis.url } }),
  });
});
afterAll(async () => {
  await gw?.close();
  await redis?.stop();
});

const admin = (path: string, accept = 'application/json') => fetch(gw.url + path, { headers: { authorization: `Bearer ${ADMIN_TOKEN}`, accept } });

describe('usage history', () => {
  it('counts model calls per key, model and account; failures by class; admin JSON and CSV; a key sees only its own', async () => {
    const alice = await gw.createKey({ name: 'alice', allowed_models: ['gpt-5', 'gpt-5-mini'] });
    const bob = await gw.createKey({ name: 'bob' });
    const client = (secret: string) => new OpenAI({ apiKey: secret, baseURL: `${gw.url}/v1`, maxRetries: 0 });
    const first = await client(alice.secret).responses.create({ model: 'gpt-5', input: 'hello' });
    const second = await client(alice.secret).responses.create({ model: 'gpt-5-mini', input: 'hello there' });
    const third = await client(bob.secret).responses.create({ model: 'gpt-5', input: 'hi' });
    // not allowed for alice: a client error, no account chosen
    await expect(client(alice.secret).responses.create({ model: 'o3', input: 'x' })).rejects.toMatchObject({ status: 403 });

    const total = (r: { usage?: { total_tokens: number } | null }) => r.usage!.total_tokens;
    await expect.poll(async () => (await (await admin('/admin/usage?group_by=key')).json()).data.length).toBe(2);
    await expect.poll(async () => (await (await admin('/admin/usage?group_by=key')).json()).data.find((p: { group: string }) => p.group === alice.id)?.requests).toBe(3);

    const byKey = await (await admin('/admin/usage?group_by=key&bucket=day')).json();
    expect(byKey.bucket).toBe('day');
    const aliceRow = byKey.data.find((p: { group: string }) => p.group === alice.id);
    expect(aliceRow).toMatchObject({ requests: 3, total_tokens: total(first) + total(second), errors: { client_error: 1, rate_limited: 0, server_error: 0 } });
    expect(aliceRow.start).toMatch(/T00:00:00\.000Z$/);

    const byModel = await (await admin('/admin/usage?group_by=model')).json();
    const gpt5 = byModel.data.filter((p: { group: string }) => p.group === 'gpt-5');
    expect(gpt5.reduce((sum: number, p: { total_tokens: number }) => sum + p.total_tokens, 0)).toBe(total(first) + total(third));

    const byAccount = await (await admin('/admin/usage?group_by=account')).json();
    const oa1 = byAccount.data.filter((p: { group: string }) => p.group === 'oa-1');
    expect(oa1.reduce((sum: number, p: { requests: number }) => sum + p.requests, 0)).toBe(3); // summed over both keys

    const csv = await admin('/admin/usage?group_by=model', 'text/csv');
    expect(csv.headers.get('content-type')).toMatch(/^text\/csv/);
    const lines = (await csv.text()).trim().split('\r\n');
    expect(lines[0]).toBe('start,group,requests,input_tokens,cached_input_tokens,output_tokens,total_tokens,cost_usd,errors_rate_limited,errors_client_error,errors_server_error');
    expect(lines.slice(1).some((line) => line.split(',')[1] === 'o3' && line.endsWith(',0,1,0'))).toBe(true);

    const own = await fetch(`${gw.url}/v1/usage/history?group_by=model`, { headers: { authorization: `Bearer ${bob.secret}` } });
    const ownBody = await own.json();
    expect(ownBody.data.map((p: { group: string; total_tokens: number }) => [p.group, p.total_tokens])).toEqual([['gpt-5', total(third)]]);
    // the cost rides the same entry as the usage: history and /v1/usage agree (gpt-5 has a shipped price)
    const usage = await (await fetch(`${gw.url}/v1/usage`, { headers: { authorization: `Bearer ${bob.secret}` } })).json();
    expect(usage.cost_usd).toBeGreaterThan(0);
    expect(ownBody.data[0].cost_usd).toBe(usage.cost_usd);
  });

  it('a bridged turn and a WebSocket turn are in the history with the model each named (both recorded by the metered call)', async () => {
    const carol = await gw.createKey({ name: 'carol' });
    // a Responses call naming a session: served by the bridge (openai speaks WebSocket upstream)
    const bridged = await fetch(`${gw.url}/v1/responses`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${carol.secret}`, 'session-id': 'history-session' },
      body: JSON.stringify({ model: 'gpt-5', input: 'bridged' }),
    });
    expect(bridged.status).toBe(200);
    const bridgedTotal = (await bridged.json()).usage.total_tokens;
    expect(gw.mock.wsConnections).toHaveLength(1);

    const ws = new WebSocket(`${gw.url.replace(/^http/, 'ws')}/v1/responses`, { headers: { authorization: `Bearer ${carol.secret}` } });
    const completed = new Promise<{ response: { usage: { total_tokens: number } } }>((resolve, reject) => {
      ws.on('message', (data) => {
        const event = JSON.parse(data.toString());
        if (event.type === 'response.completed') resolve(event);
      });
      ws.once('error', reject);
    });
    await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
    ws.send(JSON.stringify({ type: 'response.create', model: 'gpt-5-mini', input: 'over the socket' }));
    const wsTotal = (await completed).response.usage.total_tokens;
    ws.close();

    const byModel = async () => {
      const res = await fetch(`${gw.url}/v1/usage/history?group_by=model`, { headers: { 'x-api-key': carol.secret } });
      return (await res.json()).data.map((p: { group: string; requests: number; total_tokens: number }) => [p.group, p.requests, p.total_tokens]);
    };
    await expect.poll(byModel).toEqual([
      ['gpt-5', 1, bridgedTotal],
      ['gpt-5-mini', 1, wsTotal],
    ]);
  });

  it('refuses a bad query with a clear error', async () => {
    for (const [query, param] of [['bucket=week', 'bucket'], ['from=yesterday', 'from'], ['from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z', 'from'], ['nope=1', '']]) {
      const res = await admin(`/admin/usage?${query}`);
      expect(res.status, query).toBe(400);
      expect((await res.json()).error).toMatchObject({ code: 'invalid_request', param });
    }
    expect((await fetch(`${gw.url}/v1/usage/history`)).status).toBe(401);
  });
});
