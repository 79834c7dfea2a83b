import { describe, expect, it } from 'vitest';
import { sessionOf } from '../src/http/session-key.js';
import { ADMIN_TOKEN, TEST_BRIDGE, createKeyVia, useCluster } from './support/cluster.js';
import { OPENAI_SECRET, allHeaderText } from './support/gateway.js';
import { OPENAI_BODY } from './support/http.js';

const env = useCluster(2, {
  config: (mockUrl) => ({
    providers: {
      openai: {
        baseUrl: mockUrl,
        accounts: [{ id: 'oa-1', apiKey: OPENAI_SECRET, organization: 'org-tollgate', project: 'proj_tollgate', headers: { 'x-account-tag': 'team-a' } }],
      },
    },
  }),
});

/** The client's try at choosing who is billed, its credentials, and one header no provider defines. */
const FORBIDDEN = {
  'openai-organization': 'org-doesnotexist',
  'openai-project': 'proj_attacker',
  'chatgpt-account-id': 'acct-attacker',
  cookie: 'session=stolen-cookie-value',
  'x-random-thing': 'unknown to every provider',
};
const ALLOWED = { 'openai-beta': 'responses=experimental', originator: 'codex_cli_rs', version: '0.124.0', 'x-codex-turn-metadata': '{"turn_id":"t1"}' };

describe('the owner hop of a bridged session', () => {
  it('carries the session and allow-listed headers to the owner, never credentials or billing headers', async () => {
    const { id, key } = await createKeyVia(env.replicas[0]!);
    const [a, b] = env.replicas as [(typeof env.replicas)[0], (typeof env.replicas)[0]];
    // replica A owns the session before its first turn, so the upstream handshake is built from the forwarded request
    const session = sessionOf({ 'session-id': 'hop-session' }, id)!;
    const claim = await env.store.claimLease(session.key, { instanceId: a.instanceId, accountId: 'oa-1' }, TEST_BRIDGE.leaseMs);
    expect(claim.claimed).toBe(true);

    const res = await fetch(`${b.url}/v1/responses`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}`, 'session-id': 'hop-session', ...FORBIDDEN, ...ALLOWED },
      body: JSON.stringify({ ...OPENAI_BODY, store: false }),
    });
    expect(res.status, await res.text()).toBe(200);
    // served by the owner: the lease never moved to B
    expect((await env.store.getLease(session.key))?.instanceId).toBe(a.instanceId);

    expect(env.mock.wsConnections).toHaveLength(1);
    const seen = env.mock.wsConnections[0]!.headers;
    const text = allHeaderText(seen);
    expect(text).not.toContain(key);
    for (const value of Object.values(FORBIDDEN)) expect(text).not.toContain(value);
    expect(seen['x-random-thing']).toBeUndefined();
    expect(seen.cookie).toBeUndefined();
    expect(seen['chatgpt-account-id']).toBeUndefined();
    expect(Object.keys(seen).filter((name) => name.startsWith('x-tollgate-'))).toEqual([]);
    expect(seen).toMatchObject({
      authorization: `Bearer ${OPENAI_SECRET}`,
      'openai-organization': 'org-tollgate',
      'openai-project': 'proj_tollgate',
      'x-account-tag': 'team-a',
      'session-id': 'hop-session',
      ...ALLOWED,
    });
  });
});

describe('account probes across replicas', () => {
  it('refusals on both replicas at once share one probe; the account stays active', async () => {
    const { key } = await createKeyVia(env.replicas[0]!);
    env.mock.refuseMatching({ status: 401, code: 'mismatched_organization', header: { name: 'x-client-request-id', value: 'trap' } });
    const results = await Promise.all(
      env.replicas.flatMap((replica) =>
        Array.from({ length: 4 }, () =>
          fetch(`${replica.url}/v1/responses`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', authorization: `Bearer ${key}`, 'x-client-request-id': 'trap' },
            body: JSON.stringify(OPENAI_BODY),
          }).then(async (r) => ({ status: r.status, body: await r.json() })),
        ),
      ),
    );
    expect(results.map((r) => r.status)).toEqual(Array(8).fill(401));
    expect(results.every((r) => r.body.error.code === 'mismatched_organization')).toBe(true);
    expect(env.mock.requests.filter((r) => r.method === 'GET' && r.path === '/v1/models')).toHaveLength(1);
    const accounts = await fetch(`${env.replicas[1]!.url}/admin/accounts`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect(((await accounts.json()) as { data: Array<{ id: string; state: string }> }).data.map((a) => [a.id, a.state])).toEqual([['oa-1', 'active']]);
  });
});
