import { emptyCounters, type UsageCounters } from '../usage/counters.js';
import { ERROR_CLASSES, type ErrorClass, type HistoryRow, type HistoryTag } from './types.js';

export const HOUR_MS = 3_600_000;

/** The start of the UTC hour containing `at`. */
export const hourStart = (at: number): number => Math.floor(at / HOUR_MS) * HOUR_MS;

/**
 * One hour of a key's history is one hash (Redis) or map (memory) whose fields name
 * (model, account, counter): JSON, so no model or account name can break the encoding. The
 * counter is a `UsageCounters` field or `error:<class>`.
 */
const fieldOf = (model: string, account: string, counter: string): string => JSON.stringify([model, account, counter]);

/** The history increments of `requests` tagged entries with these summed deltas: requests, tokens, error class. */
export function historyIncrements(tag: HistoryTag, deltas: Partial<UsageCounters>, requests = 1): [field: string, delta: number][] {
  const increments: [string, number][] = [[fieldOf(tag.model, tag.account, 'requests'), requests]];
  for (const [counter, delta] of Object.entries(deltas)) {
    if (counter !== 'requests' && delta) increments.push([fieldOf(tag.model, tag.account, counter), delta]);
  }
  if (tag.error) increments.push([fieldOf(tag.model, tag.account, `error:${tag.error}`), requests]);
  return increments;
}

const noErrors = (): Record<ErrorClass, number> => Object.fromEntries(ERROR_CLASSES.map((c) => [c, 0])) as Record<ErrorClass, number>;

/** The rows of one hour's bucket, one per (model, account). */
export function historyRows(hour: number, fields: Iterable<[string, string | number]>): HistoryRow[] {
  const rows = new Map<string, HistoryRow>();
  for (const [field, value] of fields) {
    const [model, account, counter] = JSON.parse(field) as [string, string, string];
    const id = JSON.stringify([model, account]);
    let row = rows.get(id);
    if (!row) rows.set(id, (row = { hour, model, account, counters: emptyCounters(), errors: noErrors() }));
    if (counter.startsWith('error:')) {
      const errorClass = counter.slice('error:'.length) as ErrorClass;
      if (errorClass in row.errors) row.errors[errorClass] += Number(value);
    } else if (counter in row.counters) row.counters[counter as keyof UsageCounters] += Number(value);
  }
  return [...rows.values()];
}
