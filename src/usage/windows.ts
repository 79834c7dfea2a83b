/** Limit windows are fixed and aligned to UTC, so every replica computes the same buckets. */
export const LIMIT_WINDOWS = ['5h', 'daily', 'weekly', 'monthly'] as const;
export type LimitWindow = (typeof LIMIT_WINDOWS)[number];

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

export interface WindowBounds {
  start: number;
  end: number;
}

/** The bucket of `window` that contains `now` (ms since epoch). */
export function windowBounds(window: LimitWindow, now: number): WindowBounds {
  switch (window) {
    case '5h': {
      const start = Math.floor(now / (5 * HOUR)) * 5 * HOUR;
      return { start, end: start + 5 * HOUR };
    }
    case 'daily': {
      const start = Math.floor(now / DAY) * DAY;
      return { start, end: start + DAY };
    }
    case 'weekly': {
      const dayStart = Math.floor(now / DAY) * DAY;
      const weekday = (new Date(dayStart).getUTCDay() + 6) % 7; // Monday = 0
      const start = dayStart - weekday * DAY;
      return { start, end: start + 7 * DAY };
    }
    case 'monthly': {
      const d = new Date(now);
      const start = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
      return { start, end: Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1) };
    }
  }
}
