import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startRedis, type TestRedis } from './support/redis.js';
import { OPENAI_SECRET, startTestGateway, type TestGateway } from './support/gateway.js';

// A real gateway on Redis, driven by Debian's chromium (scripts/ensure-chromium.mjs installs it).
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ADMIN_TOKEN = 'admin-token-' + 'd'.repeat(20);
const SECOND_SECRET = 'sk-upstream-openai-second-' + 'c'.repeat(16);
const SHOTS = join(process.cwd(), 'test-results', 'dashboard');

let redis: TestRedis;
let gw: TestGateway;
let profile: string;
let context: BrowserContext;
let page: Page;
/** console errors and uncaught exceptions of the page: any one fails the test */
const browserErrors: string[] = [];

beforeAll(async () => {
  redis = await startRedis();
  gw = await startTestGateway({
    config: (mockUrl) => ({
      adminToken: ADMIN_TOKEN,
      internalSecret: 'internal-secret-' + 'd'.repeat(16),
      redis: { url: redis.url },
      dashboard: { enabled: true },
      providers: { openai: { baseUrl: mockUrl, accounts: [{ id: 'oa-1', apiKey: OPENAI_SECRET }, { id: 'oa-2', apiKey: SECOND_SECRET }] } },
    }),
  });
  mkdirSync(SHOTS, { recursive: true });
  profile = mkdtempSync(join(tmpdir(), 'tollgate-chromium-'));
  // without the background-networking flags chromium keeps calling home on a closed network
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1100, height: 720 },
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(10_000); // a missing element fails with its locator, inside the test's time
  page.on('console', (message) => message.type() === 'error' && browserErrors.push(`${message.text()} ${message.location().url}`));
  page.on('pageerror', (err) => browserErrors.push(err.message));
  page.on('dialog', (dialog) => void dialog.accept());
});

afterAll(async () => {
  await context?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
  await gw?.close();
  await redis?.stop();
});

afterEach(() => {
  expect(browserErrors.splice(0)).toEqual([]);
});

const shot = (name: string) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
const sdk = (secret: string) => new OpenAI({ apiKey: secret, baseURL: `${gw.url}/v1`, maxRetries: 0 });
const ownUsage = async (secret: string) => (await fetch(`${gw.url}/v1/usage`, { headers: { 'x-api-key': secret } })).json();
const openPage = (title: string) => page.getByRole('navigation', { name: 'Dashboard pages' }).getByRole('link', { name: title }).click();

