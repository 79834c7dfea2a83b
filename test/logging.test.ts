import { createHash } from 'node:crypto';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OPENAI_SECRET, startTestGateway, type TestGateway } from './support/gateway.js';

const lines: Array<Record<string, unknown>> = [];
const text = () => lines.map((line) => JSON.stringify(line)).join('\n');
let gw: TestGateway;
const ADMIN_TOKEN = 'audit-admin-token-' + 'q'.repeat(16);

beforeAll(async () => {
  const sink = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(line));
      done();
    },
  });
  gw = await startTestGateway({ logger: pino({ level: 'info' }, sink), config: () => ({ adminToken: ADMIN_TOKEN }) });
});
afterAll(() => gw.close());

const accessLines = () => lines.filter((line) => line.msg === 'request');

describe('access log', () => {
  it('writes one line per request with its facts, and never a secret', async () => {
    const { id, secret } = await gw.createKey();
    const before = accessLines().length;
    const ok = await fetch(`${gw.url}/v1/responses`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${secret}`, 'x-request-id': 'log-test-1' },
      body: JSON.stringify({ model: 'gpt-5', input: 'hi' }),
    });
    expect(ok.status).toBe(200);
    // an upstream error that echoes the account's secret, and a refused key
    gw.mock.enqueue({ status: 401, body: { error: { message: `Incorrect API key provided: ${OPENAI_SECRET}` } } });
    await (await fetch(`${gw.url}/v1/responses`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': secret }, body: '{"model":"gpt-5"}' })).text();
    await (await fetch(`${gw.url}/v1/responses`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': 'sk-tg-wrong-key-123456789' }, body: '{}' })).text();
    await expect.poll(() => accessLines().length).toBe(before + 3);

    const line = accessLines().find((l) => l.reqId === 'log-test-1')!;
    expect(line).toMatchObject({ method: 'POST', url: '/v1/responses', status: 200, keyId: id, provider: 'openai', accountId: 'oa-1' });
    expect(line.tokens).toMatchObject({ total_tokens: gw.mock.served[0]!.usage.total_tokens });
    expect(typeof line.durationMs).toBe('number');
    // tracing is off (no OTLP endpoint): no trace ids, no span work
    expect(line).not.toHaveProperty('trace_id');
    expect(accessLines().map((l) => l.status).slice(-2)).toEqual([401, 401]);

    expect(text()).not.toContain(secret);
    expect(text()).not.toContain(OPENAI_SECRET);
    expect(text()).not.toContain('sk-tg-wrong-key-123456789');
  });
});

describe('audit log', () => {
  const auditLines = () => lines.filter((line) => line.logger === 'audit');
  const admin = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${gw.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, ...(body !== undefined && { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, body: res.status === 204 ? null : ((await res.json()) as Record<string, any>) };
  };

  it('writes one line per admin change: who, what, before and after, never a secret', async () => {
    const who = createHash('sha256').update(ADMIN_TOKEN).digest('hex').slice(0, 8);
    const limits = [{ limit_type: 'requests', limit_window: 'daily', max_value: 100 }];
    const created = await admin('POST', '/admin/keys', { name: 'audited', limits });
    expect(created.status).toBe(201);
    const keyId = created.body!.id as string;
    const secret = created.body!.key as string;
    const raised = [{ limit_type: 'requests', limit_window: 'daily', max_value: 500 }];
    expect((await admin('PATCH', `/admin/keys/${keyId}`, { limits: raised, disabled: false })).status).toBe(200);
    // refused changes change nothing and are not audited
    expect((await admin('PATCH', `/admin/keys/${keyId}`, { limits: 'many' })).status).toBe(400);
    expect((await admin('POST', '/admin/accounts/oa-1/disable')).status).toBe(200);
    expect((await admin('POST', '/admin/accounts/oa-1/enable')).status).toBe(200);
    expect((await admin('DELETE', `/admin/keys/${keyId}`)).status).toBe(204);
    // reads are not changes
    expect((await admin('GET', '/admin/keys')).status).toBe(200);

    await expect.poll(() => auditLines().length).toBe(5);
    const [create, patch, disable, enable, remove] = auditLines();
    for (const line of auditLines()) expect(line).toMatchObject({ logger: 'audit', admin: who, msg: 'admin change', level: 30 });
    expect(create).toMatchObject({
      route: 'POST /admin/keys',
      keyId,
      before: null,
      after: { name: 'audited', disabled: false, allowed_models: null, expires_at: null, limits },
    });
    // only the fields that changed
    expect(patch).toMatchObject({ route: 'PATCH /admin/keys/:id', keyId, before: { limits }, after: { limits: raised } });
    expect(Object.keys(patch!.after as object)).toEqual(['limits']);
    expect(disable).toMatchObject({ route: 'POST /admin/accounts/:id/disable', accountId: 'oa-1', provider: 'openai', before: { state: 'active' }, after: { state: 'disabled' } });
    expect(enable).toMatchObject({ accountId: 'oa-1', before: { state: 'disabled' }, after: { state: 'active' } });
    expect(remove).toMatchObject({ route: 'DELETE /admin/keys/:id', keyId, before: { name: 'audited', limits: raised }, after: null });

    const audit = auditLines().map((l) => JSON.stringify(l)).join('\n');
    const hash = createHash('sha256').update(secret).digest('hex');
    for (const forbidden of [ADMIN_TOKEN, secret, hash, 'sha256']) expect(audit).not.toContain(forbidden);
  });
});
