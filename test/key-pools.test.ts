import { once } from 'node:events';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { runCli } from '../src/cli.js';
import { startTestGateway, type TestGateway } from './support/gateway.js';

const ADMIN_TOKEN = 'admin-token-for-key-pool-tests';
const SECRETS = Object.fromEntries([1, 2, 3].map((n) => [`oa-${n}`, `sk-upstream-pool-${n}-${'e'.repeat(24)}`]));
const accountOf = (authorization: unknown) => Object.keys(SECRETS).find((id) => authorization === `Bearer ${SECRETS[id]}`);

let gw: TestGateway;
beforeAll(async () => {
  gw = await startTestGateway({
    config: (mockUrl) => ({
      adminToken: ADMIN_TOKEN,
      providers: { openai: { baseUrl: mockUrl, strategy: 'round_robin', accounts: Object.entries(SECRETS).map(([id, apiKey]) => ({ id, apiKey })) } },
      pools: { team: ['oa-2'], solo: ['oa-3'] },
    }),
  });
});
afterAll(() => gw.close());
beforeEach(() => gw.mock.reset());

async function admin(method: string, path: string, body?: unknown) {
  const res = await fetch(gw.url + path, {
    method,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, json: (await res.json()) as Record<string, any> };
}

function responses(secret: string, headers: Record<string, string> = {}) {
  return fetch(`${gw.url}/v1/responses`, {
    method: 'POST',
    headers: { authorization: `Bearer ${secret}`, 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ model: 'gpt-5', input: 'hi' }),
  });
}

/** One Responses turn over a client WebSocket. */
async function websocketTurn(secret: string) {
  const ws = new WebSocket(`${gw.url.replace(/^http/, 'ws')}/v1/responses`, { headers: { authorization: `Bearer ${secret}` } });
  await once(ws, 'open');
  ws.send(JSON.stringify({ type: 'response.create', model: 'gpt-5', input: 'hi' }));
  for (;;) {
    const [data] = await once(ws, 'message');
    if (JSON.parse(String(data)).type === 'response.completed') break;
  }
  ws.close();
}

/** The accounts every upstream request and WebSocket of the test reached. */
const reached = () => new Set([...gw.mock.requests, ...gw.mock.wsConnections].map((r) => accountOf(r.headers.authorization)));

describe('key-scoped account pools', () => {
  it('a key of a pool reaches only its accounts: plain HTTP, bridged sessions and WebSocket alike', async () => {
    const created = await admin('POST', '/admin/keys', { name: 'team-key', pool: 'team' });
    expect(created.status).toBe(201);
    expect(created.json.pool).toBe('team');
    for (let i = 0; i < 6; i++) expect((await responses(created.json.key)).status).toBe(200);
    for (const session of ['s-1', 's-2', 's-3']) expect((await responses(created.json.key, { 'session-id': session })).status).toBe(200);
    await websocketTurn(created.json.key);
    expect(gw.mock.wsConnections.length).toBeGreaterThanOrEqual(4); // three bridge sessions and the client's socket
    expect(reached()).toEqual(new Set(['oa-2']));
  });

  it('a key naming accounts spreads over those and never another; without a scope all serve', async () => {
    const { json } = await admin('POST', '/admin/keys', { name: 'two-accounts', accounts: ['oa-1', 'oa-3'] });
    for (let i = 0; i < 6; i++) expect((await responses(json.key)).status).toBe(200);
    expect(reached()).toEqual(new Set(['oa-1', 'oa-3']));

    gw.mock.reset();
    const open = await gw.createKey();
    for (let i = 0; i < 6; i++) expect((await responses(open.secret)).status).toBe(200);
    expect(reached()).toEqual(new Set(['oa-1', 'oa-2', 'oa-3']));
  });

  it("a key whose pool has no usable account gets 503 no_accounts, not another pool's account", async () => {
    const { json } = await admin('POST', '/admin/keys', { name: 'solo-key', pool: 'solo' });
    expect((await admin('POST', '/admin/accounts/oa-3/disable')).status).toBe(200);
    try {
      const res = await responses(json.key);
      expect(res.status).toBe(503);
      expect(res.headers.get('retry-after')).toBeTruthy();
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('no_accounts');
      expect(gw.mock.requests).toHaveLength(0);
    } finally {
      await admin('POST', '/admin/accounts/oa-3/enable');
    }
    expect((await responses(json.key)).status).toBe(200);
    expect(reached()).toEqual(new Set(['oa-3']));
  });

  it('PATCH moves a key to another pool at once, live bridge session included', async () => {
    const { json } = await admin('POST', '/admin/keys', { name: 'mover', pool: 'team' });
    expect((await responses(json.key, { 'session-id': 'moving' })).status).toBe(200);
    const patched = await admin('PATCH', `/admin/keys/${json.id}`, { pool: 'solo' });
    expect(patched.json.pool).toBe('solo');
    gw.mock.reset();
    // the key cache holds a record for up to a second: poll until the new pool is what serves
    await expect.poll(async () => {
      gw.mock.reset();
      await responses(json.key, { 'session-id': 'moving' });
      return [...reached()];
    }).toEqual(['oa-3']);
  });

  it('the admin API and the CLI refuse a pool or account that does not exist, and both at once', async () => {
    expect((await admin('POST', '/admin/keys', { name: 'x', pool: 'nope' })).json.error.message).toMatch(/pool: no pool named nope/);
    expect((await admin('POST', '/admin/keys', { name: 'x', accounts: ['oa-9'] })).status).toBe(400);
    expect((await admin('POST', '/admin/keys', { name: 'x', accounts: ['oa-1'], pool: 'team' })).status).toBe(400);
    const env = { TOLLGATE_URL: gw.url, TOLLGATE_ADMIN_TOKEN: ADMIN_TOKEN };
    await expect(runCli(['keys', 'create', '--name', 'cli', '--pool', 'nope'], env)).rejects.toThrow(/HTTP 400: pool: no pool named nope/);
    const out = await runCli(['keys', 'create', '--name', 'cli', '--accounts', 'oa-1, oa-2'], env);
    const id = /created key (\S+)/.exec(out)![1]!;
    expect((await admin('GET', `/admin/keys/${id}`)).json.accounts).toEqual(['oa-1', 'oa-2']);
  });
});
