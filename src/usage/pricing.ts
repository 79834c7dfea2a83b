import { z } from 'zod';
import defaults from './pricing.json' with { type: 'json' };
import type { TokenUsage } from './tokens.js';

/** USD per 1 M tokens. Cached input falls back to the input price when a model has none. */
export const modelPriceSchema = z
  .object({
    input: z.number().min(0),
    cached_input: z.number().min(0).optional(),
    output: z.number().min(0),
  })
  .strict();
export type ModelPrice = z.infer<typeof modelPriceSchema>;

/** Model name or glob (`*` = any run of characters) → price. */
export const priceTableSchema = z.record(z.string().min(1), modelPriceSchema);
export type PriceTable = z.infer<typeof priceTableSchema>;

/** The table shipped with the package (src/usage/pricing.json): current OpenAI and Anthropic list prices. */
export const DEFAULT_PRICES: PriceTable = priceTableSchema.parse(defaults.models);

const globRegExp = (glob: string) => new RegExp(`^${glob.split('*').map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`);

/** One price table: an exact name wins, else the longest matching glob (the most specific). */
class PriceLookup {
  private readonly exact = new Map<string, ModelPrice>();
  private readonly globs: { pattern: RegExp; length: number; price: ModelPrice }[] = [];

  constructor(table: PriceTable) {
    for (const [name, price] of Object.entries(table)) {
      if (name.includes('*')) this.globs.push({ pattern: globRegExp(name), length: name.length, price });
      else this.exact.set(name, price);
    }
    this.globs.sort((a, b) => b.length - a.length);
  }

  priceOf(model: string): ModelPrice | undefined {
    return this.exact.get(model) ?? this.globs.find((glob) => glob.pattern.test(model))?.price;
  }
}

/**
 * Prices by model name: the config's table first, then the shipped one, each by exact name or
 * else the longest matching glob — so a config `gpt-5*` covers `gpt-5-mini` too, and in one table
 * `gpt-5-mini*` beats `gpt-5*` in any order.
 */
export class Pricing {
  private readonly tables: PriceLookup[];

  constructor(overrides: PriceTable = {}, shipped: PriceTable = DEFAULT_PRICES) {
    this.tables = [new PriceLookup(overrides), new PriceLookup(shipped)];
  }

  priceOf(model: string): ModelPrice | undefined {
    for (const table of this.tables) {
      const price = table.priceOf(model);
      if (price) return price;
    }
    return undefined;
  }
}

/**
 * What a call cost in USD: uncached input, cached input and output at their prices. Anthropic
 * cache writes are counted as input (the usage record does not keep them apart).
 */
export function costOf(usage: TokenUsage, price: ModelPrice): number {
  const cached = Math.min(usage.cached_input_tokens, usage.input_tokens);
  const microDollars = (usage.input_tokens - cached) * price.input + cached * (price.cached_input ?? price.input) + usage.output_tokens * price.output;
  return microDollars / 1_000_000;
}
