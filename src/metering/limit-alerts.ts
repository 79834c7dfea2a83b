import { createHmac } from 'node:crypto';
import { setTimeout as pause } from 'node:timers/promises';
import { request } from 'undici';
import type { KeyRecord, Store } from '../store/types.js';
import { counterFor } from '../usage/counters.js';
import { windowBounds } from '../usage/windows.js';

/** The crossings that are announced, as a share of a limit's max. */
const THRESHOLDS = [0.8, 1] as const;
const ATTEMPTS = 4;
const FIRST_RETRY_MS = 500;
export const SIGNATURE_HEADER = 'x-tollgate-signature';

export interface WebhookTarget {
  /** where crossings go unless the key names its own `webhook_url` */
  url?: string;
  /** HMAC-SHA256 key of the body's signature */
  secret: string;
}

/**
 * Webhook POSTs when a key's usage crosses 80 % and 100 % of one of its limits: one per crossing
 * per window, cluster-wide (the first replica to see it claims it in the store), signed
 * (`x-tollgate-signature: sha256=<hex HMAC of the body>`) and retried with backoff.
 */
export class LimitAlerts {
  constructor(
    private readonly store: Store,
    private readonly target: WebhookTarget,
    private readonly onFailed: (err: unknown) => void,
  ) {}

  /** Looks at the key's counters (after its usage moved) and announces each new crossing. */
  async check(key: KeyRecord, now = Date.now()): Promise<void> {
    const url = key.webhook_url ?? this.target.url;
    if (!url || key.limits.length === 0) return;
    const usage = await this.store.getUsage(key.id, now);
    for (const limit of key.limits) {
      const current = counterFor(usage.windows[limit.limit_window], limit.limit_type);
      const window = windowBounds(limit.limit_window, now);
      for (const threshold of THRESHOLDS) {
        if (current < threshold * limit.max_value) continue;
        const crossing = `alert:${key.id}:${limit.limit_type}:${limit.limit_window}:${window.start}:${threshold}`;
        // remembered until the window ends: the next window announces afresh
        if (!(await this.store.useNonce(crossing, window.end - now + 60_000))) continue;
        const body = JSON.stringify({
          type: 'limit.crossed',
          key: { id: key.id, name: key.name },
          limit,
          threshold,
          current_value: current,
          reset_at: new Date(window.end).toISOString(),
          at: new Date(now).toISOString(),
        });
        void this.deliver(url, body).catch(this.onFailed);
      }
    }
  }

  private async deliver(url: string, body: string): Promise<void> {
    const signature = `sha256=${createHmac('sha256', this.target.secret).update(body).digest('hex')}`;
    let lastError: unknown;
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      if (attempt > 0) await pause(FIRST_RETRY_MS * 2 ** (attempt - 1));
      try {
        const res = await request(url, { method: 'POST', headers: { 'content-type': 'application/json', [SIGNATURE_HEADER]: signature }, body });
        await res.body.dump();
        if (res.statusCode < 300) return;
        lastError = new Error(`webhook answered ${res.statusCode}`);
      } catch (err) {
        lastError = err;
      }
    }
    throw lastError;
  }
}
