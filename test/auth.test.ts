import { describe, expect, it } from 'vitest';
import { DEFAULTS } from '../src/config/schema.js';
import { settlesWithin } from './support/bounds.js';
import { ANTHROPIC_SECRET, OPENAI_SECRET, allHeaderText, useTestGateway } from './support/gateway.js';
import { ANTHROPIC_BODY, OPENAI_BODY, call, metricValue, type Reply } from './support/http.js';

const gw = useTestGateway();

interface Route {
  name: string;
  path: string;
  body?: object;
  shape: 'openai' | 'anthropic';
  /** the account credential the upstream must see, for model routes */
  upstream?: { header: string; value: string };
}

const ROUTES: Route[] = [
  { name: 'POST /v1/responses', path: '/v1/responses', body: OPENAI_BODY, shape: 'openai', upstream: { header: 'authorization', value: `Bearer ${OPENAI_SECRET}` } },
  { name: 'POST /v1/messages', path: '/v1/messages', body: ANTHROPIC_BODY, shape: 'anthropic', upstream: { header: 'x-api-key', value: ANTHROPIC_SECRET } },
  { name: 'GET /v1/usage', path: '/v1/usage', shape: 'openai' },
];

const JUNK = 'sk-tg-not-a-real-key-000000000000000000';

describe.each(ROUTES)('$name', (route) => {
  const send = (headers: Record<string, string>, body: object | undefined = route.body) => call(gw.url, route.path, { headers, body });

  /** The call was let through: the right answer for the right key, and the upstream saw the account, never the proxy key. */
  function expectAccepted(res: Reply, secret = gw.key.secret) {
    expect(res.status, res.text).toBe(200);
    if (!route.upstream) {
      expect(res.json.key.id).toBe(gw.key.id);
      expect(gw.mock.requests).toHaveLength(0);
      return;
    }
    expect(gw.mock.requests).toHaveLength(1);
    const seen = gw.mock.requests[0]!.headers;
    expect(seen[route.upstream.header]).toBe(route.upstream.value);
    expect(allHeaderText(seen)).not.toContain(secret);
  }

  function expectRefused(res: Reply, status: number, code: string) {
    expect(res.status, res.text).toBe(status);
    if (route.shape === 'openai') {
      expect(res.json).toEqual({ error: { message: expect.any(String), type: expect.any(String), code, param: code === 'model_not_allowed' ? 'model' : null } });
      expect(res.json.error.type).toBe('invalid_request_error');
    } else {
      expect(res.json).toMatchObject({ type: 'error', error: { type: status === 401 ? 'authentication_error' : 'permission_error', message: expect.any(String) } });
    }
    expect(res.headers.get('x-request-id')).toMatch(/^[\w.-]{1,128}$/);
    expect(gw.mock.requests).toHaveLength(0);
  }

  const messageOf = (res: Reply) => res.json.error.message as string;

  it('accepts a valid Bearer key', async () => {
    expectAccepted(await send({ authorization: `Bearer ${gw.key.secret}` }));
  });

  it('accepts a valid key sent only as x-api-key', async () => {
    expectAccepted(await send({ 'x-api-key': gw.key.secret }));
  });

  it('falls back to a valid x-api-key when the Bearer key is invalid', async () => {
    expectAccepted(await send({ authorization: `Bearer ${JUNK}`, 'x-api-key': gw.key.secret }));
  });

  it('accepts a valid Bearer key next to a junk x-api-key', async () => {
    expectAccepted(await send({ authorization: `Bearer ${gw.key.secret}`, 'x-api-key': JUNK }));
  });

  it('uses x-api-key when Authorization is not a Bearer', async () => {
    const basic = 'Basic ' + Buffer.from(`user:${gw.key.secret}`).toString('base64');
    expectAccepted(await send({ authorization: basic, 'x-api-key': gw.key.secret }));
  });

  it.each(['bearer', 'BEARER', 'bEaReR'])('takes the scheme %s case-insensitively and trims the key', async (scheme) => {
    expectAccepted(await send({ authorization: `${scheme}    ${gw.key.secret}   ` }));
  });

  it('refuses a Basic Authorization alone, even one carrying the key', async () => {
    const res = await send({ authorization: 'Basic ' + Buffer.from(`user:${gw.key.secret}`).toString('base64') });
    expectRefused(res, 401, 'invalid_api_key');
  });

  it.each([
    ['an invalid Bearer', { authorization: `Bearer ${JUNK}` }],
    ['an invalid x-api-key', { 'x-api-key': JUNK }],
    ['both invalid', { authorization: `Bearer ${JUNK}`, 'x-api-key': JUNK + 'x' }],
  ])('refuses %s with 401 naming both headers', async (_name, headers) => {
    const res = await send(headers);
    expectRefused(res, 401, 'invalid_api_key');
    expect(messageOf(res)).toContain('Authorization: Bearer');
    expect(messageOf(res)).toContain('x-api-key');
    if (route.shape === 'anthropic') expect(res.json.error.type).toBe('authentication_error');
  });

  it('refuses a request without any key', async () => {
    const res = await send({});
    expectRefused(res, 401, 'invalid_api_key');
    expect(messageOf(res)).toMatch(/missing/i);
    expect(messageOf(res)).toContain('x-api-key');
  });

  describe.each(['bearer', 'x-api-key'] as const)('a key that is no longer valid, sent as %s', (source) => {
    const headersFor = (secret: string): Record<string, string> =>
      source === 'bearer' ? { authorization: `Bearer ${secret}` } : { 'x-api-key': secret };

    it('is refused once expired', async () => {
      const expired = await gw.createKey({ expires_at: new Date(Date.now() - 60_000).toISOString() });
      const res = await send(headersFor(expired.secret));
      expectRefused(res, 401, 'invalid_api_key');
      expect(messageOf(res)).toMatch(/expired/i);
    });

    it('is accepted until its expiry time', async () => {
      const valid = await gw.createKey({ expires_at: new Date(Date.now() + 60_000).toISOString() });
      const res = await send(headersFor(valid.secret));
      expect(res.status, res.text).toBe(200);
    });

    it('is refused when disabled', async () => {
      const disabled = await gw.createKey({ disabled: true });
      const res = await send(headersFor(disabled.secret));
      expectRefused(res, 401, 'invalid_api_key');
      expect(messageOf(res)).toMatch(/disabled/i);
    });

    it('is refused once deleted from the store', async () => {
      const doomed = await gw.createKey();
      await gw.store.deleteKey(doomed.id);
      expectRefused(await send(headersFor(doomed.secret)), 401, 'invalid_api_key');
    });

    it('stops working within the key cache bound (1 s) after being deleted while in use', async () => {
      const doomed = await gw.createKey();
      expect((await send(headersFor(doomed.secret))).status).toBe(200);
      await gw.store.deleteKey(doomed.id);
      const deletedAt = Date.now();
      await settlesWithin(async () => (await send(headersFor(doomed.secret))).status, (status) => status === 401, deletedAt, DEFAULTS.keyCacheTtlMs);
    });
  });

  if (route.body) {
    it('refuses a model outside allowed_models with 403 model_not_allowed', async () => {
      const restricted = await gw.createKey({ allowed_models: ['some-other-model'] });
      const res = await send({ 'x-api-key': restricted.secret });
      expectRefused(res, 403, 'model_not_allowed');
      if (route.shape === 'anthropic') expect(res.json.error.code).toBe('model_not_allowed');
      expect(messageOf(res)).toContain((route.body as { model: string }).model);
    });

    it('lets a model in allowed_models through', async () => {
      const model = (route.body as { model: string }).model;
      const restricted = await gw.createKey({ allowed_models: [model] });
      const res = await send({ authorization: `Bearer ${restricted.secret}` });
      expectAccepted(res, restricted.secret);
      expect((gw.mock.requests[0]!.json as { model: string }).model).toBe(model);
    });
  }
});

