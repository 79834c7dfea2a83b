import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { runCli } from '../src/cli.js';
import { buildConfig } from '../src/config/load.js';
import { MemoryStore } from '../src/store/memory.js';
import { parseEncryptionKey } from '../src/config/encryption-key.js';
import { TokenVault } from '../src/upstream/chatgpt/vault.js';
import { startTestGateway, useGatewayPerTest } from './support/gateway.js';
import { OPENAI_BODY, call, metricValue } from './support/http.js';

const ADMIN_TOKEN = 'admin-token-for-chatgpt-tests';
const ENCRYPTION_KEY = randomBytes(32).toString('base64');
const DAY_SEC = 86_400;

const env = useGatewayPerTest();
let logs: string[];

/** Writes a Codex auth.json for a new mock login; returns its path and content. */
function authFile(chatgptAccountId: string, expiresInSec = 10 * DAY_SEC) {
  const content = env.mock.oauth.login({ chatgptAccountId, planType: 'plus' }, expiresInSec) as { tokens: Record<string, string> };
  const path = join(mkdtempSync(join(tmpdir(), 'tollgate-auth-')), 'auth.json');
  writeFileSync(path, JSON.stringify(content));
  return { path, content };
}

/** A gateway with ChatGPT accounts logging in from these auth files (and its log lines kept). */
async function start(files: Record<string, string>, extra: Record<string, unknown> = {}, options: { env?: Record<string, string>; store?: MemoryStore } = {}) {
  logs = [];
  const sink = new Writable({ write: (chunk, _enc, done) => (logs.push(String(chunk)), done()) });
  env.gw = await startTestGateway({
    mock: env.mock,
    store: options.store,
    env: options.env ?? { TOLLGATE_ENCRYPTION_KEY: ENCRYPTION_KEY },
    logger: pino({ level: 'info' }, sink),
    config: (mockUrl) => ({
      adminToken: ADMIN_TOKEN,
      providers: {
        chatgpt: {
          baseUrl: `${mockUrl}/backend-api/codex`,
          oauth: { issuer: mockUrl },
          accounts: Object.entries(files).map(([id, path]) => ({ id, authFile: path })),
          ...extra,
        },
      },
    }),
  });
  return { gw: env.gw, key: await env.gw.createKey() };
}

const codex = (secret: string) => call(env.gw!.url, '/backend-api/codex/responses', { headers: { authorization: `Bearer ${secret}` }, body: OPENAI_BODY });
const admin = (method: string, path: string, body?: unknown) => call(env.gw!.url, path, { method, headers: { authorization: `Bearer ${ADMIN_TOKEN}` }, body });
const served = () => env.mock.requests.filter((r) => r.path.startsWith('/backend-api/codex/responses'));
const accountsById = async () => Object.fromEntries(((await admin('GET', '/admin/accounts')).json.data as any[]).map((a) => [a.id, a]));

/** Every token the mock ever issued (the auth files' and every refresh's). */
const allTokens = () => env.mock.oauth.issued;

function expectNoToken(text: string, tokens: string[]) {
  for (const token of tokens) expect(text).not.toContain(token);
}

