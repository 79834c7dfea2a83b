import type { FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { GatewayError } from '../errors.js';
import { MICROUSD_PER_USD, emptyCounters, type UsageCounters } from '../usage/counters.js';
import { HOUR_MS } from '../store/history.js';
import { ERROR_CLASSES, type ErrorClass, type HistoryRow, type Store } from '../store/types.js';

const DAY_MS = 24 * HOUR_MS;
/** A query spans at most this much: bounds the hours read per key (history is hourly). */
const MAX_RANGE_MS = 400 * DAY_MS;

const instant = z.union([z.iso.datetime({ offset: true }), z.string().regex(/^\d+$/, 'ms since epoch')]).transform((v) => (/^\d+$/.test(v) ? Number(v) : Date.parse(v)));

const querySchema = z
  .object({
    from: instant.optional(),
    to: instant.optional(),
    bucket: z.enum(['hour', 'day']).default('hour'),
    group_by: z.enum(['key', 'model', 'account']).default('key'),
  })
  .strict();

export interface HistoryQuery {
  from: number;
  to: number;
  bucket: 'hour' | 'day';
  groupBy: 'key' | 'model' | 'account';
}

/** `from`/`to` (ISO 8601 or ms since epoch; default the last 24 hours), `bucket`, `group_by`. */
export function parseHistoryQuery(request: FastifyRequest, now = Date.now()): HistoryQuery {
  const result = querySchema.safeParse(request.query ?? {});
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const param = issue.path.join('.');
    throw new GatewayError('invalid_request', `${param || 'query'}: ${issue.message}`, { param });
  }
  const to = result.data.to ?? now;
  const from = result.data.from ?? to - DAY_MS;
  if (!(from < to)) throw new GatewayError('invalid_request', 'from: must be before to', { param: 'from' });
  if (to - from > MAX_RANGE_MS) throw new GatewayError('invalid_request', `from: the range may span ${MAX_RANGE_MS / DAY_MS} days at most`, { param: 'from' });
  return { from, to, bucket: result.data.bucket, groupBy: result.data.group_by };
}

export interface HistoryPoint extends Omit<UsageCounters, 'cost_microusd'> {
  /** the bucket's cost at its models' prices when the calls were made */
  cost_usd: number;
  /** ISO 8601: the bucket's start (UTC hour or day) */
  start: string;
  /** the key id, model or account id the row is about ('' for requests no account served) */
  group: string;
  errors: Record<ErrorClass, number>;
}

/**
 * The history of `keyIds` in [from, to), summed per bucket and group, oldest first. Per account
 * figures are summed over keys here: the store keeps history in each key's own slot.
 */
export async function usageHistory(store: Store, keyIds: string[], query: HistoryQuery): Promise<HistoryPoint[]> {
  const size = query.bucket === 'day' ? DAY_MS : HOUR_MS;
  // summed in whole micro-dollars, as stored: no float noise
  const points = new Map<string, Omit<HistoryPoint, 'cost_usd'> & UsageCounters>();
  const perKey = await Promise.all(keyIds.map(async (keyId) => ({ keyId, rows: await store.getUsageHistory(keyId, query.from, query.to) })));
  const groupOf = (keyId: string, row: HistoryRow) => (query.groupBy === 'key' ? keyId : query.groupBy === 'model' ? row.model : row.account);
  for (const { keyId, rows } of perKey) {
    for (const row of rows) {
      const start = new Date(Math.floor(row.hour / size) * size).toISOString();
      const group = groupOf(keyId, row);
      const id = JSON.stringify([start, group]);
      let point = points.get(id);
      if (!point) points.set(id, (point = { start, group, ...emptyCounters(), errors: Object.fromEntries(ERROR_CLASSES.map((c) => [c, 0])) as Record<ErrorClass, number> }));
      for (const field of Object.keys(row.counters) as (keyof UsageCounters)[]) point[field] += row.counters[field];
      for (const errorClass of ERROR_CLASSES) point.errors[errorClass] += row.errors[errorClass];
    }
  }
  return [...points.values()]
    .sort((a, b) => a.start.localeCompare(b.start) || a.group.localeCompare(b.group))
    .map(({ cost_microusd, ...point }) => ({ ...point, cost_usd: cost_microusd / MICROUSD_PER_USD }));
}

const CSV_COLUMNS = ['start', 'group', 'requests', 'input_tokens', 'cached_input_tokens', 'output_tokens', 'total_tokens', 'cost_usd'] as const;

/** RFC 4180: quote a field that holds a comma, quote or line break. */
const csvField = (value: string | number): string => {
  const text = String(value);
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
};

function toCsv(points: HistoryPoint[]): string {
  const header = [...CSV_COLUMNS, ...ERROR_CLASSES.map((c) => `errors_${c}`)];
  const lines = points.map((p) => [...CSV_COLUMNS.map((c) => p[c]), ...ERROR_CLASSES.map((c) => p.errors[c])].map(csvField).join(','));
  return [header.join(','), ...lines].join('\r\n') + '\r\n';
}

/** JSON, or CSV when the client asks for `text/csv`. */
export function sendHistory(request: FastifyRequest, reply: FastifyReply, query: HistoryQuery, points: HistoryPoint[]) {
  if ((request.headers.accept ?? '').includes('text/csv')) return reply.type('text/csv; charset=utf-8').send(toCsv(points));
  return {
    from: new Date(query.from).toISOString(),
    to: new Date(query.to).toISOString(),
    bucket: query.bucket,
    group_by: query.groupBy,
    data: points,
  };
}
