import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { CONTEXT_HEADER, signContext } from '../src/bridge/context.js';
import { sessionOf } from '../src/http/session-key.js';
import { RedisStore } from '../src/store/redis.js';
import { INTERNAL_SECRET } from './support/cluster.js';
import { startTestGateway, type TestGateway } from './support/gateway.js';
import { startRedis, type TestRedis } from './support/redis.js';

let redis: TestRedis;
let gw: TestGateway;
let key: { id: string; secret: string };
let instanceId: string;
const SESSION = { 'session-id': 'ctx-session' };
const BODY = Buffer.from(JSON.stringify({ model: 'gpt-5', input: 'forwarded', store: false }));

beforeAll(async () => {
  redis = await startRedis();
  gw = await startTestGateway({
    store: await RedisStore.connect(redis.url),
    config: () => ({ internalSecret: INTERNAL_SECRET, redis: { url: redis.url } }),
  });
  instanceId = gw.app.bridge.identity.instanceId;
}, 30_000);

afterAll(async () => {
  await gw?.close();
  await redis?.stop();
});

beforeEach(async () => {
  gw.mock.reset();
  key = await gw.createKey({ allowed_models: ['gpt-5'] });
});

interface ContextOverrides {
  keyId?: string;
  targetInstance?: string;
  sessionKey?: string;
  body?: Buffer;
  secret?: string;
  now?: number;
  route?: string;
}

function context(overrides: ContextOverrides = {}): string {
  return signContext(
    {
      keyId: overrides.keyId ?? key.id,
      authSource: 'x-api-key',
      originInstance: 'replica-elsewhere',
      targetInstance: overrides.targetInstance ?? instanceId,
      sessionKey: overrides.sessionKey ?? sessionOf(SESSION, key.id)!.key,
      route: overrides.route,
      body: overrides.body ?? BODY,
      ttlSec: 30,
    },
    overrides.secret ?? INTERNAL_SECRET,
    overrides.now,
  );
}

async function forward(header: string | undefined, body: Buffer = BODY, extra: Record<string, string> = {}) {
  const res = await fetch(`${gw.internalUrl}/internal/bridge/responses`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...SESSION, ...extra, ...(header !== undefined && { [CONTEXT_HEADER]: header }) },
    body: body.toString(),
  });
  return { status: res.status, body: await res.json() };
}

function expectNothingUpstream() {
  expect(gw.mock.requests).toHaveLength(0);
  expect(gw.mock.wsConnections).toHaveLength(0);
}

