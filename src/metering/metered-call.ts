import type { ProviderName } from '../config/schema.js';
import { GatewayError } from '../errors.js';
import type { KeyRecord } from '../store/types.js';
import type { TokenUsage } from '../usage/tokens.js';
import type { UsageRecorder } from './recorder.js';

/** Which account of which provider served what is being recorded. */
export interface Served {
  provider: ProviderName;
  accountId: string;
  /** the model the call or turn named, when known where it was served; else the request body's (see `MeteredCallDeps.model`) */
  model?: string;
}

/** One counted request: taken back if it never reached an upstream, or its usage recorded. */
export interface Admitted {
  /** the request never reached an upstream: it does not count (written once, like usage) */
  refund(): void;
  record(usage: TokenUsage | null, served: Served): void;
}

export interface MeteredCallDeps {
  recorder: UsageRecorder;
  /** the caller's key as it is now (a WebSocket re-reads it per frame) */
  key(): KeyRecord;
  /** the model the request body names, if any: usage history is kept per model */
  model(): string | undefined;
  /** what else recording usage means to the creator: pool view, metrics, the access log */
  onRecorded(usage: TokenUsage, served: Served): void;
  /** the call's cost in USD, from the price of its model (0 when it has none) */
  costOf(usage: TokenUsage, model: string | undefined): number;
  /** runs the admission inside a span of the request's trace; absent when tracing is off */
  traceAdmission?: (admit: () => Promise<Admitted>) => Promise<Admitted>;
}

/**
 * The one admit → refund | record lifecycle of a metered model call, made once per request
 * after auth and used alike by HTTP, bridged, forwarded and WebSocket calls.
 */
export class MeteredCall {
  constructor(private readonly deps: MeteredCallDeps) {}

  /**
   * Checks the key's limits and counts the request, atomically in the store; throws the 429 a
   * client sees when a limit is reached. A key without limits is only counted.
   */
  admit(now = Date.now()): Promise<Admitted> {
    const { traceAdmission } = this.deps;
    return traceAdmission ? traceAdmission(() => this.check(now)) : this.check(now);
  }

  private async check(now: number): Promise<Admitted> {
    const key = this.deps.key();
    const admitted: Admitted = {
      refund: () => this.deps.recorder.refund(key.id, now),
      record: (usage, served) => this.record(usage, served),
    };
    // nothing to check: the request is counted in the key's next usage batch, not by a store call
    if (key.limits.length === 0) {
      this.deps.recorder.countRequest(key.id, now);
      return admitted;
    }
    const admission = await this.deps.recorder.admit(key.id, key.limits, now);
    if (!admission.admitted) {
      const { limit, current, resetAt } = admission.denial;
      throw new GatewayError(
        'rate_limit_exceeded',
        `This key reached its ${limit.limit_window} ${limit.limit_type} limit (${current} of ${limit.max_value}); it resets at ${new Date(resetAt).toISOString()}.`,
        { retryAfter: (resetAt - now) / 1000, resetsAt: resetAt },
      );
    }
    return admitted;
  }

  /**
   * Usage the upstream reported, counted against the caller's key and, in the same store write,
   * in its usage history by model and account.
   */
  record(usage: TokenUsage | null, served: Served): void {
    if (!usage) return;
    this.deps.onRecorded(usage, served);
    const model = served.model ?? this.deps.model();
    const costUsd = this.deps.costOf(usage, model);
    this.deps.recorder.record(this.deps.key().id, usage, costUsd, { model: model ?? 'unknown', account: served.accountId });
  }
}
