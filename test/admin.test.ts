import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sameSecret } from '../src/admin/routes.js';
import { runCli } from '../src/cli.js';
import { startTestGateway, type TestGateway } from './support/gateway.js';

const ADMIN_TOKEN = 'admin-token-' + 'x'.repeat(20);
let gw: TestGateway;

beforeAll(async () => {
  gw = await startTestGateway({ config: () => ({ adminToken: ADMIN_TOKEN }) });
});
afterAll(() => gw.close());

function admin(method: string, path: string, body?: unknown, token = ADMIN_TOKEN) {
  return fetch(gw.url + path, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
}

function callModel(secret: string, model = 'gpt-5') {
  return fetch(`${gw.url}/v1/responses`, {
    method: 'POST',
    headers: { 'x-api-key': secret, 'content-type': 'application/json' },
    body: JSON.stringify({ model, input: 'hi' }),
  });
}

describe('admin token comparison', () => {
  it('accepts the equal token and refuses shorter, longer and same-length different ones', () => {
    expect(sameSecret(ADMIN_TOKEN, ADMIN_TOKEN)).toBe(true);
    expect(sameSecret(ADMIN_TOKEN.slice(0, -1), ADMIN_TOKEN)).toBe(false);
    expect(sameSecret(ADMIN_TOKEN + 'x', ADMIN_TOKEN)).toBe(false);
    expect(sameSecret(ADMIN_TOKEN.slice(0, -1) + 'y', ADMIN_TOKEN)).toBe(false);
    expect(sameSecret('', ADMIN_TOKEN)).toBe(false);
  });
});

describe('admin API', () => {
  it('refuses a missing or wrong admin token, and a proxy key', async () => {
    const { secret } = await gw.createKey();
    for (const token of ['', 'wrong-token-of-some-length', secret]) {
      const res = await admin('GET', '/admin/keys', undefined, token);
      expect(res.status).toBe(401);
      expect(res.headers.get('x-request-id')).toBeTruthy();
      expect((await res.json()).error.code).toBe('invalid_admin_token');
    }
  });

  it('creates a key shown once, which then works with either header', async () => {
    const res = await admin('POST', '/admin/keys', { name: 'alice', allowed_models: ['gpt-5'], limits: [{ limit_type: 'requests', limit_window: 'daily', max_value: 10 }] });
    expect(res.status).toBe(201);
    const created = await res.json();
    expect(created).toMatchObject({ name: 'alice', allowed_models: ['gpt-5'], disabled: false, expires_at: null });
    expect(created.key).toMatch(/^sk-tg-/);
    expect(created.limits).toHaveLength(1);
    expect(created.sha256).toBeUndefined();

    const listed = await (await admin('GET', '/admin/keys')).json();
    const fromList = listed.data.find((k: { id: string }) => k.id === created.id);
    expect(fromList).toMatchObject({ name: 'alice' });
    expect(JSON.stringify(listed)).not.toContain(created.key);
    const one = await (await admin('GET', `/admin/keys/${created.id}`)).json();
    expect(one.key).toBeUndefined();

    expect((await callModel(created.key)).status).toBe(200);
    expect((await callModel(created.key, 'gpt-5-mini')).status).toBe(403);
  });

  it('rejects invalid bodies with a clear 400 naming the field', async () => {
    const cases: Array<[unknown, string]> = [
      [{}, 'name'],
      [{ name: 'x', limits: [{ limit_type: 'bananas', limit_window: 'daily', max_value: 1 }] }, 'limits'],
      [{ name: 'x', expires_at: 'tomorrow' }, 'expires_at'],
      [{ name: 'x', surprise: true }, ''],
    ];
    for (const [body, field] of cases) {
      const res = await admin('POST', '/admin/keys', body);
      expect(res.status).toBe(400);
      expect((await res.json()).error.message).toContain(field);
    }
  });

  it('PATCH disables and re-enables; DELETE revokes at once', async () => {
    const { id, key } = await (await admin('POST', '/admin/keys', { name: 'bob' })).json();
    expect((await callModel(key)).status).toBe(200);

    const disabled = await admin('PATCH', `/admin/keys/${id}`, { disabled: true });
    expect(disabled.status).toBe(200);
    expect((await disabled.json()).disabled).toBe(true);
    expect((await callModel(key)).status).toBe(401);

    await admin('PATCH', `/admin/keys/${id}`, { disabled: false });
    expect((await callModel(key)).status).toBe(200);

    expect((await admin('DELETE', `/admin/keys/${id}`)).status).toBe(204);
    expect((await callModel(key)).status).toBe(401);
    expect((await admin('GET', `/admin/keys/${id}`)).status).toBe(404);
    expect((await admin('DELETE', `/admin/keys/${id}`)).status).toBe(404);
  });

  it('lists accounts and disables/enables them', async () => {
    const accounts = await (await admin('GET', '/admin/accounts')).json();
    expect(accounts.data.map((a: { id: string }) => a.id).sort()).toEqual(['an-1', 'oa-1']);
    expect(accounts.data[0]).toMatchObject({ state: 'active', in_flight: 0 });

    expect((await admin('POST', '/admin/accounts/oa-1/disable')).status).toBe(200);
    const { secret } = await gw.createKey();
    const refused = await callModel(secret);
    expect(refused.status).toBe(503);
    expect((await refused.json()).error.code).toBe('no_accounts');
    const state = (await (await admin('GET', '/admin/accounts')).json()).data.find((a: { id: string }) => a.id === 'oa-1');
    expect(state.state).toBe('disabled');

    expect((await admin('POST', '/admin/accounts/oa-1/enable')).status).toBe(200);
    expect((await callModel(secret)).status).toBe(200);
    expect((await admin('POST', '/admin/accounts/nope/enable')).status).toBe(404);
  });
});

describe('tollgate CLI', () => {
  const env = () => ({ TOLLGATE_URL: gw.url, TOLLGATE_ADMIN_TOKEN: ADMIN_TOKEN });

  it('creates, lists and revokes keys through the admin API', async () => {
    const out = await runCli(['keys', 'create', '--name', 'carol', '--allowed-models', 'gpt-5', '--limit', 'requests:daily:5'], env());
    const [, secret] = out.split('\n');
    const id = /created key (\S+)/.exec(out)![1]!;
    expect(secret).toMatch(/^sk-tg-/);
    expect((await callModel(secret!)).status).toBe(200);

    const list = await runCli(['keys', 'list'], env());
    expect(list).toContain(`${id}\tcarol\tactive`);
    expect(list).not.toContain(secret);

    expect(await runCli(['keys', 'revoke', id], env())).toBe(`revoked key ${id}`);
    expect((await callModel(secret!)).status).toBe(401);
  });

  it('fails clearly on bad usage and a wrong token', async () => {
    await expect(runCli(['keys', 'create'], env())).rejects.toThrow('--name is required');
    await expect(runCli(['keys', 'create', '--name', 'x', '--limit', 'requests:daily'], env())).rejects.toThrow('TYPE:WINDOW:MAX');
    await expect(runCli(['keys', 'list'], { TOLLGATE_URL: gw.url })).rejects.toThrow('TOLLGATE_ADMIN_TOKEN');
    await expect(runCli(['keys', 'list'], { TOLLGATE_URL: gw.url, TOLLGATE_ADMIN_TOKEN: 'wrong-token-wrong-token' })).rejects.toThrow('HTTP 401');
    await expect(runCli(['nonsense'], env())).rejects.toThrow('usage:');
  });
});

describe('admin API off', () => {
  it('answers 404 when no admin token is configured', async () => {
    const plain = await startTestGateway();
    try {
      const res = await fetch(`${plain.url}/admin/keys`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
      expect(res.status).toBe(404);
    } finally {
      await plain.close();
    }
  });
});
