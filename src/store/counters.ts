import type { TokenUsage } from '../usage/tokens.js';
import type { Limit, LimitType, UsageCounters } from './types.js';

export function emptyCounters(): UsageCounters {
  return { requests: 0, input_tokens: 0, output_tokens: 0, cached_input_tokens: 0, total_tokens: 0 };
}

export function counterFor(counters: UsageCounters, type: LimitType): number {
  return type === 'requests' ? counters.requests : counters[type];
}

/** Request limits deny when one more would exceed max; token limits once the total reached max. */
export function limitDenies(limit: Limit, current: number): boolean {
  return limit.limit_type === 'requests' ? current + 1 > limit.max_value : current >= limit.max_value;
}

export function addTokens(counters: UsageCounters, usage: TokenUsage): void {
  counters.input_tokens += usage.input_tokens;
  counters.output_tokens += usage.output_tokens;
  counters.cached_input_tokens += usage.cached_input_tokens;
  counters.total_tokens += usage.total_tokens;
}
