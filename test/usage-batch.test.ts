import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MemoryStore } from '../src/store/memory.js';
import type { UsageEntry } from '../src/store/types.js';
import { batchTotals } from '../src/store/usage-batch.js';
import { LIMIT_WINDOWS, windowBounds } from '../src/usage/windows.js';

const HOUR = 3_600_000;
/** two hours before Monday 2024-07-01 00:00 UTC, where a 5h, a day, a week and a month end at once */
const start = Date.UTC(2024, 6, 1) - 2 * HOUR;
/** admissions made before the batch, some of which it takes back */
const ADMISSIONS = 5;

const tag = fc.constantFrom(
  { model: 'gpt-5', account: 'oa-1' },
  { model: 'gpt-5', account: 'oa-2' },
  { model: 'gpt-5', account: 'oa-1', error: 'server_error' as const },
  { model: 'claude', account: '', error: 'rate_limited' as const },
);
const deltas = fc.record(
  { requests: fc.constantFrom(1, -1), input_tokens: fc.nat(1000), output_tokens: fc.nat(1000), cost_microusd: fc.nat(5000) },
  { requiredKeys: [] },
);
const at = fc.integer({ min: start, max: start + 4 * HOUR - 1 });
const entry: fc.Arbitrary<UsageEntry> = fc.oneof(
  { weight: 9, arbitrary: fc.record({ at, deltas, history: fc.option(tag, { nil: undefined }) }, { requiredKeys: ['at', 'deltas'] }) },
  // a taken-back admission: one of those made, or one never made (settled, nothing to take back)
  { weight: 1, arbitrary: fc.record({ at, lostAdmission: fc.integer({ min: 1, max: ADMISSIONS + 2 }) }) },
);

describe('a usage batch summed per hour and tag (batchTotals)', () => {
  it('adds what its entries add one by one, in every window, all time and the history', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(entry, { minLength: 1, maxLength: 40 }), async (entries) => {
        const whole = new MemoryStore({ historyRetentionMs: Infinity });
        const single = new MemoryStore({ historyRetentionMs: Infinity });
        for (const store of [whole, single]) {
          for (let number = 1; number <= ADMISSIONS; number++) await store.admitRequest('k', [], start, { writer: 'w', number });
        }
        await whole.recordUsage('k', { writer: 'w', seq: 1, entries });
        for (const [i, one] of entries.entries()) await single.recordUsage('k', { writer: 'w', seq: i + 1, entries: [one] });
        for (const { at } of entries) expect(await whole.getUsage('k', at)).toEqual(await single.getUsage('k', at));
        const history = async (store: MemoryStore) =>
          (await store.getUsageHistory('k', start, start + 4 * HOUR)).sort((a, b) => a.hour - b.hour || `${a.model}/${a.account}`.localeCompare(`${b.model}/${b.account}`));
        expect(await history(whole)).toEqual(await history(single));
      }),
      { numRuns: 200 },
    );
  });

  it('one total per hour touched, and taken-back admissions kept apart one by one', () => {
    const { hours, lost } = batchTotals([
      { at: start + 1, deltas: { input_tokens: 2 }, history: { model: 'm', account: 'a' } },
      { at: start + 2, lostAdmission: 7 },
      { at: start + HOUR, deltas: { input_tokens: 5 } },
      { at: start + 3, deltas: { input_tokens: 3 }, history: { model: 'm', account: 'a' } },
      { at: start + 4, lostAdmission: 8 },
    ]);
    expect(lost.map((entry) => entry.lostAdmission)).toEqual([7, 8]);
    expect(hours.map((hour) => [hour.at, hour.deltas])).toEqual([
      [start + 1, { input_tokens: 5 }],
      [start + HOUR, { input_tokens: 5 }],
    ]);
    expect(Object.fromEntries(hours[0].history)).toEqual({ '["m","a","requests"]': 2, '["m","a","input_tokens"]': 5 });
    expect(hours[1].history.size).toBe(0);
    expect(LIMIT_WINDOWS.map((window) => windowBounds(window, start).end)).toEqual(LIMIT_WINDOWS.map(() => start + 2 * HOUR));
  });
});
