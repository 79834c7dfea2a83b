import { describe, expect, it } from 'vitest';
import { TWO_ACCOUNT_SECRETS, startWithTwoAccounts, twoAccountOf, useGatewayPerTest, type TwoAccountOptions } from './support/gateway.js';
import { OPENAI_BODY, call, closedPort } from './support/http.js';

const ADMIN_TOKEN = 'admin-token-for-failover-tests';
const { 'oa-1': SECRET_1, 'oa-2': SECRET_2 } = TWO_ACCOUNT_SECRETS;

const env = useGatewayPerTest();
let key: { id: string; secret: string };

/** The test's gateway (two OpenAI accounts) and a key for it; `accounts` replaces the two accounts' entries. */
async function start(accounts?: TwoAccountOptions['accounts']) {
  const gw = await startWithTwoAccounts(env, { adminToken: ADMIN_TOKEN, accounts });
  key = await gw.createKey();
  return gw;
}

const ask = () => call(env.gw!.url, '/v1/responses', { headers: { authorization: `Bearer ${key.secret}` }, body: OPENAI_BODY });

/** The account each upstream request was sent with, in arrival order. */
const accountsSeen = () => env.mock.requests.map((r) => twoAccountOf(r.headers.authorization) ?? `unknown:${r.headers.authorization}`);

interface AccountView {
  id: string;
  state: string;
  cooldown_until: string | null;
  in_flight: number;
}

