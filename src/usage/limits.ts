import { GatewayError } from '../errors.js';
import type { KeyRecord } from '../store/types.js';
import type { UsageRecorder } from './recorder.js';

/**
 * Checks the key's limits and counts the request, atomically in the store; throws the 429 a
 * client sees when a limit is reached. Returns the admission time, needed to refund.
 */
export async function admitRequest(recorder: UsageRecorder, key: KeyRecord, now = Date.now()): Promise<number> {
  const admission = await recorder.admit(key.id, key.limits, now);
  if (admission.admitted) return now;
  const { limit, current, resetAt } = admission.denial;
  throw new GatewayError(
    'rate_limit_exceeded',
    `This key reached its ${limit.limit_window} ${limit.limit_type} limit (${current} of ${limit.max_value}); it resets at ${new Date(resetAt).toISOString()}.`,
    { retryAfter: (resetAt - now) / 1000, resetsAt: resetAt },
  );
}

/**
 * Takes back a request admitted by `admitRequest` that never reached an upstream: written once
 * like usage, also when the store is unreachable right now.
 */
export function refundRequest(recorder: UsageRecorder, keyId: string, admittedAt: number): void {
  recorder.refund(keyId, admittedAt);
}
