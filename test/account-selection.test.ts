import { describe, expect, it } from 'vitest';
import type { AccountState } from '../src/store/types.js';
import { pickAccount, unavailability, type Account, type Candidate } from '../src/upstream/accounts.js';
import { exhaustedUntil, headroom, quotaFromHeaders } from '../src/upstream/chatgpt/quota.js';

const now = Date.UTC(2026, 10, 30, 12);

const account = (id: string): Account => ({ id, provider: 'chatgpt', baseUrl: 'http://x', secret: '', oauth: true, headers: {} });
const window = (usedPercent: number, resetsAt: number | null = now + 3_600_000) => ({ usedPercent, windowMinutes: 300, resetsAt });
const candidate = (id: string, state: AccountState, inFlight = 0): Candidate => ({
  account: account(id),
  state,
  inFlight,
  recentTokens: 0,
  headroom: headroom(state.quota, now),
});

describe('quota_headroom selection (pure)', () => {
  it('prefers the most room in the tightest window of each account', () => {
    const candidates = [
      // 90 % left in primary, but only 20 % in secondary: 20 is what counts
      candidate('a', { quota: { primary: window(10), secondary: window(80), observedAt: now } }),
      candidate('b', { quota: { primary: window(60), observedAt: now } }),
      candidate('c', { quota: { primary: window(30), secondary: window(35), observedAt: now } }),
    ];
    expect(pickAccount('quota_headroom', candidates, 0)?.account.id).toBe('c');
  });

  it('treats an unknown quota and a window past its reset as full room; ties go to the least busy', () => {
    const reset = candidate('reset', { quota: { primary: window(99, now - 1), observedAt: now - 7_200_000 } }, 2);
    const unknown = candidate('unknown', {}, 1);
    expect(reset.headroom).toBe(100);
    expect(pickAccount('quota_headroom', [reset, unknown, candidate('busy', { quota: { primary: window(1), observedAt: now } })], 0)?.account.id).toBe('unknown');
  });

  it('an account at 100 % is unavailable until its window resets; one with room is not', () => {
    const full: AccountState = { quota: { primary: window(40), secondary: window(100, now + 60_000), observedAt: now } };
    expect(unavailability(full, now)).toEqual({ reason: 'quota_exhausted', until: now + 60_000 });
    expect(unavailability(full, now + 60_000)).toBeNull();
    expect(unavailability({ quota: { primary: window(99.5), observedAt: now } }, now)).toBeNull();
    // full without a reset time: tried again five minutes after the report
    expect(exhaustedUntil({ primary: window(100, null), observedAt: now }, now)).toBe(now + 300_000);
    expect(unavailability({ reauthRequired: 'refresh_token_reused', quota: full.quota }, now)).toEqual({ reason: 'reauth_required', detail: 'refresh_token_reused' });
  });

  it('reads the Codex quota headers, both reset forms, and nothing from an answer without them', () => {
    expect(
      quotaFromHeaders(
        {
          'x-codex-primary-used-percent': '42.5',
          'x-codex-primary-window-minutes': '300',
          'x-codex-primary-reset-after-seconds': '120',
          'x-codex-secondary-used-percent': '7',
          'x-codex-secondary-reset-at': String(now / 1000 + 86_400),
        },
        now,
      ),
    ).toEqual({ primary: { usedPercent: 42.5, windowMinutes: 300, resetsAt: now + 120_000 }, secondary: { usedPercent: 7, windowMinutes: null, resetsAt: now + 86_400_000 }, observedAt: now });
    expect(quotaFromHeaders({ 'x-codex-primary-used-percent': 'lots' }, now)).toBeNull();
    expect(quotaFromHeaders({}, now)).toBeNull();
  });
});