describe('ChatGPT accounts', () => {
  it('an authFile login serves with its access token and account id; the client cannot set either', async () => {
    const file = authFile('acct-1');
    const { key } = await start({ 'cg-1': file.path });
    const res = await call(env.gw!.url, '/backend-api/codex/responses', {
      headers: { authorization: `Bearer ${key.secret}`, 'chatgpt-account-id': 'acct-attacker' },
      body: OPENAI_BODY,
    });
    expect(res.status).toBe(200);
    expect(served()[0]!.headers).toMatchObject({ authorization: `Bearer ${file.content.tokens.access_token}`, 'chatgpt-account-id': 'acct-1' });
    expect(env.mock.oauth.refreshes).toHaveLength(0);
    // tokens are sealed in the store
    const stored = await env.gw!.store.getCredential('cg-1');
    expect(stored).toMatchObject({ chatgptAccountId: 'acct-1', planType: 'plus', origin: 'config', generation: 1 });
    expectNoToken(JSON.stringify(stored), allTokens());
  });

  it('an expired token is refreshed once, the Codex way, and the request uses the new one', async () => {
    const file = authFile('acct-1', -60);
    const { key } = await start({ 'cg-1': file.path });
    const replies = await Promise.all(Array.from({ length: 5 }, () => codex(key.secret)));
    expect(replies.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
    expect(env.mock.oauth.refreshes).toEqual([
      { refreshToken: file.content.tokens.refresh_token, clientId: 'app_EMoamEEZ73f0CkXaXp7hrann', grantType: 'refresh_token', scope: 'openid profile email', outcome: 'rotated' },
    ]);
    const used = new Set(served().map((r) => r.headers.authorization));
    expect(used.size).toBe(1);
    expect(used.has(`Bearer ${file.content.tokens.access_token}`)).toBe(false);
    expect((await env.gw!.store.getCredential('cg-1'))!.generation).toBe(2);
    expect(await metricValue(env.gw!, 'tollgate_account_refreshes_total', { account: 'cg-1', outcome: 'refreshed' })).toBe(1);
  });

  it('a WebSocket turn on an expired login is refreshed first; the handshake carries the new token and reports the quota', async () => {
    const file = authFile('acct-1', -60);
    const { key } = await start({ 'cg-1': file.path });
    env.mock.oauth.setQuota('acct-1', { 'x-codex-primary-used-percent': '33' });
    const ws = new WebSocket(`${env.gw!.url.replace(/^http/, 'ws')}/backend-api/codex/responses`, { headers: { authorization: `Bearer ${key.secret}` } });
    const completed = new Promise<unknown>((resolve, reject) => {
      ws.on('message', (data) => JSON.parse(String(data)).type === 'response.completed' && resolve(null));
      ws.once('error', reject);
    });
    await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
    ws.send(JSON.stringify({ type: 'response.create', model: 'gpt-5', input: 'hi' }));
    await completed;
    ws.close();
    const upgrade = env.mock.wsConnections.at(-1)!;
    expect(upgrade.rejectedStatus).toBeUndefined();
    expect(upgrade.headers.authorization).not.toBe(`Bearer ${file.content.tokens.access_token}`);
    expect(env.mock.oauth.accessProblem(upgrade.headers)).toBeNull();
    expect(env.mock.oauth.refreshes.map((r) => r.outcome)).toEqual(['rotated']);
    expect((await accountsById())['cg-1'].quota.primary.used_percent).toBe(33);
  });

  it("an upstream answer that echoes the login's token reaches the client redacted", async () => {
    const file = authFile('acct-1', -60);
    const { key } = await start({ 'cg-1': file.path });
    expect((await codex(key.secret)).status).toBe(200);
    const token = String(served()[0]!.headers.authorization).replace(/^Bearer /, '');
    env.mock.enqueue({ status: 400, headers: { 'x-echo': token }, body: { error: { message: `Bad request with token ${token}`, type: 'invalid_request_error' } } });
    const res = await codex(key.secret);
    expect(res.status).toBe(400);
    expect(res.text).toContain('[redacted]');
    expect(res.text + JSON.stringify([...res.headers])).not.toContain(token);
  });

  it('a 401 confirmed by a probe refreshes the login and retries on it instead of disabling the account', async () => {
    const file = authFile('acct-1');
    const { key } = await start({ 'cg-1': file.path });
    expect((await codex(key.secret)).status).toBe(200);
    env.mock.oauth.revokeAccessTokens('acct-1');
    const res = await codex(key.secret);
    expect(res.status).toBe(200);
    expect(env.mock.oauth.refreshes.map((r) => r.outcome)).toEqual(['rotated']);
    expect(env.mock.requests.filter((r) => r.path === '/backend-api/codex/models')).toHaveLength(1); // the probe
    expect((await accountsById())['cg-1'].state).toBe('active');
  });

  it('a spent refresh token makes the account reauth_required (admin, metric, log) and requests route around it', async () => {
    const spent = authFile('acct-1', -60);
    const good = authFile('acct-2');
    // spend acct-1's refresh token elsewhere first (another Codex on the same login)
    expect((await fetch(`${env.mock.url}/oauth/token`, { method: 'POST', body: JSON.stringify({ grant_type: 'refresh_token', refresh_token: spent.content.tokens.refresh_token }) })).status).toBe(200);
    const { key } = await start({ 'cg-1': spent.path, 'cg-2': good.path }, { strategy: 'fill_first' });
    expect((await codex(key.secret)).status).toBe(200);
    expect((await codex(key.secret)).status).toBe(200);
    expect(env.mock.oauth.refreshes.map((r) => r.outcome)).toEqual(['rotated', 'reused']); // never tried twice
    expect(new Set(served().map((r) => r.headers['chatgpt-account-id']))).toEqual(new Set(['acct-2']));
    const accounts = await accountsById();
    expect(accounts['cg-1']).toMatchObject({ state: 'reauth_required', reauth_reason: 'refresh_token_reused' });
    expect(await metricValue(env.gw!, 'tollgate_account_refreshes_total', { account: 'cg-1', outcome: 'reauth_required' })).toBe(1);
    expect(logs.some((line) => line.includes('needs re-authentication') && line.includes('refresh_token_reused'))).toBe(true);

    // a fresh login imported through the admin API brings it back
    const fresh = env.mock.oauth.login({ chatgptAccountId: 'acct-1' }, 10 * DAY_SEC, new Date());
    const imported = await admin('POST', '/admin/accounts', { ...fresh, id: 'cg-1' });
    expect(imported.status).toBe(201);
    expect((await accountsById())['cg-1'].state).toBe('active');
    expectNoToken(JSON.stringify(await accountsById()) + logs.join(''), allTokens());
  });

  it('POST /admin/accounts imports a login every route serves; GET shows plan, expiry, quota, never a token; the CLI wraps both', async () => {
    const file = authFile('acct-1');
    const { key } = await start({ 'cg-1': file.path }, { strategy: 'fill_first' });
    const second = env.mock.oauth.login({ chatgptAccountId: 'acct-9', planType: 'pro', email: 'nine@example.com' });
    const res = await admin('POST', '/admin/accounts', { ...second, id: 'cg-9', label: 'team nine' });
    expect(res.status).toBe(201);
    expect(res.json).toMatchObject({ id: 'cg-9', provider: 'chatgpt', state: 'active', plan_type: 'pro', email: 'nine@example.com', label: 'team nine', chatgpt_account_id: 'acct-9' });
    // the same old file again is refused: the stored login is not older
    expect((await admin('POST', '/admin/accounts', { ...second, id: 'cg-9' })).json.error.param).toBe('last_refresh');

    env.mock.oauth.setQuota('acct-1', { 'x-codex-primary-used-percent': '100', 'x-codex-primary-window-minutes': '300', 'x-codex-primary-reset-after-seconds': '3600' });
    expect((await codex(key.secret)).status).toBe(200); // served by cg-1, which reports it is full
    expect((await codex(key.secret)).status).toBe(200);
    expect(served().map((r) => r.headers['chatgpt-account-id'])).toEqual(['acct-1', 'acct-9']);
    const cg1 = (await accountsById())['cg-1'];
    expect(cg1).toMatchObject({ state: 'quota_exhausted', plan_type: 'plus', quota: { primary: { used_percent: 100, window_minutes: 300 }, secondary: null } });
    expect(Date.parse(cg1.cooldown_until) - Date.now()).toBeGreaterThan(3_000_000);
    expect(await metricValue(env.gw!, 'tollgate_account_quota_used_percent', { account: 'cg-1', window: 'primary' })).toBe(100);

    const cliEnv = { TOLLGATE_URL: env.gw!.url, TOLLGATE_ADMIN_TOKEN: ADMIN_TOKEN };
    const third = authFile('acct-3');
    expect(await runCli(['accounts', 'import', '--id', 'cg-3', third.path], cliEnv)).toMatch(/^imported cg-3 \(plus, acct-3@example.com\), token expires 20/);
    const table = await runCli(['accounts', 'list'], cliEnv);
    expect(table.split('\n')[0]).toBe('id\tprovider\tstate\tplan\ttoken_expires_at\tprimary\tsecondary\tin_flight');
    expect(table).toMatch(/^cg-1\tchatgpt\tquota_exhausted\tplus\t\S+\t100%\t-\t0$/m);
    expect(table).toMatch(/^cg-3\tchatgpt\tactive\tplus\t/m);
    expectNoToken(table + JSON.stringify(await accountsById()) + logs.join(''), allTokens());
  });

  it('refuses malformed tokens with a clear 400 that does not echo them', async () => {
    await start({ 'cg-1': authFile('acct-1').path });
    const good = env.mock.oauth.login({ chatgptAccountId: 'acct-5' }) as { tokens: Record<string, string> };
    const res = await admin('POST', '/admin/accounts', { ...good, id: 'cg-5', tokens: { ...good.tokens, access_token: 'not-a-jwt-secret' } });
    expect(res.status).toBe(400);
    expect(res.json.error).toMatchObject({ code: 'invalid_request', param: 'tokens', message: 'access_token is not a JWT (header.payload.signature, base64url)' });
    expect(res.text).not.toContain('not-a-jwt-secret');
    expect((await admin('POST', '/admin/accounts', { id: 'cg-5' })).json.error.message).toMatch(/^tokens: /);
  });

  it('a 429 with the reset time cools the account until then; quota_headroom prefers room and never answers 503 while some account has it', async () => {
    const { key } = await start({ 'cg-1': authFile('acct-1').path, 'cg-2': authFile('acct-2').path });
    env.mock.oauth.setQuota('acct-1', { 'x-codex-primary-used-percent': '20', 'x-codex-secondary-used-percent': '90' });
    env.mock.oauth.setQuota('acct-2', { 'x-codex-primary-used-percent': '50', 'x-codex-secondary-used-percent': '50' });
    // both unknown at first: each answers once and reports, then the one with more room wins
    await codex(key.secret);
    await codex(key.secret);
    served().length = 0;
    env.mock.requests.length = 0;
    for (let i = 0; i < 4; i++) expect((await codex(key.secret)).status).toBe(200);
    expect(served().map((r) => r.headers['chatgpt-account-id'])).toEqual(['acct-2', 'acct-2', 'acct-2', 'acct-2']);

    env.mock.enqueue({ status: 429, headers: { 'x-codex-primary-used-percent': '100', 'x-codex-primary-reset-after-seconds': '600' }, body: { error: { type: 'usage_limit_reached', message: 'The usage limit has been reached' } } });
    expect((await codex(key.secret)).status).toBe(200); // cg-2 refused, cg-1 served
    const accounts = await accountsById();
    expect(accounts['cg-2'].state).toBe('cooldown');
    expect(Math.abs(Date.parse(accounts['cg-2'].cooldown_until) - (Date.now() + 600_000))).toBeLessThan(60_000);
    expect((await codex(key.secret)).status).toBe(200);
    expect(served().at(-1)!.headers['chatgpt-account-id']).toBe('acct-1');
  });
});

describe('encryption key rotation', () => {
  it('a replica started with a new key and the old one as previous seals every login again; the old key alone then opens nothing', async () => {
    const store = new MemoryStore();
    const file = authFile('acct-1');
    await start({ 'cg-1': file.path }, {}, { store });
    await env.gw!.close();
    env.gw = undefined;
    const newKey = randomBytes(32).toString('hex');
    const { key } = await start({ 'cg-1': file.path }, {}, { store, env: { TOLLGATE_ENCRYPTION_KEY: newKey, TOLLGATE_ENCRYPTION_KEY_PREVIOUS: ENCRYPTION_KEY } });
    const sealed = (await store.getCredential('cg-1'))!.sealed;
    expect(new TokenVault(parseEncryptionKey(newKey, 'k')).open('cg-1', sealed).accessToken).toBe(file.content.tokens.access_token);
    expect(() => new TokenVault(parseEncryptionKey(ENCRYPTION_KEY, 'k')).open('cg-1', sealed)).toThrow();
    expect((await codex(key.secret)).status).toBe(200);
  });

  it('a replica without the key refuses to start while the store holds logins', async () => {
    const store = new MemoryStore();
    await start({ 'cg-1': authFile('acct-1').path }, {}, { store });
    await env.gw!.close();
    env.gw = undefined;
    await expect(
      startTestGateway({
        mock: env.mock,
        store,
        config: (mockUrl) => ({ providers: { chatgpt: { baseUrl: `${mockUrl}/backend-api/codex`, accounts: [{ id: 'cg-static', apiKey: 'static-chatgpt-token' }] } } }),
      }),
    ).rejects.toThrow('TOLLGATE_ENCRYPTION_KEY is required: the store holds ChatGPT logins (cg-1)');
  });
});

describe('ChatGPT account configuration', () => {
  const raw = (extra: Record<string, unknown> = {}) => ({
    providers: { chatgpt: { baseUrl: 'https://chatgpt.com/backend-api/codex', accounts: [{ id: 'cg-1', authFile: '/run/secrets/auth.json' }], ...extra } },
  });

  it('needs TOLLGATE_ENCRYPTION_KEY only when an account logs in with an authFile, and checks its form', () => {
    expect(() => buildConfig(raw(), {})).toThrow('config: encryption.key: required when a ChatGPT account logs in with an authFile (TOLLGATE_ENCRYPTION_KEY: 32 bytes, e.g. openssl rand -base64 32)');
    expect(() => buildConfig(raw(), { TOLLGATE_ENCRYPTION_KEY: 'short' })).toThrow(/^config: encryption\.key: must be 32 bytes/);
    const config = buildConfig(raw(), { TOLLGATE_ENCRYPTION_KEY: ENCRYPTION_KEY });
    expect(config.providers.chatgpt!.oauth).toMatchObject({ issuer: 'https://auth.openai.com', clientId: 'app_EMoamEEZ73f0CkXaXp7hrann', refreshMarginMs: 300_000 });
    expect(() => buildConfig({ providers: { chatgpt: { baseUrl: 'https://x', accounts: [{ id: 'cg-1', apiKey: 'static-token' }] } } }, {})).not.toThrow();
    expect(() => buildConfig({ providers: { openai: { baseUrl: 'https://x', accounts: [{ id: 'oa-1', authFile: '/a' }] } } }, {})).toThrow(/authFile: only ChatGPT accounts/);
  });
});
