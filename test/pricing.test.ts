import { describe, expect, it } from 'vitest';
import { DEFAULT_PRICES, Pricing, costOf } from '../src/usage/pricing.js';

const usage = (input: number, cached: number, output: number) => ({ input_tokens: input, cached_input_tokens: cached, output_tokens: output, total_tokens: input + output });

describe('model prices', () => {
  it('ships prices for current OpenAI and Anthropic models, dated names included', () => {
    const pricing = new Pricing();
    expect(pricing.priceOf('gpt-5')).toEqual({ input: 1.25, cached_input: 0.125, output: 10 });
    expect(pricing.priceOf('gpt-5-mini-2025-08-07')).toEqual({ input: 0.25, cached_input: 0.025, output: 2 });
    expect(pricing.priceOf('gpt-5.1-codex')?.input).toBe(1.25);
    expect(pricing.priceOf('claude-sonnet-4-5-20250929')).toEqual({ input: 3, cached_input: 0.3, output: 15 });
    expect(pricing.priceOf('claude-opus-4-5-20251101')?.output).toBe(25);
    expect(pricing.priceOf('claude-opus-4-1-20250805')?.output).toBe(75);
    expect(pricing.priceOf('claude-haiku-4-5')?.input).toBe(1);
    expect(pricing.priceOf('some-local-model')).toBeUndefined();
  });

  it('an exact name beats any glob; the longest glob beats shorter ones whatever the order', () => {
    const pricing = new Pricing({ 'team-*': { input: 1, output: 1 }, 'team-big-*': { input: 9, output: 9 }, 'team-big-x': { input: 5, output: 5 } }, {});
    expect(pricing.priceOf('team-small')?.input).toBe(1);
    expect(pricing.priceOf('team-big-y')?.input).toBe(9);
    expect(pricing.priceOf('team-big-x')?.input).toBe(5);
    // a glob matches the whole name, and its other characters literally
    expect(pricing.priceOf('my-team-small')).toBeUndefined();
    expect(new Pricing({ 'gpt-4.1*': { input: 2, output: 8 } }, {}).priceOf('gpt-4x1')).toBeUndefined();
  });

  it("the config's entries come before the shipped ones, even a shipped name more specific", () => {
    const pricing = new Pricing({ 'gpt-5*': { input: 7, output: 7 } });
    expect(pricing.priceOf('gpt-5-mini')?.input).toBe(7);
    expect(pricing.priceOf('claude-sonnet-4-5')).toEqual(DEFAULT_PRICES['claude-sonnet-4*']);
  });

  it("the config's entries override the shipped ones, and add to them", () => {
    const pricing = new Pricing({ 'gpt-5': { input: 1, output: 2 }, 'mock-*': { input: 0.5, output: 0.5 } });
    expect(pricing.priceOf('gpt-5')).toEqual({ input: 1, output: 2 });
    expect(pricing.priceOf('gpt-5-mini')).toEqual(DEFAULT_PRICES['gpt-5-mini*']);
    expect(pricing.priceOf('mock-model')?.input).toBe(0.5);
  });
});

describe('cost of a call', () => {
  it('prices uncached input, cached input and output apart, in USD', () => {
    // 1 M tokens of each kind at 1.25 / 0.125 / 10
    expect(costOf(usage(2_000_000, 1_000_000, 1_000_000), { input: 1.25, cached_input: 0.125, output: 10 })).toBeCloseTo(11.375, 10);
    expect(costOf(usage(1_000, 0, 500), { input: 3, output: 15 })).toBeCloseTo(0.0105, 10);
  });

  it('cached input without a price of its own costs the input price; nothing costs nothing', () => {
    expect(costOf(usage(1_000_000, 400_000, 0), { input: 2, output: 8 })).toBeCloseTo(2, 10);
    expect(costOf(usage(0, 0, 0), { input: 2, output: 8 })).toBe(0);
  });
});
