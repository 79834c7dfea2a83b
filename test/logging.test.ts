import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OPENAI_SECRET, startTestGateway, type TestGateway } from './support/gateway.js';

const lines: Array<Record<string, unknown>> = [];
const text = () => lines.map((line) => JSON.stringify(line)).join('\n');
let gw: TestGateway;

beforeAll(async () => {
  const sink = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(line));
      done();
    },
  });
  gw = await startTestGateway({ logger: pino({ level: 'info' }, sink) });
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
    expect(accessLines().map((l) => l.status).slice(-2)).toEqual([401, 401]);

    expect(text()).not.toContain(secret);
    expect(text()).not.toContain(OPENAI_SECRET);
    expect(text()).not.toContain('sk-tg-wrong-key-123456789');
  });
});