async function accountStates(): Promise<Record<string, AccountView>> {
  const res = await call(env.gw!.url, '/admin/accounts', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  expect(res.status).toBe(200);
  return Object.fromEntries((res.json.data as AccountView[]).map((a) => [a.id, a]));
}

/** Every attempt, failed ones included, gave its in-flight slot back. */
async function expectNothingInFlight() {
  const states = await accountStates();
  expect(Object.values(states).map((a) => [a.id, a.in_flight])).toEqual([
    ['oa-1', 0],
    ['oa-2', 0],
  ]);
}

const other = (account: string) => (account === 'oa-1' ? 'oa-2' : 'oa-1');

describe('two OpenAI accounts', () => {
  it('round robin alternates the account credentials the upstream sees', async () => {
    await start();
    for (let i = 0; i < 6; i++) expect((await ask()).status).toBe(200);
    const seen = accountsSeen();
    expect(seen).toHaveLength(6);
    expect(new Set(seen)).toEqual(new Set(['oa-1', 'oa-2']));
    for (let i = 1; i < seen.length; i++) expect(seen[i]).not.toBe(seen[i - 1]);
    // the proxy key never reached the upstream
    for (const request of env.mock.requests) expect(JSON.stringify(request.headers)).not.toContain(key.secret);
    await expectNothingInFlight();
  });

  it('an upstream 500 is retried on the other account before the client sees anything', async () => {
    await start();
    env.mock.enqueue({ status: 500, body: { error: { message: 'boom', type: 'server_error', param: null, code: null } } });
    const res = await ask();
    expect(res.status, res.text).toBe(200);
    expect(res.json).toMatchObject({ object: 'response', status: 'completed' });
    const seen = accountsSeen();
    expect(seen).toHaveLength(2);
    expect(seen[1]).toBe(other(seen[0]!));
    // the same request, byte for byte, went to both
    expect(env.mock.requests[1]!.body).toBe(env.mock.requests[0]!.body);
    // a 5xx does not take the account out of rotation
    const states = await accountStates();
    expect(states['oa-1']!.state).toBe('active');
    expect(states['oa-2']!.state).toBe('active');
    await expectNothingInFlight();
  });

  it('an upstream 429 with Retry-After cools that account down; traffic moves to the other', async () => {
    await start();
    env.mock.enqueue({
      status: 429,
      headers: { 'retry-after': '30' },
      body: { error: { message: 'Rate limit reached', type: 'requests', param: null, code: 'rate_limit_exceeded' } },
    });
    const before = Date.now();
    const first = await ask();
    expect(first.status, first.text).toBe(200);
    const [limited, served] = accountsSeen();
    expect(served).toBe(other(limited!));

    for (let i = 0; i < 4; i++) expect((await ask()).status).toBe(200);
    expect(accountsSeen().slice(2)).toEqual([served, served, served, served]);

    const states = await accountStates();
    expect(states[limited!]!.state).toBe('cooldown');
    const until = Date.parse(states[limited!]!.cooldown_until!);
    expect(until).toBeGreaterThanOrEqual(before + 29_000);
    expect(until).toBeLessThanOrEqual(Date.now() + 30_000);
    expect(states[served!]).toMatchObject({ state: 'active', cooldown_until: null });
    await expectNothingInFlight();
  });

  it('every account answering 429: the last 429 passes through, then usage_limit_reached without an upstream call', async () => {
    await start();
    const lastBody = '{"error":{"message":"You exceeded your current quota (second account).","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}';
    env.mock.enqueue(
      { status: 429, headers: { 'retry-after': '30' }, body: '{"error":{"message":"first account limited","type":"requests","param":null,"code":null}}' },
      { status: 429, headers: { 'retry-after': '45' }, body: lastBody },
    );
    const passed = await ask();
    expect(passed.status).toBe(429);
    expect(passed.text).toBe(lastBody);
    expect(passed.headers.get('retry-after')).toBe('45');
    expect(new Set(accountsSeen())).toEqual(new Set(['oa-1', 'oa-2']));

    const refused = await ask();
    expect(refused.status, refused.text).toBe(429);
    expect(refused.json.error).toMatchObject({ code: 'usage_limit_reached', type: 'rate_limit_error' });
    // the earliest account back: the one told to wait 30 s
    const retryAfter = Number(refused.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThan(25);
    expect(retryAfter).toBeLessThanOrEqual(30);
    expect(env.mock.requests).toHaveLength(2);

    const states = await accountStates();
    expect(states['oa-1']!.state).toBe('cooldown');
    expect(states['oa-2']!.state).toBe('cooldown');
    // a refused request is not counted against the key (counts go in the key's next usage batch)
    await expect.poll(async () => (await call(env.gw!.url, '/v1/usage', { headers: { 'x-api-key': key.secret } })).json.request_count).toBe(1);
    await expectNothingInFlight();
  });

  it('a revoked account credential (401, confirmed by its probe) disables the account until an operator re-enables it', async () => {
    await start();
    env.mock.revokeCredential(SECRET_1);
    for (let i = 0; i < 5; i++) expect((await ask()).status).toBe(200);
    const calls = env.mock.requests.filter((r) => r.method === 'POST');
    // oa-1 was tried once, refused, probed (GET /v1/models) and dropped; oa-2 served everything
    expect(calls.map((r) => twoAccountOf(r.headers.authorization))).toEqual(['oa-1', 'oa-2', 'oa-2', 'oa-2', 'oa-2', 'oa-2']);
    expect(env.mock.requests.filter((r) => r.method === 'GET').map((r) => [r.path, r.headers.authorization])).toEqual([['/v1/models', `Bearer ${SECRET_1}`]]);
    expect((await accountStates())['oa-1']!.state).toBe('disabled');

    const enabled = await call(env.gw!.url, `/admin/accounts/oa-1/enable`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect(enabled.status).toBe(200);
    env.mock.reset();
    for (let i = 0; i < 4; i++) expect((await ask()).status).toBe(200);
    expect(new Set(accountsSeen())).toEqual(new Set(['oa-1', 'oa-2']));
    await expectNothingInFlight();
  });

  it('one account unreachable (closed port), the other live: every request succeeds on the live one', async () => {
    const deadUrl = `http://127.0.0.1:${await closedPort()}`;
    await start(() => [
      { id: 'oa-1', apiKey: SECRET_1, baseUrl: deadUrl },
      { id: 'oa-2', apiKey: SECRET_2 },
    ]);
    for (let i = 0; i < 4; i++) {
      const res = await ask();
      expect(res.status, res.text).toBe(200);
    }
    expect(accountsSeen()).toEqual(['oa-2', 'oa-2', 'oa-2', 'oa-2']);
    // counted in the key's next usage batch (within usage.flushIntervalMs)
    await expect.poll(async () => (await call(env.gw!.url, '/v1/usage', { headers: { 'x-api-key': key.secret } })).json.request_count).toBe(4);
    await expectNothingInFlight();
  });
});
