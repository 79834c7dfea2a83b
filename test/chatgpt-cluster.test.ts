import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, createKeyVia, useCluster, type Replica } from './support/cluster.js';
import { OPENAI_BODY, call } from './support/http.js';

/** Short refresh bounds so the lock of a killed replica expires in seconds; generous for a loaded machine. */
const OAUTH = { refreshLockMs: 8_000, refreshTimeoutMs: 6_000 };
/** Accounts whose access tokens expired before the cluster started; each test uses its own. */
const ACCOUNTS = ['cg-fifty', 'cg-spent', 'cg-unspent'];

const env = useCluster(3, {
  env: { TOLLGATE_ENCRYPTION_KEY: randomBytes(32).toString('hex') },
  config: (mockUrl) => ({
    providers: {
      chatgpt: {
        baseUrl: `${mockUrl}/backend-api/codex`,
        oauth: { issuer: mockUrl, ...OAUTH },
        accounts: ACCOUNTS.map((id) => {
          const path = join(mkdtempSync(join(tmpdir(), 'tollgate-auth-')), 'auth.json');
          writeFileSync(path, JSON.stringify(env.mock.oauth.login({ chatgptAccountId: `acct-${id}` }, -60)));
          return { id, authFile: path };
        }),
      },
    },
  }),
});

const admin = (replica: Replica, method: string, path: string) => call(replica.url, path, { method, headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
const codex = (replica: Replica, secret: string) => call(replica.url, '/backend-api/codex/responses', { headers: { authorization: `Bearer ${secret}` }, body: OPENAI_BODY });
/** Only `id` serves: the others are disabled through the admin API. */
async function only(id: string, via: Replica) {
  for (const other of ACCOUNTS) await admin(via, 'POST', `/admin/accounts/${other}/${other === id ? 'enable' : 'disable'}`);
}
const served = () => env.mock.requests.filter((r) => r.path === '/backend-api/codex/responses');
/**
 * Resolves once the mock saw the caller of a held refresh go away. A held refresh is answered to
 * a caller the mock still thinks is there, and a replica's exit can reach the test before its
 * closed connection reaches the mock: the hold may only end after this.
 */
function refreshAbandoned(): Promise<void> {
  return new Promise((resolve) => {
    const onAbandoned = (request: { path: string }) => {
      if (request.path !== '/oauth/token') return;
      env.mock.events.off('abandoned', onAbandoned);
      resolve();
    };
    env.mock.events.on('abandoned', onAbandoned);
  });
}

describe('ChatGPT logins across replicas', () => {
  it('50 concurrent requests over 3 replicas on an expired token: exactly one refresh, every request served with the new token', async () => {
    const [a, b, c] = env.replicas;
    await only('cg-fifty', a!);
    const key = await createKeyVia(a!);
    const before = await env.store.getCredential('cg-fifty');
    const replies = await Promise.all(Array.from({ length: 50 }, (_, i) => codex([a, b, c][i % 3]!, key.key)));
    expect(replies.map((r) => r.status)).toEqual(Array(50).fill(200));
    expect(env.mock.oauth.refreshes.map((r) => r.outcome)).toEqual(['rotated']);
    const after = await env.store.getCredential('cg-fifty');
    expect(after!.generation).toBe(before!.generation + 1);
    const bearers = new Set(served().map((r) => r.headers.authorization));
    expect(served()).toHaveLength(50);
    expect(bearers.size).toBe(1);
    // the new token: issued by the refresh, not the expired one of the auth file
    expect(env.mock.oauth.accessProblem(served()[0]!.headers)).toBeNull();
  });

  it('the refreshing replica killed after spending the refresh token: the lock expires, the next refresher gets refresh_token_reused once, the account needs a new login', async () => {
    const [a, b] = env.replicas;
    await only('cg-spent', b!);
    const key = await createKeyVia(b!);
    const release = env.mock.oauth.holdRefreshes('spent');
    const held = once(env.mock.oauth.events, 'held');
    const doomed = codex(a!, key.key).catch(() => null);
    await held;
    const gone = refreshAbandoned();
    await a!.kill('SIGKILL');
    await gone;
    release();
    await doomed;
    // b waits out a's lock, then refreshes with the token a spent: refused once, never again
    const reply = await codex(b!, key.key);
    expect(reply.status).toBe(503);
    expect(reply.json.error.message).toMatch(/cg-spent needs a new login \(refresh_token_reused\)/);
    expect(env.mock.oauth.refreshes.map((r) => r.outcome)).toEqual(['abandoned', 'reused']);
    expect((await env.store.getAccountStates(['cg-spent'])).get('cg-spent')?.reauthRequired).toBe('refresh_token_reused');
    const again = await codex(b!, key.key);
    expect(again.status).toBe(503);
    expect(env.mock.oauth.refreshes).toHaveLength(2);
    const listed = (await admin(b!, 'GET', '/admin/accounts')).json.data.find((x: { id: string }) => x.id === 'cg-spent');
    expect(listed).toMatchObject({ state: 'reauth_required', reauth_reason: 'refresh_token_reused' });
    for (const token of env.mock.oauth.issued) expect(reply.text + again.text + JSON.stringify(listed)).not.toContain(token);
  });

  it('the refreshing replica killed before the auth server used the token: another replica takes over and refreshes once', async () => {
    const [, b, c] = env.replicas;
    await only('cg-unspent', c!);
    const key = await createKeyVia(c!);
    const original = await env.store.getCredential('cg-unspent');
    const release = env.mock.oauth.holdRefreshes('unspent');
    const held = once(env.mock.oauth.events, 'held');
    const doomed = codex(b!, key.key).catch(() => null);
    await held;
    const gone = refreshAbandoned();
    await b!.kill('SIGKILL');
    await gone;
    release();
    await doomed;
    const reply = await codex(c!, key.key);
    expect(reply.status).toBe(200);
    const [first, second] = env.mock.oauth.refreshes;
    expect([first!.outcome, second!.outcome]).toEqual(['abandoned', 'rotated']);
    // both used the one refresh token the store held: no request used a rotated-away one
    expect(second!.refreshToken).toBe(first!.refreshToken);
    expect(env.mock.oauth.refreshes).toHaveLength(2);
    expect((await env.store.getCredential('cg-unspent'))!.generation).toBe(original!.generation + 1);
  });
});
