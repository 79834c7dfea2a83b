import type { IncomingHttpHeaders } from 'node:http';
import type { QuotaSnapshot, QuotaWindow } from '../../store/types.js';

const WINDOWS = ['primary', 'secondary'] as const;
/** A full window reported without a reset time is tried again after this long. */
const UNKNOWN_RESET_MS = 5 * 60_000;

const number = (value: string | string[] | undefined): number | null => {
  const text = Array.isArray(value) ? value[0] : value;
  if (text === undefined || text.trim() === '') return null;
  const n = Number(text);
  return Number.isFinite(n) ? n : null;
};

/**
 * The rate-limit windows the ChatGPT backend reports on every Codex response
 * (`x-codex-{primary,secondary}-used-percent`, `-window-minutes`, `-reset-after-seconds`, or
 * `-reset-at` in Unix seconds); null when the answer carries none.
 */
export function quotaFromHeaders(headers: IncomingHttpHeaders, now = Date.now()): QuotaSnapshot | null {
  const snapshot: QuotaSnapshot = { observedAt: now };
  for (const name of WINDOWS) {
    const usedPercent = number(headers[`x-codex-${name}-used-percent`]);
    if (usedPercent === null) continue;
    const resetAfter = number(headers[`x-codex-${name}-reset-after-seconds`]);
    const resetAt = number(headers[`x-codex-${name}-reset-at`]);
    snapshot[name] = {
      usedPercent,
      windowMinutes: number(headers[`x-codex-${name}-window-minutes`]),
      resetsAt: resetAfter !== null ? now + resetAfter * 1000 : resetAt !== null ? resetAt * 1000 : null,
    };
  }
  return snapshot.primary || snapshot.secondary ? snapshot : null;
}

/** A window that has reset since it was reported is empty again. */
const usedNow = (window: QuotaWindow, now: number) => (window.resetsAt !== null && window.resetsAt <= now ? 0 : window.usedPercent);

/** Percent left in the tightest window; 100 when nothing is known. */
export function headroom(quota: QuotaSnapshot | undefined, now: number): number {
  if (!quota) return 100;
  return Math.min(100, ...WINDOWS.map((name) => quota[name]).filter((w) => w !== undefined).map((w) => 100 - usedNow(w, now)));
}

/**
 * When an account at 100 % of a window may serve again: the latest reset among its full windows
 * (a full window without a reset time: UNKNOWN_RESET_MS after the report); null when it has room.
 */
export function exhaustedUntil(quota: QuotaSnapshot | undefined, now: number): number | null {
  if (!quota) return null;
  const full = WINDOWS.map((name) => quota[name]).filter((w): w is QuotaWindow => w !== undefined && usedNow(w, now) >= 100);
  if (full.length === 0) return null;
  const until = Math.max(...full.map((w) => w.resetsAt ?? quota.observedAt + UNKNOWN_RESET_MS));
  return until > now ? until : null;
}
