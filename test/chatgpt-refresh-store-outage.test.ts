import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startMockUpstream, type MockUpstream } from '../src/mock/upstream.js';
import { RedisStore } from '../src/store/redis.js';
import { startTestGateway, type TestGateway } from './support/gateway.js';
import { OPENAI_BODY, call } from './support/http.js';
import { startRedis, type TestRedis } from './support/redis.js';

let redis: TestRedis;
let mock: MockUpstream;
let gw: TestGateway;

beforeAll(async () => {
  [redis, mock] = await Promise.all([startRedis(), startMockUpstream()]);
});
afterAll(async () => {
  await gw?.close();
  await mock?.close();
  await redis?.stop();
});

it('a refresh whose result cannot be stored yet is kept and stored once Redis is back, never refreshed again', async () => {
  const path = join(mkdtempSync(join(tmpdir(), 'tollgate-auth-')), 'auth.json');
  const file = mock.oauth.login({ chatgptAccountId: 'acct-1' }, -60) as { tokens: Record<string, string> };
  writeFileSync(path, JSON.stringify(file));
  gw = await startTestGateway({
    mock,
    store: await RedisStore.connect(redis.url),
    env: { TOLLGATE_ENCRYPTION_KEY: randomBytes(32).toString('base64') },
    config: (mockUrl) => ({
      providers: {
        chatgpt: {
          baseUrl: `${mockUrl}/backend-api/codex`,
          // the lock outlasts the outage below by far on a loaded machine
          oauth: { issuer: mockUrl, refreshLockMs: 60_000, refreshTimeoutMs: 10_000 },
          accounts: [{ id: 'cg-1', authFile: path }],
        },
      },
    }),
  });
  const key = await gw.createKey();
  const release = mock.oauth.holdRefreshes('unspent');
  const held = once(mock.oauth.events, 'held');
  const reply = call(gw.url, '/backend-api/codex/responses', { headers: { authorization: `Bearer ${key.secret}` }, body: OPENAI_BODY });
  await held;
  // the auth server rotates the token while the store is away: the new one exists only in the gateway
  await redis.stop();
  const refreshed = once(mock.oauth.events, 'refreshed');
  release();
  await refreshed;
  await redis.start();
  expect((await reply).status).toBe(200);
  expect(mock.oauth.refreshes.map((r) => r.outcome)).toEqual(['rotated']);
  const served = mock.requests.filter((r) => r.path === '/backend-api/codex/responses');
  expect(mock.oauth.accessProblem(served.at(-1)!.headers)).toBeNull();
  expect((await gw.store.getCredential('cg-1'))!.generation).toBe(2);
});
