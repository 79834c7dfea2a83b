import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Limit } from '../src/usage/counters.js';
import { Pricing, costOf } from '../src/usage/pricing.js';
import { ANTHROPIC_SECRET, OPENAI_SECRET, servedTotals, startTestGateway, type TestGateway } from './support/gateway.js';
import { ANTHROPIC_BODY, OPENAI_BODY, call, closedPort, usageOf } from './support/http.js';

const PRICES = new Pricing();

let gw: TestGateway;

beforeAll(async () => {
  gw = await startTestGateway();
});
afterAll(() => gw.close());
beforeEach(async () => {
  gw.mock.reset();
  for (const id of ['oa-1', 'an-1']) await gw.store.setAccountCooldown(id, 0);
});

const HOUR = 3_600_000;

/** Window ends computed here from the calendar, independently of the gateway's code. */
function windowEnd(window: Limit['limit_window'], now: Date): number {
  const y = now.getUTCFullYear();
  const m = now.getUTCMonth();
  const d = now.getUTCDate();
  switch (window) {
    case '5h':
      return (Math.floor(now.getTime() / (5 * HOUR)) + 1) * 5 * HOUR;
    case 'daily':
      return Date.UTC(y, m, d + 1);
    case 'weekly': {
      const daysToMonday = ((8 - now.getUTCDay()) % 7) || 7; // Sunday 0 -> 1, Monday 1 -> 7
      return Date.UTC(y, m, d + daysToMonday);
    }
    case 'monthly':
      return Date.UTC(y, m + 1, 1);
  }
}

const responses = (secret: string, body: object = OPENAI_BODY) =>
  call(gw.url, '/v1/responses', { headers: { authorization: `Bearer ${secret}` }, body });
const messages = (secret: string, body: object = ANTHROPIC_BODY) =>
  call(gw.url, '/v1/messages', { headers: { 'x-api-key': secret }, body });

