import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from './support/gateway.js';

const ADMIN_TOKEN = 'admin-token-' + 's'.repeat(20);
let gw: TestGateway;
let off: TestGateway;

beforeAll(async () => {
  [gw, off] = await Promise.all([
    startTestGateway({ config: () => ({ adminToken: ADMIN_TOKEN, dashboard: { enabled: true, sessionTtlMs: 60_000 } }) }),
    startTestGateway({ config: () => ({ adminToken: ADMIN_TOKEN }) }),
  ]);
});
afterAll(async () => {
  await Promise.all([gw?.close(), off?.close()]);
});

async function login(target: TestGateway, token = ADMIN_TOKEN) {
  const res = await fetch(`${target.url}/dashboard/api/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token }) });
  const setCookie = res.headers.get('set-cookie') ?? '';
  return { res, setCookie, cookie: setCookie.split(';')[0], body: await res.json() };
}

describe('dashboard sessions', () => {
  it('a login sets an HttpOnly, SameSite=Strict cookie with an expiry, and answers the CSRF token', async () => {
    const { res, setCookie, body } = await login(gw);
    expect(res.status).toBe(200);
    expect(setCookie).toMatch(/^tollgate_dashboard=[^;]+; Max-Age=60; Path=\/; HttpOnly; SameSite=Strict$/);
    expect(body.csrf_token).toMatch(/^[\w-]{43}$/);
    expect(Date.parse(body.expires_at) - Date.now()).toBeGreaterThan(50_000);
  });

  it('the cookie is Secure when TLS ends at a proxy in front (X-Forwarded-Proto: https)', async () => {
    const res = await fetch(`${gw.url}/dashboard/api/login`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-forwarded-proto': 'https' }, body: JSON.stringify({ token: ADMIN_TOKEN }) });
    expect(res.headers.get('set-cookie')).toMatch(/; HttpOnly; SameSite=Strict; Secure$/);
  });

  it('a wrong token gets no cookie', async () => {
    const { res, setCookie, body } = await login(gw, 'not-the-admin-token-0000');
    expect(res.status).toBe(401);
    expect(setCookie).toBe('');
    expect(body.error.code).toBe('invalid_admin_token');
  });

  it('the admin API takes the cookie for reads and cookie + CSRF token for changes; a tampered cookie is refused', async () => {
    const { cookie, body } = await login(gw);
    expect((await fetch(`${gw.url}/admin/keys`, { headers: { cookie } })).status).toBe(200);
    const create = (headers: Record<string, string>) =>
      fetch(`${gw.url}/admin/keys`, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'via-session' }) });
    const noCsrf = await create({ cookie });
    expect(noCsrf.status).toBe(403);
    expect((await noCsrf.json()).error.code).toBe('csrf_token_invalid');
    expect((await create({ cookie, 'x-csrf-token': body.csrf_token.replace(/^./, (c: string) => (c === 'A' ? 'B' : 'A')) })).status).toBe(403);
    expect((await create({ cookie, 'x-csrf-token': body.csrf_token })).status).toBe(201);

    const [name, value] = cookie.split('=');
    const [expires, nonce, mac] = value.split('.');
    for (const forged of [`${Number(expires) + 3_600_000}.${nonce}.${mac}`, `${expires}.${nonce}x.${mac}`, `${expires}.${nonce}`]) {
      const res = await fetch(`${gw.url}/admin/keys`, { headers: { cookie: `${name}=${forged}` } });
      expect(res.status, forged).toBe(401);
    }
    expect((await (await fetch(`${gw.url}/dashboard/api/session`, { headers: { cookie: `${name}=${expires}.${nonce}.${mac}x` } })).json()).session).toBeNull();
  });

  it('logout needs the CSRF token and clears the cookie', async () => {
    const { cookie, body } = await login(gw);
    expect((await fetch(`${gw.url}/dashboard/api/logout`, { method: 'POST', headers: { cookie } })).status).toBe(403);
    const res = await fetch(`${gw.url}/dashboard/api/logout`, { method: 'POST', headers: { cookie, 'x-csrf-token': body.csrf_token } });
    expect(res.status).toBe(204);
    expect(res.headers.get('set-cookie')).toMatch(/^tollgate_dashboard=; Max-Age=0;/);
  });

  it('pages are served with a strict content security policy; with the dashboard off there are none and no cookie counts', async () => {
    const page = await fetch(`${gw.url}/dashboard/keys`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-security-policy')).toContain("script-src 'self'");
    expect(await page.text()).toContain('/dashboard/assets/app.js');
    expect((await fetch(`${gw.url}/dashboard/assets/app.js`)).headers.get('content-type')).toMatch(/^text\/javascript/);

    expect((await fetch(`${off.url}/dashboard`)).status).toBe(404);
    const { cookie } = await login(gw);
    expect((await fetch(`${off.url}/admin/keys`, { headers: { cookie } })).status).toBe(401);
  });
});
