import { describe, expect, it } from 'vitest';
import type { RefusalRule } from '../src/mock/upstream.js';
import { TWO_ACCOUNT_SECRETS, startWithTwoAccounts, twoAccountOf, useGatewayPerTest, type TwoAccountOptions } from './support/gateway.js';
import { OPENAI_BODY, call } from './support/http.js';

const ADMIN_TOKEN = 'admin-token-for-probe-tests';
const { 'oa-1': SECRET_1, 'oa-2': SECRET_2 } = TWO_ACCOUNT_SECRETS;
/** A request the upstream refuses for what it asks, not for the account: OpenAI's wording. */
const MISMATCHED_ORGANIZATION: RefusalRule = {
  status: 401,
  code: 'mismatched_organization',
  message: 'OpenAI-Organization header should match organization for API key',
  header: { name: 'x-client-request-id', value: 'trap' },
};

const env = useGatewayPerTest();

/** The test's gateway (two OpenAI accounts); `extra` is merged over its config (its `providers` replace them). */
const start = (extra?: TwoAccountOptions['extra']) => startWithTwoAccounts(env, { adminToken: ADMIN_TOKEN, extra });

const ask = (secret: string, headers: Record<string, string> = {}, body: Record<string, unknown> = OPENAI_BODY) =>
  call(env.gw!.url, '/v1/responses', { headers: { authorization: `Bearer ${secret}`, ...headers }, body });

/** The trap request: a client header the upstream refuses (and a forged organization, which never reaches it). */
const trap = (secret: string) => ask(secret, { 'x-client-request-id': 'trap', 'openai-organization': 'org-doesnotexist' });