describe('signed re-auth context on the internal route', () => {
  it('refuses a context naming a route that is not bridged: 400 context_malformed, nothing upstream', async () => {
    const res = await forward(context({ route: '/v1/chat/completions' }));
    expect(res.status).toBe(400);
    expect(res.body.error.code).toBe('context_malformed');
    expectNothingUpstream();
  });

  it('serves a context naming the Codex route on that route\'s upstream path', async () => {
    const res = await forward(context({ route: '/backend-api/codex/responses' }));
    expect(res.status).toBe(200);
    expect(gw.mock.wsConnections.map((c) => c.path.split('?')[0])).toEqual(['/v1/responses']);
  });

  it('serves a well-signed forward, re-validating the key by id', async () => {
    const res = await forward(context());
    expect(res.status).toBe(200);
    expect(res.body.status).toBe('completed');
    expect(gw.mock.wsConnections).toHaveLength(1);
    expect(gw.mock.wsConnections[0]!.headers['x-tollgate-context']).toBeUndefined();
  });

  const refusals: Array<[string, () => { header: string | undefined; body?: Buffer }, number, string]> = [
    ['missing', () => ({ header: undefined }), 401, 'context_bad_signature'],
    ['malformed', () => ({ header: 'not-a-context' }), 400, 'context_malformed'],
    ['signed with another secret', () => ({ header: context({ secret: 'some-other-secret-entirely' }) }), 401, 'context_bad_signature'],
    [
      'tampered field',
      () => {
        const [payload, signature] = context().split('.');
        const fields = JSON.parse(Buffer.from(payload!, 'base64url').toString());
        fields.keyId = 'key_someone_else';
        return { header: `${Buffer.from(JSON.stringify(fields)).toString('base64url')}.${signature}` };
      },
      401,
      'context_bad_signature',
    ],
    ['tampered body', () => ({ header: context(), body: Buffer.from(JSON.stringify({ model: 'gpt-5', input: 'changed' })) }), 400, 'context_body_mismatch'],
    ['expired', () => ({ header: context({ now: Date.now() - 60_000 }) }), 401, 'context_expired'],
    ['for another replica', () => ({ header: context({ targetInstance: 'replica-zzz' }) }), 400, 'context_wrong_target'],
    ['naming another session', () => ({ header: context({ sessionKey: `${'x'}:other` }) }), 400, 'context_malformed'],
  ];

  it.each(refusals)('refuses a %s context and sends nothing upstream', async (_name, make, status, code) => {
    const { header, body } = make();
    const res = await forward(header, body);
    expect(res.status).toBe(status);
    expect(res.body.error.code).toBe(code);
    expectNothingUpstream();
  });

  it.each([['empty', ''], ['null', 'null'], ['a string', '"hello"'], ['an array', '[1,2]'], ['a number', '42']])(
    'refuses a validly signed forward whose body is %s with 400, sending nothing upstream',
    async (_name, text) => {
      const body = Buffer.from(text);
      const res = await forward(context({ body }), body);
      expect(res.status).toBe(400);
      expect(res.body.error.code).toBe('invalid_request');
      expectNothingUpstream();
    },
  );

  it('refuses a replayed context', async () => {
    const header = context();
    expect((await forward(header)).status).toBe(200);
    const requestsBefore = gw.mock.wsConnections[0]!.frames.length;
    const replay = await forward(header);
    expect(replay.status).toBe(401);
    expect(replay.body.error.code).toBe('context_replayed');
    expect(gw.mock.wsConnections[0]!.frames.length).toBe(requestsBefore);
  });

  it('spends the nonce of a verified header while the body is read: a context refused for its body is not usable again', async () => {
    const header = context();
    const tampered = await forward(header, Buffer.from(JSON.stringify({ model: 'gpt-5', input: 'changed' })));
    expect(tampered.body.error.code).toBe('context_body_mismatch');
    const retried = await forward(header);
    expect(retried.status).toBe(401);
    expect(retried.body.error.code).toBe('context_replayed');
    expectNothingUpstream();
  });

  it('refuses a revoked, disabled or expired key and a disallowed model on the owner', async () => {
    const revoked = await gw.createKey();
    await gw.store.deleteKey(revoked.id);
    const expired = await gw.createKey({ expires_at: new Date(Date.now() - 1000).toISOString() });
    const disabled = await gw.createKey({ disabled: true });
    for (const k of [revoked, expired, disabled]) {
      const res = await fetch(`${gw.internalUrl}/internal/bridge/responses`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...SESSION, [CONTEXT_HEADER]: context({ keyId: k.id, sessionKey: sessionOf(SESSION, k.id)!.key }) },
        body: BODY.toString(),
      });
      expect(res.status).toBe(401);
      expect((await res.json()).error.code).toBe('invalid_api_key');
    }
    const otherModel = Buffer.from(JSON.stringify({ model: 'gpt-5-mini', input: 'x' }));
    const res = await forward(context({ body: otherModel }), otherModel);
    expect(res.status).toBe(403);
    expect(res.body.error.code).toBe('model_not_allowed');
    expectNothingUpstream();
  });

  it('a forwarded request for a session owned by another live replica is refused (loop guard)', async () => {
    const session = sessionOf(SESSION, key.id)!;
    await gw.store.heartbeat({ instanceId: 'replica-other', advertiseUrl: 'http://127.0.0.1:1' }, Date.now());
    const { lease } = await gw.store.claimLease(session.key, { instanceId: 'replica-other', accountId: 'oa-1' }, 10_000);
    const res = await forward(context());
    expect(res.status).toBe(503);
    expect(res.body.error).toMatchObject({ code: 'forward_loop', type: 'server_error', message: expect.stringContaining('replica-other') });
    // refused, not taken over: the live owner keeps the session
    expect(await gw.store.getLease(session.key)).toEqual(lease);
    expectNothingUpstream();
  });
});

describe('the public port and internal headers', () => {
  it('does not serve /internal/* on the public port', async () => {
    const res = await fetch(`${gw.url}/internal/bridge/responses`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...SESSION, [CONTEXT_HEADER]: context() },
      body: BODY.toString(),
    });
    expect(res.status).toBe(404);
    expectNothingUpstream();
  });

  it('strips and never trusts x-tollgate-* headers from outside callers', async () => {
    // a forged context alone does not authenticate on the public port
    const forged = await fetch(`${gw.url}/v1/responses`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', [CONTEXT_HEADER]: context() },
      body: BODY.toString(),
    });
    expect(forged.status).toBe(401);
    // with a real key it is stripped before the upstream
    const res = await fetch(`${gw.url}/v1/responses`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key.secret}`, [CONTEXT_HEADER]: 'forged', 'x-tollgate-origin': 'evil' },
      body: BODY.toString(),
    });
    expect(res.status).toBe(200);
    const seen = gw.mock.requests[0]!.headers;
    expect(Object.keys(seen).filter((h) => h.startsWith('x-tollgate-'))).toEqual([]);
  });
});
