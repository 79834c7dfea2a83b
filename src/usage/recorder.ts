import type { Store } from '../store/types.js';
import type { TokenUsage } from './tokens.js';

export const USAGE_BUFFER_LIMIT = 10_000;
const RETRY_INTERVAL_MS = 1_000;

interface PendingUsage {
  keyId: string;
  usage: TokenUsage;
  at: number;
}

/**
 * Writes usage of completed requests to the store. When the store is unreachable the usage is
 * kept in a bounded buffer and written when it answers again; past `USAGE_BUFFER_LIMIT`
 * entries the oldest are dropped (reported through `onDrop`) so memory stays bounded.
 */
export class UsageRecorder {
  private readonly pending: PendingUsage[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly store: Store,
    private readonly events: { onError?(err: unknown): void; onDrop?(): void } = {},
  ) {}

  record(keyId: string, usage: TokenUsage, at = Date.now()): Promise<void> {
    return this.store.recordUsage(keyId, usage, at).catch((err) => {
      this.events.onError?.(err);
      this.buffer({ keyId, usage, at });
    });
  }

  get backlog(): number {
    return this.pending.length;
  }

  /** Writes what is buffered; resolves once the buffer is empty or the store failed again. */
  async flush(): Promise<void> {
    while (this.pending.length > 0) {
      const next = this.pending[0]!;
      try {
        await this.store.recordUsage(next.keyId, next.usage, next.at);
      } catch {
        this.schedule();
        return;
      }
      this.pending.shift();
    }
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private buffer(entry: PendingUsage): void {
    this.pending.push(entry);
    if (this.pending.length > USAGE_BUFFER_LIMIT) {
      this.pending.shift();
      this.events.onDrop?.();
    }
    this.schedule();
  }

  private schedule(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, RETRY_INTERVAL_MS);
    this.timer.unref();
  }
}