async function accountStates(): Promise<Record<string, string>> {
  const res = await call(env.gw!.url, '/admin/accounts', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  expect(res.status).toBe(200);
  return Object.fromEntries((res.json.data as Array<{ id: string; state: string }>).map((a) => [a.id, a.state]));
}

const modelCalls = () => env.mock.requests.filter((r) => r.method === 'POST');
/** Probes the mock received, by the account whose credential they carried. */
const probesByAccount = () => {
  const counts: Record<string, number> = {};
  for (const r of env.mock.requests.filter((r) => r.method === 'GET' && r.path.endsWith('/models'))) {
    const account = twoAccountOf(r.headers.authorization) ?? 'unknown';
    counts[account] = (counts[account] ?? 0) + 1;
  }
  return counts;
};

async function probeOutcomes(): Promise<Record<string, number>> {
  const metric = await env.gw!.app.gateway.metrics.accountProbes.get();
  return Object.fromEntries(metric.values.map((v) => [`${v.labels.account}:${v.labels.outcome}`, v.value]));
}

describe('a 401/403 caused by the request', () => {
  it('401 mismatched_organization: the caller gets it, no failover, every account stays active, others are served', async () => {
    await start();
    const [alice, bob] = [await env.gw!.createKey(), await env.gw!.createKey()];
    env.mock.refuseMatching(MISMATCHED_ORGANIZATION);

    const refused = await trap(alice.secret);
    expect(refused.status, refused.text).toBe(401);
    expect(refused.json.error).toMatchObject({ code: 'mismatched_organization', message: MISMATCHED_ORGANIZATION.message });
    // one upstream call, not one per account: the probe said the account is fine
    expect(modelCalls()).toHaveLength(1);
    const account = twoAccountOf(modelCalls()[0]!.headers.authorization)!;
    expect(modelCalls()[0]!.headers['openai-organization']).toBeUndefined();
    expect(probesByAccount()).toEqual({ [account]: 1 });
    // the probe carried the account's credential and nothing of the client's
    const probe = env.mock.requests.find((r) => r.method === 'GET')!;
    expect(probe.path).toBe('/v1/models');
    expect(probe.headers['x-client-request-id']).toBeUndefined();
    expect(JSON.stringify(probe.headers)).not.toContain(alice.secret);
    expect(await probeOutcomes()).toEqual({ [`${account}:ok`]: 1 });

    expect(await accountStates()).toEqual({ 'oa-1': 'active', 'oa-2': 'active' });
    for (let i = 0; i < 2; i++) expect((await ask(bob.secret)).status).toBe(200);
    expect(new Set(modelCalls().slice(1).map((r) => twoAccountOf(r.headers.authorization)))).toEqual(new Set(['oa-1', 'oa-2']));
  });

  it('403 for a model the account may not use: passed on, account active', async () => {
    await start();
    const key = await env.gw!.createKey();
    env.mock.refuseMatching({ status: 403, code: 'model_not_found', message: 'Project does not have access to model gpt-5-pro', model: 'gpt-5-pro' });
    const res = await ask(key.secret, {}, { model: 'gpt-5-pro', input: 'hi' });
    expect(res.status, res.text).toBe(403);
    expect(res.json.error.code).toBe('model_not_found');
    expect(modelCalls()).toHaveLength(1);
    expect(Object.values(probesByAccount())).toEqual([1]);
    expect(await accountStates()).toEqual({ 'oa-1': 'active', 'oa-2': 'active' });
    expect((await ask(key.secret)).status).toBe(200);
  });

  it('concurrent refusals share one probe per account', async () => {
    await start();
    const key = await env.gw!.createKey();
    env.mock.refuseMatching(MISMATCHED_ORGANIZATION);
    const results = await Promise.all(Array.from({ length: 12 }, () => trap(key.secret)));
    expect(results.map((r) => r.status)).toEqual(Array(12).fill(401));
    expect(modelCalls()).toHaveLength(12);
    const hit = new Set(modelCalls().map((r) => twoAccountOf(r.headers.authorization)!));
    expect(probesByAccount()).toEqual(Object.fromEntries([...hit].map((account) => [account, 1])));
    expect(await accountStates()).toEqual({ 'oa-1': 'active', 'oa-2': 'active' });
  });

  it('a probe that says nothing (upstream 500) disables nothing and passes the answer on', async () => {
    await start();
    const key = await env.gw!.createKey();
    const body = { error: { message: 'You do not have access to the organization tied to the API key.', type: 'invalid_request_error', param: null, code: 'no_organization' } };
    env.mock.enqueue({ status: 401, body }, { status: 500, body: { error: { message: 'upstream down', type: 'server_error', param: null, code: null } } });
    const res = await ask(key.secret);
    expect(res.status).toBe(401);
    expect(res.json).toEqual(body);
    expect(modelCalls()).toHaveLength(1);
    expect(Object.keys(await probeOutcomes())[0]).toMatch(/:inconclusive$/);
    expect(await accountStates()).toEqual({ 'oa-1': 'active', 'oa-2': 'active' });
  });
});

describe('a 401/403 caused by the account', () => {
  it('a revoked credential: concurrent requests share one refused probe, all fail over, the account is disabled', async () => {
    await start();
    const key = await env.gw!.createKey();
    env.mock.revokeCredential(SECRET_1);
    const results = await Promise.all(Array.from({ length: 12 }, () => ask(key.secret)));
    expect(results.map((r) => r.status)).toEqual(Array(12).fill(200));
    expect(probesByAccount()).toEqual({ 'oa-1': 1 });
    expect(await probeOutcomes()).toEqual({ 'oa-1:refused': 1 });
    expect(await accountStates()).toEqual({ 'oa-1': 'disabled', 'oa-2': 'active' });
    // the refused attempt's masked key never reached a client: every answer came from oa-2
    expect(results.every((r) => !r.text.includes('*****'))).toBe(true);
  });

  it('a 403 on a revoked account is probed and failed over the same way', async () => {
    await start();
    const key = await env.gw!.createKey();
    env.mock.enqueue({ status: 403, body: { error: { message: 'This key is disabled.', type: 'invalid_request_error', param: null, code: 'account_deactivated' } } });
    env.mock.revokeCredential(SECRET_1);
    env.mock.revokeCredential(SECRET_2);
    const res = await ask(key.secret);
    // both accounts refused and probed as refused: the last answer passes through, both disabled
    expect(res.status).toBe(401);
    expect(probesByAccount()).toEqual({ 'oa-1': 1, 'oa-2': 1 });
    expect(await accountStates()).toEqual({ 'oa-1': 'disabled', 'oa-2': 'disabled' });
    const next = await ask(key.secret);
    expect(next.status).toBe(503);
    expect(next.json.error.code).toBe('no_accounts');
  });

  it('probes Anthropic with x-api-key + anthropic-version and ChatGPT at {baseUrl}/models with its account id', async () => {
    await start((mockUrl) => ({
      providers: {
        anthropic: { baseUrl: mockUrl, accounts: [{ id: 'an-1', apiKey: 'sk-ant-probe-' + 'c'.repeat(24) }] },
        chatgpt: { baseUrl: `${mockUrl}/backend-api/codex`, accounts: [{ id: 'cg-1', apiKey: 'chatgpt-token-' + 'd'.repeat(24), accountId: 'acct-cg-1' }] },
      },
    }));
    const key = await env.gw!.createKey();
    env.mock.revokeCredential('sk-ant-probe-' + 'c'.repeat(24));
    const messages = await call(env.gw!.url, '/v1/messages', {
      headers: { 'x-api-key': key.secret },
      body: { model: 'claude-sonnet-4-5', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] },
    });
    expect(messages.status).toBe(401);
    expect(messages.json.error.type).toBe('authentication_error');
    env.mock.revokeCredential('chatgpt-token-' + 'd'.repeat(24));
    const codex = await call(env.gw!.url, '/backend-api/codex/responses', { headers: { authorization: `Bearer ${key.secret}` }, body: OPENAI_BODY });
    expect(codex.status).toBe(401);

    const probes = env.mock.requests.filter((r) => r.method === 'GET');
    expect(probes.map((r) => r.path)).toEqual(['/v1/models', '/backend-api/codex/models']);
    expect(probes[0]!.headers).toMatchObject({ 'x-api-key': 'sk-ant-probe-' + 'c'.repeat(24), 'anthropic-version': '2023-06-01' });
    expect(probes[0]!.headers.authorization).toBeUndefined();
    expect(probes[1]!.headers).toMatchObject({ authorization: `Bearer chatgpt-token-${'d'.repeat(24)}`, 'chatgpt-account-id': 'acct-cg-1' });
    expect(await accountStates()).toEqual({ 'an-1': 'disabled', 'cg-1': 'disabled' });
  });
});
