import type { UsageCounters } from '../usage/counters.js';
import { historyIncrements, hourStart } from './history.js';
import type { HistoryTag, UsageEntry } from './types.js';

type LostAdmission = Extract<UsageEntry, { lostAdmission: number }>;

/**
 * What the entries of one UTC hour of a batch add. Every bucket an entry lands in is chosen by its
 * hour: the limit windows are whole hours aligned to UTC, and history is kept per hour.
 */
export interface HourTotals {
  /** an instant of the hour (its first entry's): picks the window buckets and the history hash */
  at: number;
  /** the sum of the hour's counter deltas (window buckets and all time) */
  deltas: Partial<UsageCounters>;
  /** the hour's history increments, summed per field */
  history: Map<string, number>;
}

export interface BatchTotals {
  hours: HourTotals[];
  /** admissions to take back, one by one: each is settled on its own */
  lost: LostAdmission[];
}

interface TagTotals {
  tag: HistoryTag;
  deltas: Partial<UsageCounters>;
  requests: number;
}

function addDeltas(sum: Partial<UsageCounters>, deltas: Partial<UsageCounters>): void {
  for (const field in deltas) {
    const counter = field as keyof UsageCounters;
    sum[counter] = (sum[counter] ?? 0) + deltas[counter]!;
  }
}

/**
 * A batch's entries summed per hour, and per history tag within the hour, before a store applies
 * them: a busy key's batch holds hundreds of entries of the same hour, and a store then touches
 * each bucket and history field once instead of once per entry. The totals are what applying the
 * entries one by one adds. Taken-back admissions (rare: only after a store failure) stay one by one.
 */
export function batchTotals(entries: readonly UsageEntry[]): BatchTotals {
  const hours = new Map<number, { at: number; deltas: Partial<UsageCounters>; tags: Map<string, TagTotals> }>();
  const lost: LostAdmission[] = [];
  for (const entry of entries) {
    if ('lostAdmission' in entry) {
      lost.push(entry);
      continue;
    }
    const hour = hourStart(entry.at);
    let totals = hours.get(hour);
    if (!totals) hours.set(hour, (totals = { at: entry.at, deltas: {}, tags: new Map() }));
    addDeltas(totals.deltas, entry.deltas);
    const { history } = entry;
    if (!history) continue;
    const id = `${history.model}\u0000${history.account}\u0000${history.error ?? ''}`;
    let tagged = totals.tags.get(id);
    if (!tagged) totals.tags.set(id, (tagged = { tag: history, deltas: {}, requests: 0 }));
    tagged.requests += 1;
    addDeltas(tagged.deltas, entry.deltas);
  }
  return {
    lost,
    hours: [...hours.values()].map(({ at, deltas, tags }) => {
      const history = new Map<string, number>();
      for (const { tag, deltas: tagDeltas, requests } of tags.values()) {
        for (const [field, delta] of historyIncrements(tag, tagDeltas, requests)) history.set(field, (history.get(field) ?? 0) + delta);
      }
      return { at, deltas, history };
    }),
  };
}
