import type { FastifyInstance } from 'fastify';
import { MICROUSD_PER_USD, counterFor } from '../usage/counters.js';
import type { KeyRecord, Store } from '../store/types.js';
import { windowBounds } from '../usage/windows.js';
import { parseHistoryQuery, sendHistory, usageHistory } from './history.js';

/** A key's totals and, for each of its limits, where it stands: `GET /v1/usage`'s body. */
export async function usageReport(store: Store, key: KeyRecord, now = Date.now()) {
  const usage = await store.getUsage(key.id, now);
  return {
    key: { id: key.id, name: key.name, expires_at: key.expires_at, allowed_models: key.allowed_models },
    request_count: usage.allTime.requests,
    input_tokens: usage.allTime.input_tokens,
    output_tokens: usage.allTime.output_tokens,
    cached_input_tokens: usage.allTime.cached_input_tokens,
    total_tokens: usage.allTime.total_tokens,
    cost_usd: counterFor(usage.allTime, 'cost_usd'),
    limits: key.limits.map((limit) => {
      const current = counterFor(usage.windows[limit.limit_window], limit.limit_type);
      return {
        ...limit,
        current_value: current,
        // USD values are whole micro-dollars: no float noise in what is left
        remaining_value: Math.max(0, Math.round((limit.max_value - current) * MICROUSD_PER_USD) / MICROUSD_PER_USD),
        reset_at: new Date(windowBounds(limit.limit_window, now).end).toISOString().replace('.000Z', 'Z'),
      };
    }),
  };
}

/** `GET /v1/usage` and `GET /v1/usage/history`: the calling key's own usage. */
export function registerUsageRoute(app: FastifyInstance, store: Store): void {
  app.get('/v1/usage', async (request) => usageReport(store, request.principal!.key));

  /** the same query as `/admin/usage`, for the caller's key only */
  app.get('/v1/usage/history', async (request, reply) => {
    const query = parseHistoryQuery(request);
    return sendHistory(request, reply, query, await usageHistory(store, [request.principal!.key.id], query));
  });
}