describe('dashboard in a browser', () => {
  let secret = '';
  let keyName = '';
  let tokensSent = 0;

  it('logs in with the admin token into an HttpOnly, SameSite=Strict session; the token is kept nowhere', async () => {
    await page.goto(`${gw.url}/dashboard`);
    await page.getByLabel('Admin token').fill('not-the-admin-token-at-all');
    // a wrong token is answered 401: the browser logs that as a console error, so the check goes through Node
    const refused = await fetch(`${gw.url}/dashboard/api/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token: 'wrong-token-0123456789' }) });
    expect(refused.status).toBe(401);
    await page.getByLabel('Admin token').fill(ADMIN_TOKEN);
    const firstLoad = page.waitForResponse((r) => r.url().includes('/admin/usage'));
    await page.getByRole('button', { name: 'Log in' }).click();
    await expect.poll(() => page.getByRole('navigation', { name: 'Dashboard pages' }).isVisible()).toBe(true);
    // the page settles: one history request, not one per render (the overview's own first load is
    // answered before counting starts, so it is not taken for a second refresh)
    await firstLoad;
    const historyCalls: string[] = [];
    page.on('request', (r) => r.url().includes('/admin/usage') && historyCalls.push(r.url()));
    // networkidle alone may resolve before the click's request is sent: wait for its answer first
    const refreshed = page.waitForResponse((r) => r.url().includes('/admin/usage'));
    await page.getByRole('button', { name: 'Refresh' }).click();
    await refreshed;
    await page.waitForLoadState('networkidle');
    expect(historyCalls).toHaveLength(1);

    const [cookie] = await context.cookies(gw.url);
    expect(cookie).toMatchObject({ name: 'tollgate_dashboard', httpOnly: true, sameSite: 'Strict', secure: false });
    expect(cookie.expires).toBeGreaterThan(Date.now() / 1000);
    expect(page.url()).not.toContain(ADMIN_TOKEN);
    expect(await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }) + document.cookie)).not.toContain(ADMIN_TOKEN);

    // the cookie alone opens reads; a change also needs the session's CSRF token
    const asBrowser = { cookie: `${cookie.name}=${cookie.value}` };
    expect((await fetch(`${gw.url}/admin/keys`, { headers: asBrowser })).status).toBe(200);
    const forged = await fetch(`${gw.url}/admin/keys`, { method: 'POST', headers: { ...asBrowser, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'csrf' }) });
    expect(forged.status).toBe(403);
    expect((await forged.json()).error.code).toBe('csrf_token_invalid');
  });

  it('creates a key whose secret is shown once; requests through the openai SDK show in its gauge and chart', async () => {
    await openPage('Keys');
    keyName = `browser-${Date.now()}`;
    await page.getByLabel('Name').fill(keyName);
    await page.getByRole('combobox', { name: /^Limit/ }).selectOption('requests');
    await page.getByRole('combobox', { name: /^per/ }).selectOption('daily');
    await page.getByLabel('Max (empty = no limit)').fill('100');
    await page.getByRole('button', { name: 'Create key' }).click();
    secret = (await page.getByTestId('new-secret').textContent()) ?? '';
    expect(secret).toMatch(/^sk-tg-/);

    for (const input of ['one', 'two two', 'three three three']) {
      const response = await sdk(secret).responses.create({ model: 'gpt-5', input });
      tokensSent += response.usage!.total_tokens;
    }
    await expect.poll(async () => (await ownUsage(secret)).total_tokens).toBe(tokensSent);

    await page.getByRole('button', { name: keyName }).click();
    await expect.poll(() => page.locator('.gauge-figures').first().textContent()).toBe('3 / 100');
    expect(await page.getByRole('meter', { name: 'requests daily' }).getAttribute('value')).toBe('3');
    await expect.poll(() => page.getByTestId('chart-total_tokens').getAttribute('data-total')).toBe(String(tokensSent));
    expect(await page.getByTestId('chart-total_tokens').locator('canvas').count()).toBe(1);

    // edit: a tighter limit shows in the gauge at once, and the gateway enforces it
    await page.getByLabel('Limits').fill('requests:daily:4');
    await page.getByRole('button', { name: 'Save', exact: true }).click();
    await expect.poll(() => page.locator('.gauge-figures').first().textContent()).toBe('3 / 4');
    await sdk(secret).responses.create({ model: 'gpt-5', input: 'four' }).then((r) => (tokensSent += r.usage!.total_tokens));
    await expect(sdk(secret).responses.create({ model: 'gpt-5', input: 'five' })).rejects.toMatchObject({ status: 429 });
    await shot('keys');
  });

  it('the usage page charts and tables the same requests by key, with a CSV export', async () => {
    await openPage('Usage');
    // four served and one refused by the limit: history counts the refusal too, as an error
    await expect.poll(() => page.getByTestId('chart-requests').getAttribute('data-total')).toBe('5');
    await expect.poll(() => page.getByRole('cell', { name: keyName }).count()).toBeGreaterThan(0);
    const download = page.waitForEvent('download');
    await page.getByRole('button', { name: 'Export CSV' }).click();
    expect((await download).suggestedFilename()).toBe('tollgate-usage-by-key.csv');
    await shot('usage');

    await openPage('Overview');
    await expect.poll(() => page.getByTestId('total-requests').locator('dd').textContent()).toBe('5');
    expect(await page.getByTestId('total-errors').locator('dd').textContent()).toBe('1');
    await shot('overview');
  });

  it('/dashboard/me shows the same numbers as /v1/usage', async () => {
    const expected = await ownUsage(secret);
    await page.goto(`${gw.url}/dashboard/me`);
    await page.getByLabel('Your API key').fill(secret);
    await page.getByRole('button', { name: 'Show my usage' }).click();
    await expect.poll(() => page.getByTestId('me-requests').textContent()).toBe(String(expected.request_count));
    expect(await page.getByTestId('me-input').textContent()).toBe(String(expected.input_tokens));
    expect(await page.getByTestId('me-output').textContent()).toBe(String(expected.output_tokens));
    expect(await page.getByTestId('me-total').textContent()).toBe(String(expected.total_tokens));
    expect(await page.locator('.gauge-figures').first().textContent()).toBe(`${expected.limits[0].current_value} / ${expected.limits[0].max_value}`);
    await expect.poll(() => page.getByTestId('chart-total_tokens').getAttribute('data-total')).toBe(String(expected.total_tokens));
    await shot('me');
    // a phone, in dark mode: nothing wider than the screen but the tables, which scroll inside their box
    await page.setViewportSize({ width: 390, height: 844 });
    await page.emulateMedia({ colorScheme: 'dark' });
    // the charts follow the new width on their resize observer's next turn: wait for the layout
    await expect.poll(() => page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    expect(await page.evaluate(() => getComputedStyle(document.body).backgroundColor)).toBe('rgb(15, 18, 23)');
    await shot('me-phone-dark');
    await page.setViewportSize({ width: 1100, height: 720 });
    await page.emulateMedia({ colorScheme: 'light' });
  });

  it('revoking the key in the UI makes the SDK get 401', async () => {
    await page.goto(`${gw.url}/dashboard/keys`);
    await page.getByRole('button', { name: keyName }).click();
    await page.getByRole('button', { name: 'Revoke' }).click();
    await expect.poll(() => page.getByRole('button', { name: keyName }).count()).toBe(0);
    await expect(sdk(secret).responses.create({ model: 'gpt-5', input: 'after revoke' })).rejects.toMatchObject({ status: 401 });
  });

  it('an account disabled in the UI is skipped by routing', async () => {
    await openPage('Accounts');
    await page.getByRole('button', { name: 'Disable oa-1' }).click();
    await expect.poll(() => page.locator('tr[data-account="oa-1"] td.state-disabled').textContent()).toBe('disabled');
    await shot('accounts');

    const { secret: other } = await gw.createKey();
    const before = gw.mock.requests.length;
    for (let i = 0; i < 4; i++) await sdk(other).responses.create({ model: 'gpt-5', input: `after disable ${i}` });
    const used = gw.mock.requests.slice(before).map((r) => r.headers.authorization);
    expect(used).toEqual(Array(4).fill(`Bearer ${SECOND_SECRET}`));

    await page.getByRole('button', { name: 'Enable oa-1' }).click();
    await expect.poll(() => page.locator('tr[data-account="oa-1"] td').nth(2).textContent()).toBe('active');
  });

  it('logs out: the cookie is gone and the login form is back', async () => {
    await page.goto(`${gw.url}/dashboard`);
    // the overview's own requests answered first: one sent after the logout would get a 401
    await expect.poll(() => page.getByTestId('total-requests').count()).toBe(1);
    await expect.poll(() => page.locator('tbody tr').count()).toBeGreaterThan(0);
    await page.getByRole('button', { name: 'Log out' }).click();
    await expect.poll(() => page.getByLabel('Admin token').isVisible()).toBe(true);
    expect(await context.cookies(gw.url)).toEqual([]);
  });
});
