import { afterEach, describe, expect, it } from 'vitest';
import { sessionOf } from '../src/http/session-key.js';
import { MemoryStore } from '../src/store/memory.js';
import { OPENAI_SECRET, startTestGateway, type TestGateway } from './support/gateway.js';

let gw: TestGateway | undefined;
afterEach(async () => {
  await gw?.close();
  gw = undefined;
});

async function turn(g: TestGateway, secret: string, headers: Record<string, string>, body: Record<string, unknown>) {
  const res = await fetch(`${g.url}/v1/responses`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${secret}`, ...headers },
    body: JSON.stringify({ model: 'gpt-5', store: false, ...body }),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, json: () => JSON.parse(text) };
}

describe('bridge sessions on one replica', () => {
  it('returns x-codex-turn-state that continues the same session when replayed alone', async () => {
    gw = await startTestGateway();
    const { secret } = await gw.createKey();
    const first = await turn(gw, secret, { 'thread-id': 'thread-1' }, { input: 'one' });
    expect(first.status).toBe(200);
    const turnState = first.headers.get('x-codex-turn-state')!;
    expect(turnState).toBeTruthy();
    // Codex replays the turn state; the session continues on the same upstream connection
    const second = await turn(gw, secret, { 'x-codex-turn-state': turnState }, { input: 'two', previous_response_id: first.json().id });
    expect(second.status).toBe(200);
    expect(second.headers.get('x-codex-turn-state')).toBe(turnState);
    expect(gw.mock.wsConnections).toHaveLength(1);
    expect(gw.mock.requests).toHaveLength(0);
  });

  it('passes the upstream error of a failed continuation through as an HTTP error, and the session stays usable', async () => {
    gw = await startTestGateway();
    const { secret } = await gw.createKey();
    const bad = await turn(gw, secret, { 'session-id': 's-err' }, { input: 'x', previous_response_id: 'resp_unknown' });
    expect(bad.status).toBe(400);
    expect(bad.json().error.code).toBe('previous_response_not_found');
    const streamedBad = await turn(gw, secret, { 'session-id': 's-err' }, { input: 'x', previous_response_id: 'resp_unknown', stream: true });
    expect(streamedBad.status).toBe(400);
    const good = await turn(gw, secret, { 'session-id': 's-err' }, { input: 'y', stream: true });
    expect(good.status).toBe(200);
    expect(good.headers.get('content-type')).toContain('text/event-stream');
    expect(good.text).toContain('event: response.completed');
    expect(gw.mock.wsConnections).toHaveLength(1);
  });

  it('refuses a body nested too deeply to forward with 400, and the session stays usable', async () => {
    gw = await startTestGateway();
    const { secret } = await gw.createKey();
    // JSON.parse takes any depth; JSON.stringify of the upstream frame recurses and overflows the stack
    const depth = 100_000;
    const deep = await fetch(`${gw.url}/v1/responses`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${secret}`, 'session-id': 's-deep' },
      body: `{"model":"gpt-5","input":${'['.repeat(depth)}${']'.repeat(depth)}}`,
    });
    expect(deep.status).toBe(400);
    expect((await deep.json()).error.type).toBe('invalid_request_error');
    const good = await turn(gw, secret, { 'session-id': 's-deep' }, { input: 'after' });
    expect(good.status).toBe(200);
    expect(good.json().status).toBe('completed');
    expect(gw.mock.wsConnections).toHaveLength(1);
    expect(gw.mock.wsConnections[0]!.frames).toHaveLength(1);
  });

  it('a caller leaving mid-turn does not break the next turn', async () => {
    gw = await startTestGateway();
    const { secret } = await gw.createKey();
    const release = gw.mock.holdStreams();
    const abort = new AbortController();
    const res = await fetch(`${gw.url}/v1/responses`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${secret}`, 'session-id': 's-leave' },
      body: JSON.stringify({ model: 'gpt-5', input: 'long', stream: true }),
      signal: abort.signal,
    });
    const reader = res.body!.getReader();
    await reader.read(); // the first event arrived
    abort.abort();
    release();
    const next = await turn(gw, secret, { 'session-id': 's-leave' }, { input: 'next' });
    expect(next.status).toBe(200);
    expect(next.json().status).toBe('completed');
    expect(gw.mock.wsConnections).toHaveLength(1);
    // both turns reached the upstream and both are metered
    await expect.poll(async () => (await (await fetch(`${gw!.url}/v1/usage`, { headers: { 'x-api-key': secret } })).json()).request_count).toBe(2);
  });

  it('closes an idle session: the upstream socket closes and the lease is released', async () => {
    gw = await startTestGateway({ config: () => ({ bridge: { sessionIdleMs: 300, leaseMs: 600 } }) });
    const { id, secret } = await gw.createKey();
    expect((await turn(gw, secret, { 'session-id': 's-idle' }, { input: 'x' })).status).toBe(200);
    const sessionKey = sessionOf({ 'session-id': 's-idle' }, id)!.key;
    expect(await gw.store.getLease(sessionKey)).not.toBeNull();
    await expect.poll(() => gw!.mock.wsConnections[0]!.closed).toBe(true);
    expect(await gw.store.getLease(sessionKey)).toBeNull();
    // the next turn opens a new session
    expect((await turn(gw, secret, { 'session-id': 's-idle' }, { input: 'y' })).status).toBe(200);
    expect(gw.mock.wsConnections).toHaveLength(2);
  });

  it('passes an upstream turn state on, but never one the gateway issued', async () => {
    gw = await startTestGateway({ config: () => ({ bridge: { sessionIdleMs: 200, leaseMs: 600 } }) });
    const { secret } = await gw.createKey();
    // a turn state the client got from elsewhere reaches the upstream handshake untouched
    const first = await turn(gw, secret, { 'x-codex-turn-state': 'upstream-state-1' }, { input: 'one' });
    expect(first.status).toBe(200);
    expect(gw.mock.wsConnections[0]!.headers['x-codex-turn-state']).toBe('upstream-state-1');
    // ours identifies the session at the gateway only
    const ours = (await turn(gw, secret, { 'session-id': 's-ours' }, { input: 'two' })).headers.get('x-codex-turn-state')!;
    await expect.poll(() => gw!.mock.wsConnections[1]!.closed).toBe(true); // idle: closed
    expect((await turn(gw, secret, { 'x-codex-turn-state': ours }, { input: 'three' })).status).toBe(200);
    expect(gw.mock.wsConnections).toHaveLength(3);
    expect(gw.mock.wsConnections[2]!.headers['x-codex-turn-state']).toBeUndefined();
  });

  it('renews the lease while the session lives, keeping the epoch', async () => {
    // the real store, with a note of when each renewal was asked for and whether it held
    const renewals: Array<{ at: number; renewed: boolean }> = [];
    const store = new (class extends MemoryStore {
      override async renewLease(...args: Parameters<MemoryStore['renewLease']>) {
        const at = Date.now();
        const renewed = await super.renewLease(...args);
        renewals.push({ at, renewed });
        return renewed;
      }
    })();
    const leaseMs = 1_500;
    gw = await startTestGateway({ store, config: () => ({ bridge: { leaseMs } }) });
    const { id, secret } = await gw.createKey();
    expect((await turn(gw, secret, { 'session-id': 's-renew' }, { input: 'x' })).status).toBe(200);
    // the lease was claimed before now: unrenewed, it would be gone by this time
    const unrenewedExpiry = Date.now() + leaseMs;
    const sessionKey = sessionOf({ 'session-id': 's-renew' }, id)!.key;
    const lease = await gw.store.getLease(sessionKey);
    expect(lease).not.toBeNull();
    await expect.poll(() => renewals.some((r) => r.renewed && r.at > unrenewedExpiry)).toBe(true);
    expect(renewals.every((r) => r.renewed)).toBe(true);
    expect(await gw.store.getLease(sessionKey)).toEqual(lease);
  });

  it('a provider without WebSocket support keeps a session on one account over plain HTTP', async () => {
    gw = await startTestGateway({
      config: (mockUrl) => ({
        providers: {
          openai: { baseUrl: mockUrl, websocket: false, accounts: [{ id: 'oa-1', apiKey: OPENAI_SECRET }, { id: 'oa-2', apiKey: 'sk-second-account-' + 'c'.repeat(20) }] },
        },
      }),
    });
    const { secret } = await gw.createKey();
    let turnState: string | null = null;
    for (let i = 0; i < 4; i++) {
      // like Codex: the session id, and the turn state the gateway returned once there is one
      const res = await turn(gw, secret, { 'session-id': 'affinity', ...(turnState && { 'x-codex-turn-state': turnState }) }, { input: `turn ${i}` });
      expect(res.status).toBe(200);
      turnState = res.headers.get('x-codex-turn-state');
      expect(turnState).toBeTruthy();
    }
    const credentials = new Set(gw.mock.requests.map((r) => r.headers.authorization));
    expect(gw.mock.requests).toHaveLength(4);
    expect(gw.mock.requests.map((r) => r.headers['x-codex-turn-state'])).toEqual([undefined, undefined, undefined, undefined]);
    expect(credentials.size).toBe(1);
    expect(gw.mock.wsConnections).toHaveLength(0);
    // without a session, round robin alternates
    for (let i = 0; i < 2; i++) expect((await turn(gw, secret, {}, { input: 'plain' })).status).toBe(200);
    expect(new Set(gw.mock.requests.slice(4).map((r) => r.headers.authorization)).size).toBe(2);
  });
});

describe('bridge sessions whose upstream refuses the WebSocket', () => {
  it('passes the refusal through as the HTTP answer, counts nothing, and recovers once it accepts', async () => {
    gw = await startTestGateway();
    const { secret } = await gw.createKey();
    gw.mock.rejectWsUpgrades(503);
    const refused = await turn(gw, secret, { 'session-id': 's-refused' }, { input: 'x' });
    expect(refused.status).toBe(503);
    expect(refused.text).toContain('WebSocket upgrade rejected by mock');
    expect(refused.text).not.toContain(OPENAI_SECRET);
    const usage = await (await fetch(`${gw.url}/v1/usage`, { headers: { 'x-api-key': secret } })).json();
    expect(usage.request_count).toBe(0);
    gw.mock.rejectWsUpgrades(null);
    const accepted = await turn(gw, secret, { 'session-id': 's-refused' }, { input: 'y' });
    expect(accepted.status).toBe(200);
  });
});

describe('a session whose account becomes unusable', () => {
  const SECOND = 'sk-second-account-' + 'd'.repeat(20);
  const ADMIN = 'admin-token-' + 'm'.repeat(20);
  const twoAccounts = (websocket: boolean) => (mockUrl: string) => ({
    adminToken: ADMIN,
    providers: { openai: { baseUrl: mockUrl, websocket, accounts: [{ id: 'oa-1', apiKey: OPENAI_SECRET }, { id: 'oa-2', apiKey: SECOND }] } },
  });
  const disable = (g: TestGateway, id: string) => fetch(`${g.url}/admin/accounts/${id}/disable`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN}` } });
  const idOf = (credential: unknown) => (credential === `Bearer ${OPENAI_SECRET}` ? 'oa-1' : 'oa-2');

  it('moves to another account when it needs a new upstream connection anyway', async () => {
    gw = await startTestGateway({ config: twoAccounts(true) });
    const { id, secret } = await gw.createKey();
    expect((await turn(gw, secret, { 'session-id': 's-move' }, { input: 'one' })).status).toBe(200);
    const first = idOf(gw.mock.wsConnections[0]!.headers.authorization);
    expect((await disable(gw, first)).status).toBe(200);
    // the upstream drops the connection; the next turn needs a new one
    gw.mock.closeWsNext(1011, 'upstream restart');
    expect((await turn(gw, secret, { 'session-id': 's-move' }, { input: 'two' })).status).toBe(502);
    const third = await turn(gw, secret, { 'session-id': 's-move' }, { input: 'three' });
    expect(third.status).toBe(200);
    expect(gw.mock.wsConnections).toHaveLength(2);
    expect(idOf(gw.mock.wsConnections[1]!.headers.authorization)).not.toBe(first);
    expect((await gw.store.getLease(sessionOf({ 'session-id': 's-move' }, id)!.key))!.accountId).not.toBe(first);
  });

  it('without WebSocket, the next request goes to a usable account', async () => {
    gw = await startTestGateway({ config: twoAccounts(false) });
    const { secret } = await gw.createKey();
    expect((await turn(gw, secret, { 'session-id': 's-http' }, { input: 'one' })).status).toBe(200);
    const first = idOf(gw.mock.requests[0]!.headers.authorization);
    expect((await turn(gw, secret, { 'session-id': 's-http' }, { input: 'two' })).status).toBe(200);
    expect(idOf(gw.mock.requests[1]!.headers.authorization)).toBe(first);
    expect((await disable(gw, first)).status).toBe(200);
    expect((await turn(gw, secret, { 'session-id': 's-http' }, { input: 'three' })).status).toBe(200);
    expect(idOf(gw.mock.requests[2]!.headers.authorization)).not.toBe(first);
  });
});

describe('an upstream WebSocket that breaks the protocol', () => {
  it('fails that turn with 502, keeps the gateway up, and the next turn opens a new connection', async () => {
    gw = await startTestGateway();
    const { secret } = await gw.createKey();
    expect((await turn(gw, secret, { 'session-id': 's-broken' }, { input: 'one' })).status).toBe(200);
    gw.mock.breakWsNext();
    const broken = await turn(gw, secret, { 'session-id': 's-broken' }, { input: 'two' });
    expect(broken.status).toBe(502);
    expect(broken.json().error.code).toBe('upstream_unreachable');
    expect((await turn(gw, secret, { 'session-id': 's-broken' }, { input: 'three' })).status).toBe(200);
    expect(gw.mock.wsConnections).toHaveLength(2);
    expect((await fetch(`${gw.url}/health/live`)).status).toBe(200);
  });
});