describe('auth failure metric', () => {
  const failures = (source: string, reason = 'unknown') =>
    metricValue(gw, 'tollgate_auth_failures_total', { source, reason });

  it('counts a rejected x-api-key under source="x-api-key"', async () => {
    const before = { apiKey: await failures('x-api-key'), bearer: await failures('bearer') };
    expect((await call(gw.url, '/v1/responses', { headers: { 'x-api-key': JUNK }, body: OPENAI_BODY })).status).toBe(401);
    expect((await call(gw.url, '/v1/messages', { headers: { 'x-api-key': JUNK }, body: ANTHROPIC_BODY })).status).toBe(401);
    expect(await failures('x-api-key')).toBe(before.apiKey + 2);
    expect(await failures('bearer')).toBe(before.bearer);
    const text = await (await fetch(`${gw.internalUrl}/metrics`)).text();
    expect(text).toMatch(/tollgate_auth_failures_total\{source="x-api-key"[^}]*\} \d+/);
  });

  it('counts a rejected Bearer under source="bearer"', async () => {
    const before = { apiKey: await failures('x-api-key'), bearer: await failures('bearer') };
    expect((await call(gw.url, '/v1/usage', { headers: { authorization: `Bearer ${JUNK}` } })).status).toBe(401);
    expect(await failures('bearer')).toBe(before.bearer + 1);
    expect(await failures('x-api-key')).toBe(before.apiKey);
  });

  it('counts a request without a key under source="none"', async () => {
    const before = await failures('none');
    expect((await call(gw.url, '/v1/usage')).status).toBe(401);
    expect(await failures('none')).toBe(before + 1);
  });

  it('labels a disabled key by its reason', async () => {
    const disabled = await gw.createKey({ disabled: true });
    const before = await failures('x-api-key', 'disabled');
    expect((await call(gw.url, '/v1/usage', { headers: { 'x-api-key': disabled.secret } })).status).toBe(401);
    expect(await failures('x-api-key', 'disabled')).toBe(before + 1);
  });
});
