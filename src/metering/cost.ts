import { Pricing, costOf, type PriceTable } from '../usage/pricing.js';
import type { TokenUsage } from '../usage/tokens.js';

export interface CostEvents {
  /** tokens of a model without a price, counted as costing 0 */
  onUnpriced(model: string, tokens: number): void;
  /** the first call of such a model on this replica */
  onFirstUnpriced(model: string): void;
}

/** What calls cost, by the price of their model; a model without a price costs 0 and is reported. */
export class CostMeter {
  private readonly pricing: Pricing;
  private readonly unpriced = new Set<string>();

  constructor(overrides: PriceTable, private readonly events: CostEvents) {
    this.pricing = new Pricing(overrides);
  }

  /** USD */
  of(usage: TokenUsage, model = 'unknown'): number {
    const price = this.pricing.priceOf(model);
    if (price) return costOf(usage, price);
    this.events.onUnpriced(model, usage.total_tokens);
    if (!this.unpriced.has(model)) {
      this.unpriced.add(model);
      this.events.onFirstUnpriced(model);
    }
    return 0;
  }
}
