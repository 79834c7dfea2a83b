import { describe, expect, it } from 'vitest';
import { DEFAULTS } from '../src/config/schema.js';
import { settlesWithin } from './support/bounds.js';
import { ADMIN_TOKEN, createKeyVia, useCluster, type Replica } from './support/cluster.js';
import { servedTotals } from './support/gateway.js';

const env = useCluster(3);
/** the README's bound on how long an account change on one replica takes to reach the others */
const ACCOUNT_STATE_BOUND_MS = 100;

function respond(replica: Replica, secret: string, header: 'bearer' | 'x-api-key' = 'bearer') {
  return fetch(`${replica.url}/v1/responses`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(header === 'bearer' ? { authorization: `Bearer ${secret}` } : { 'x-api-key': secret }) },
    body: JSON.stringify({ model: 'gpt-5', input: 'hello' }),
  });
}

async function usageVia(replica: Replica, secret: string) {
  const res = await fetch(`${replica.url}/v1/usage`, { headers: { 'x-api-key': secret } });
  expect(res.status).toBe(200);
  return res.json();
}

describe('three env.replicas sharing one Redis', () => {
  it('admits exactly the limit under concurrent load spread over the env.replicas', async () => {
    const { key } = await createKeyVia(env.replicas[0]!, { name: 'limited', limits: [{ limit_type: 'requests', limit_window: 'daily', max_value: 50 }] });
    const results = await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        const res = await respond(env.replicas[i % 3]!, key, i % 2 ? 'bearer' : 'x-api-key');
        return { status: res.status, retryAfter: res.headers.get('retry-after'), body: await res.json() };
      }),
    );
    const admitted = results.filter((r) => r.status === 200);
    const refused = results.filter((r) => r.status === 429);
    expect(admitted).toHaveLength(50);
    expect(refused).toHaveLength(150);
    expect(env.mock.served).toHaveLength(50);
    const midnight = new Date(Math.ceil((Date.now() + 1) / 86_400_000) * 86_400_000).toISOString();
    for (const r of refused) {
      expect(r.body.error.code).toBe('rate_limit_exceeded');
      expect(r.body.error.resets_at).toBe(midnight);
      expect(Number(r.retryAfter)).toBeGreaterThan(0);
    }
    const usage = await usageVia(env.replicas[2]!, key);
    expect(usage.request_count).toBe(50);
    expect(usage.limits[0]).toMatchObject({ current_value: 50, remaining_value: 0, max_value: 50 });
  });

  it('reports usage made on replica A from replica C', async () => {
    const { key } = await createKeyVia(env.replicas[1]!);
    for (let i = 0; i < 3; i++) expect((await respond(env.replicas[0]!, key)).status).toBe(200);
    const expectedTokens = servedTotals(env.mock).total_tokens;
    await expect.poll(async () => (await usageVia(env.replicas[2]!, key)).total_tokens).toBe(expectedTokens);
    const [onA, onB, onC] = await Promise.all(env.replicas.map((r) => usageVia(r, key)));
    expect(onA).toEqual(onC);
    expect(onB).toEqual(onC);
    expect(onC.request_count).toBe(3);
  });

  it('a key revoked on replica B stops working on A and C within one second', async () => {
    const { id, key } = await createKeyVia(env.replicas[0]!);
    // warm every replica's key cache first: the bound must hold for cached keys too
    for (const replica of env.replicas) expect((await respond(replica, key)).status).toBe(200);
    const revoked = await fetch(`${env.replicas[1]!.url}/admin/keys/${id}`, { method: 'DELETE', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect(revoked.status).toBe(204);
    const revokedAt = Date.now();
    expect((await respond(env.replicas[1]!, key)).status).toBe(401);
    // the documented bound is the key cache TTL (1 s)
    await Promise.all(
      [env.replicas[0]!, env.replicas[2]!].map((replica) =>
        settlesWithin(async () => (await respond(replica, key, 'x-api-key')).status, (status) => status === 401, revokedAt, DEFAULTS.keyCacheTtlMs),
      ),
    );
  });

  it('a cooldown from an upstream 429 seen on replica A is respected by replica B within 100 ms', async () => {
    const { key } = await createKeyVia(env.replicas[0]!);
    // B has the account's state in its copy already: the bound must hold for a warm copy too
    expect((await respond(env.replicas[1]!, key)).status).toBe(200);
    env.mock.enqueue({ status: 429, headers: { 'retry-after': '30' }, body: { error: { message: 'Rate limit reached', type: 'requests', code: 'rate_limit_exceeded' } } });
    const onA = await respond(env.replicas[0]!, key);
    expect(onA.status).toBe(429);
    expect((await onA.json()).error.message).toBe('Rate limit reached');
    const cooledAt = Date.now();
    const seen = env.mock.requests.length;
    const onB = await settlesWithin(
      async () => {
        const res = await respond(env.replicas[1]!, key);
        return { status: res.status, retryAfter: res.headers.get('retry-after'), body: await res.json() };
      },
      (answer) => answer.status === 429,
      cooledAt,
      ACCOUNT_STATE_BOUND_MS,
    );
    expect(onB.body.error.code).toBe('usage_limit_reached');
    expect(Number(onB.retryAfter)).toBeGreaterThan(25);
    // what B served before it heard of the cooldown went upstream; nothing after
    const servedMeanwhile = env.mock.requests.length - seen;
    expect((await respond(env.replicas[1]!, key)).status).toBe(429);
    expect(env.mock.requests.length - seen).toBe(servedMeanwhile);
    // an operator ends the cooldown through any replica
    const enabled = await fetch(`${env.replicas[2]!.url}/admin/accounts/oa-1/enable`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect(enabled.status).toBe(200);
    const enabledAt = Date.now();
    await settlesWithin(async () => (await respond(env.replicas[1]!, key)).status, (status) => status === 200, enabledAt, ACCOUNT_STATE_BOUND_MS);
  });

  it('an account disabled on replica C is left alone by A and B within 100 ms, and back as soon as it is enabled', async () => {
    const { key } = await createKeyVia(env.replicas[0]!);
    // every replica has the account's state in its copy
    for (const replica of env.replicas) expect((await respond(replica, key)).status).toBe(200);
    const admin = (action: 'enable' | 'disable') =>
      fetch(`${env.replicas[2]!.url}/admin/accounts/oa-1/${action}`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect((await admin('disable')).status).toBe(200);
    const disabledAt = Date.now();
    const others = [env.replicas[0]!, env.replicas[1]!];
    const answers = await Promise.all(
      others.map((replica) =>
        settlesWithin(
          async () => {
            const res = await respond(replica, key);
            return { status: res.status, code: (await res.json()).error?.code as string | undefined };
          },
          (answer) => answer.status === 503,
          disabledAt,
          ACCOUNT_STATE_BOUND_MS,
        ),
      ),
    );
    for (const answer of answers) expect(answer.code).toBe('no_accounts');
    expect((await admin('enable')).status).toBe(200);
    const enabledAt = Date.now();
    await Promise.all(
      others.map((replica) =>
        settlesWithin(async () => (await respond(replica, key)).status, (status) => status === 200, enabledAt, ACCOUNT_STATE_BOUND_MS),
      ),
    );
  });
});
