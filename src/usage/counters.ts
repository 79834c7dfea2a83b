import type { TokenUsage } from './tokens.js';
import type { LimitWindow } from './windows.js';

/** The limits model: what a key's limits count, and the counters they are checked against. */
export const LIMIT_TYPES = ['requests', 'input_tokens', 'output_tokens', 'total_tokens', 'cost_usd'] as const;
export type LimitType = (typeof LIMIT_TYPES)[number];

export interface Limit {
  limit_type: LimitType;
  limit_window: LimitWindow;
  max_value: number;
}

/** Counters of one key in one window bucket (or all time). */
export interface UsageCounters extends TokenUsage {
  requests: number;
  /** cost in millionths of a USD: counters are integers (Redis HINCRBY) */
  cost_microusd: number;
}

export const MICROUSD_PER_USD = 1_000_000;

export function emptyCounters(): UsageCounters {
  return { requests: 0, input_tokens: 0, output_tokens: 0, cached_input_tokens: 0, total_tokens: 0, cost_microusd: 0 };
}

/** The counter a limit type is checked against, in the limit's unit (USD for `cost_usd`). */
export function counterFor(counters: UsageCounters, type: LimitType): number {
  if (type === 'cost_usd') return counters.cost_microusd / MICROUSD_PER_USD;
  return type === 'requests' ? counters.requests : counters[type];
}

/** Request limits deny when one more would exceed max; token limits once the total reached max. */
export function limitDenies(limit: Limit, current: number): boolean {
  return limit.limit_type === 'requests' ? current + 1 > limit.max_value : current >= limit.max_value;
}

export function addCounters(counters: UsageCounters, deltas: Partial<UsageCounters>): void {
  for (const [field, delta] of Object.entries(deltas) as [keyof UsageCounters, number][]) counters[field] += delta;
}

/**
 * The counter deltas of one completed request's usage. Counters are integers (Redis HINCRBY);
 * upstream token counts are whole numbers anyway.
 */
export function usageDeltas(usage: TokenUsage, costUsd = 0): Partial<UsageCounters> {
  return {
    input_tokens: Math.round(usage.input_tokens),
    output_tokens: Math.round(usage.output_tokens),
    cached_input_tokens: Math.round(usage.cached_input_tokens),
    total_tokens: Math.round(usage.total_tokens),
    ...(costUsd > 0 && { cost_microusd: Math.round(costUsd * MICROUSD_PER_USD) }),
  };
}