describe('a daily request limit', () => {
  it('admits max_value requests, then answers 429 rate_limit_exceeded until the next UTC midnight', async () => {
    const key = await gw.createKey({ limits: [{ limit_type: 'requests', limit_window: 'daily', max_value: 3 }] });
    for (let i = 0; i < 3; i++) expect((await responses(key.secret)).status).toBe(200);
    expect(gw.mock.requests).toHaveLength(3);

    const before = Date.now();
    const res = await responses(key.secret);
    const after = Date.now();
    expect(res.status, res.text).toBe(429);
    expect(res.json.error).toMatchObject({ type: 'rate_limit_error', code: 'rate_limit_exceeded' });
    const midnight = windowEnd('daily', new Date(before));
    expect(Date.parse(res.json.error.resets_at)).toBe(midnight);
    const retryAfter = Number(res.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThanOrEqual(Math.floor((midnight - after) / 1000));
    expect(retryAfter).toBeLessThanOrEqual(Math.ceil((midnight - before) / 1000));
    expect(res.json.error.message).toMatch(/daily requests limit/);
    expect(gw.mock.requests).toHaveLength(3);

    // the same in Anthropic's shape on an Anthropic route
    const anthropic = await messages(key.secret);
    expect(anthropic.status).toBe(429);
    expect(anthropic.json).toMatchObject({ type: 'error', error: { type: 'rate_limit_error', code: 'rate_limit_exceeded' } });
    expect(Date.parse(anthropic.json.error.resets_at)).toBe(midnight);
    expect(Number(anthropic.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(gw.mock.requests).toHaveLength(3);

    // refused requests were not counted
    expect((await usageOf(gw, key.secret)).request_count).toBe(3);
  });

  it('holds under concurrent requests: exactly max_value of them get through', async () => {
    const key = await gw.createKey({ limits: [{ limit_type: 'requests', limit_window: 'daily', max_value: 3 }] });
    const statuses = await Promise.all(Array.from({ length: 10 }, () => responses(key.secret).then((r) => r.status)));
    expect(statuses.filter((s) => s === 200)).toHaveLength(3);
    expect(statuses.filter((s) => s === 429)).toHaveLength(7);
    expect(gw.mock.requests).toHaveLength(3);
  });

  it('is per key: another key is not affected', async () => {
    const limited = await gw.createKey({ limits: [{ limit_type: 'requests', limit_window: 'daily', max_value: 1 }] });
    const other = await gw.createKey();
    expect((await responses(limited.secret)).status).toBe(200);
    expect((await responses(limited.secret)).status).toBe(429);
    expect((await responses(other.secret)).status).toBe(200);
  });
});

describe('a token limit', () => {
  it('blocks the next request once the usage reported by the upstream is over it', async () => {
    const key = await gw.createKey({ limits: [{ limit_type: 'total_tokens', limit_window: 'daily', max_value: 20 }] });
    expect((await responses(key.secret)).status).toBe(200);
    const spent = gw.mock.served[0]!.usage.total_tokens;
    expect(spent).toBeGreaterThan(20);
    await expect.poll(async () => (await usageOf(gw, key.secret)).total_tokens).toBe(spent);

    const res = await responses(key.secret);
    expect(res.status, res.text).toBe(429);
    expect(res.json.error.code).toBe('rate_limit_exceeded');
    expect(res.json.error.message).toMatch(/total_tokens/);
    expect(Date.parse(res.json.error.resets_at)).toBe(windowEnd('daily', new Date()));
    expect(res.headers.get('retry-after')).toMatch(/^\d+$/);
    expect(gw.mock.requests).toHaveLength(1);

    const usage = await usageOf(gw, key.secret);
    expect(usage.request_count).toBe(1);
    expect(usage.limits[0]).toMatchObject({ current_value: spent, remaining_value: 0 });
  });

  it('admits requests while usage is under it', async () => {
    const key = await gw.createKey({ limits: [{ limit_type: 'output_tokens', limit_window: '5h', max_value: 1_000 }] });
    for (let i = 0; i < 3; i++) expect((await messages(key.secret)).status).toBe(200);
    expect(gw.mock.requests).toHaveLength(3);
  });
});

describe('GET /v1/usage', () => {
  it('lists every limit with its current value, remaining value and reset time', async () => {
    const limits: Limit[] = [
      { limit_type: 'requests', limit_window: 'daily', max_value: 10 },
      { limit_type: 'total_tokens', limit_window: 'weekly', max_value: 100_000 },
      { limit_type: 'input_tokens', limit_window: 'monthly', max_value: 5_000 },
      { limit_type: 'output_tokens', limit_window: '5h', max_value: 1_000 },
    ];
    const key = await gw.createKey({ name: 'alice', limits, allowed_models: ['gpt-5', 'claude-sonnet-4-5'] });
    expect((await responses(key.secret)).status).toBe(200);
    expect((await messages(key.secret, { ...ANTHROPIC_BODY, stream: true })).status).toBe(200);
    const total = servedTotals(gw.mock);
    expect(gw.mock.served).toHaveLength(2);
    await expect.poll(async () => (await usageOf(gw, key.secret)).total_tokens).toBe(total.total_tokens);

    const now = new Date();
    const usage = await usageOf(gw, key.secret);
    const resetAt = (window: Limit['limit_window']) => new Date(windowEnd(window, now)).toISOString().replace('.000Z', 'Z');
    expect(usage).toEqual({
      key: { id: key.id, name: 'alice', expires_at: null, allowed_models: ['gpt-5', 'claude-sonnet-4-5'] },
      request_count: 2,
      ...total,
      // both models are in the shipped price table
      cost_usd: expect.closeTo(costOf(gw.mock.served[0]!.usage, PRICES.priceOf('gpt-5')!) + costOf(gw.mock.served[1]!.usage, PRICES.priceOf('claude-sonnet-4-5')!), 6),
      limits: [
        { ...limits[0], current_value: 2, remaining_value: 8, reset_at: resetAt('daily') },
        { ...limits[1], current_value: total.total_tokens, remaining_value: 100_000 - total.total_tokens, reset_at: resetAt('weekly') },
        { ...limits[2], current_value: total.input_tokens, remaining_value: 5_000 - total.input_tokens, reset_at: resetAt('monthly') },
        { ...limits[3], current_value: total.output_tokens, remaining_value: 1_000 - total.output_tokens, reset_at: resetAt('5h') },
      ],
    });
    expect(usage.limits[0].reset_at).toMatch(/^\d{4}-\d\d-\d\dT00:00:00Z$/);
  });

  it('shows an empty list for a key without limits, and zero usage for a new key', async () => {
    const key = await gw.createKey();
    expect(await usageOf(gw, key.secret)).toMatchObject({
      request_count: 0,
      input_tokens: 0,
      output_tokens: 0,
      cached_input_tokens: 0,
      total_tokens: 0,
      limits: [],
    });
  });
});

describe('what does not count', () => {
  it('refused requests (401, 403, 429), count_tokens and /v1/usage itself', async () => {
    const key = await gw.createKey({
      allowed_models: ['gpt-5', 'claude-sonnet-4-5'],
      limits: [{ limit_type: 'requests', limit_window: 'daily', max_value: 2 }],
    });
    const counted = async () => (await gw.store.getUsage(key.id, Date.now())).allTime.requests;

    // 403: a model the key may not use
    expect((await responses(key.secret, { model: 'gpt-4o', input: 'hi' })).status).toBe(403);
    // count_tokens, several times
    for (let i = 0; i < 3; i++) {
      const res = await call(gw.url, '/v1/messages/count_tokens', {
        headers: { 'x-api-key': key.secret },
        body: { model: 'claude-sonnet-4-5', messages: [{ role: 'user', content: 'count me' }] },
      });
      expect(res.status).toBe(200);
    }
    for (let i = 0; i < 3; i++) await usageOf(gw, key.secret);
    expect(await counted()).toBe(0);

    // the limit still has its full room: exactly 2 requests get through
    expect((await responses(key.secret)).status).toBe(200);
    expect((await responses(key.secret)).status).toBe(200);
    // 429s
    for (let i = 0; i < 3; i++) expect((await responses(key.secret)).status).toBe(429);
    expect(await counted()).toBe(2);

    // 401: the key disabled
    await gw.store.putKey({ ...(await gw.store.getKeyById(key.id))!, disabled: true, limits: [] });
    await expect.poll(async () => (await responses(key.secret)).status, { interval: 100 }).toBe(401);
    expect((await messages(key.secret)).status).toBe(401);
    expect(await counted()).toBe(2);
    expect((await usageOf(gw, (await gw.createKey()).secret)).request_count).toBe(0);
  });

  it('a request refunded after the upstream was unreachable (502)', async () => {
    const baseUrl = `http://127.0.0.1:${await closedPort()}`;
    const dead = await startTestGateway({
      mock: gw.mock,
      config: () => ({
        providers: {
          openai: { baseUrl, accounts: [{ id: 'oa-1', apiKey: OPENAI_SECRET }] },
          anthropic: { baseUrl, accounts: [{ id: 'an-1', apiKey: ANTHROPIC_SECRET }] },
        },
      }),
    });
    try {
      const key = await dead.createKey({ limits: [{ limit_type: 'requests', limit_window: 'daily', max_value: 1 }] });
      for (let i = 0; i < 3; i++) {
        const res = await call(dead.url, i % 2 ? '/v1/messages' : '/v1/responses', {
          headers: { 'x-api-key': key.secret },
          body: i % 2 ? ANTHROPIC_BODY : OPENAI_BODY,
        });
        // not 429: every failed attempt gave its admission back
        expect(res.status, res.text).toBe(502);
      }
      const usage = await usageOf(dead, key.secret);
      expect(usage.request_count).toBe(0);
      expect(usage.limits[0]).toMatchObject({ current_value: 0, remaining_value: 1 });
    } finally {
      await dead.close();
    }
  });
});
