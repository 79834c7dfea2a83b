import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ServedCall } from '../src/mock/upstream.js';
import { startTestGateway, type TestGateway } from './support/gateway.js';
import { metricValue, usageOf } from './support/http.js';

// prices high enough that one mock call costs cents: USD per 1M tokens
const PRICE = { input: 1_000, cached_input: 100, output: 2_000 };
const costOf = ({ usage }: ServedCall) =>
  ((usage.input_tokens - usage.cached_input_tokens) * PRICE.input + usage.cached_input_tokens * PRICE.cached_input + usage.output_tokens * PRICE.output) / 1_000_000;

let gw: TestGateway;
beforeAll(async () => {
  gw = await startTestGateway({ config: () => ({ pricing: { 'gpt-5*': PRICE } }) });
});
afterAll(() => gw.close());

const chat = (secret: string, model: string) =>
  fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${secret}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hi' }] }),
  });

describe('cost budgets', () => {
  it('counts each call at its model price, reports cost_usd, and a cost_usd limit blocks once reached', async () => {
    const key = await gw.createKey({ limits: [{ limit_type: 'cost_usd', limit_window: 'daily', max_value: 0.1 }] });
    gw.mock.reset();
    let status = 200;
    while (status === 200) {
      status = (await chat(key.secret, 'gpt-5-mini')).status;
      // usage (and its cost) is written after the call: the next admission sees it once it landed
      const recorded = gw.mock.served.map(costOf).reduce((a, b) => a + b, 0);
      if (status === 200) await expect.poll(async () => (await usageOf(gw, key.secret)).cost_usd).toBeCloseTo(recorded, 5);
    }
    expect(status).toBe(429);
    // every call that went through was priced; the budget stopped them once it was spent
    const spent = gw.mock.served.map(costOf).reduce((a, b) => a + b, 0);
    expect(gw.mock.served.length).toBeGreaterThan(1);
    expect(spent).toBeGreaterThanOrEqual(0.1);
    expect(spent - costOf(gw.mock.served.at(-1)!)).toBeLessThan(0.1);
    const usage = await usageOf(gw, key.secret);
    expect(usage.cost_usd).toBeCloseTo(spent, 5);
    expect(usage.limits[0]).toMatchObject({ limit_type: 'cost_usd', max_value: 0.1, remaining_value: 0 });
    expect(usage.limits[0].current_value).toBeCloseTo(spent, 5);
  });

  it('a model without a price costs 0, is counted in tollgate_unpriced_tokens_total and blocks nothing', async () => {
    const key = await gw.createKey({ limits: [{ limit_type: 'cost_usd', limit_window: 'daily', max_value: 0.000001 }] });
    gw.mock.reset();
    for (let i = 0; i < 3; i++) expect((await chat(key.secret, 'local-llama')).status).toBe(200);
    const tokens = gw.mock.served.reduce((sum, call) => sum + call.usage.total_tokens, 0);
    await expect.poll(() => metricValue(gw, 'tollgate_unpriced_tokens_total', { model: 'local-llama' })).toBe(tokens);
    await expect.poll(async () => (await usageOf(gw, key.secret)).request_count).toBe(3);
    expect((await usageOf(gw, key.secret)).cost_usd).toBe(0);
  });
});
