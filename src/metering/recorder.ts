import { randomUUID } from 'node:crypto';
import { usageDeltas, type Limit } from '../usage/counters.js';
import { GatewayError } from '../errors.js';
import { StoreNotReached, type Admission, type HistoryTag, type Store, type UsageBatch, type UsageEntry } from '../store/types.js';
import type { TokenUsage } from '../usage/tokens.js';

export const USAGE_BUFFER_LIMIT = 10_000;
/**
 * Records of one key sent in one store call at most. A store sums a batch per hour before applying
 * it (store/usage-batch.ts): its write costs about the same for ten records or a thousand (taken-back
 * admissions, left after a store failure, are applied one by one).
 */
export const USAGE_BATCH_LIMIT = 1_000;
const RETRY_INTERVAL_MS = 1_000;

export interface UsageRecorderOptions {
  /**
   * How long a record may wait for others of its key before they go in one store call (0: at
   * once). A key's batch also goes as soon as `USAGE_BATCH_LIMIT` records wait.
   */
  flushIntervalMs?: number;
}

export interface UsageRecorderEvents {
  onError?(err: unknown): void;
  onDrop?(): void;
  /** the backlog changed: records not yet acknowledged by the store */
  onBacklog?(backlog: number): void;
  /** a batch of the key's usage reached the store: its counters moved */
  onWritten?(keyId: string): void;
}

/**
 * Counts requests and writes their usage (and refunds) to the store, exactly once. This process is one writer
 * with an id of its own; its records of one key go out in numbered batches, one batch of a key at
 * a time, and a batch whose outcome is unknown (store unreachable, reply lost or late) is sent
 * again unchanged, same number, until the store acknowledges it. The store skips a number it has
 * applied already, so a retried write never counts twice.
 *
 * Records wait up to `flushIntervalMs` for others of their key, so a busy key costs the store one
 * call per interval instead of one per request.
 *
 * While the store is unreachable records wait in a bounded buffer, retried every second; past
 * `USAGE_BUFFER_LIMIT` records the oldest not yet sent are dropped (reported through `onDrop`).
 *
 * Admissions are numbered per key too. One whose outcome is unknown (its caller gets the 503) is
 * taken back through the same numbered batches: the store removes it if, and only if, it counted it.
 */
export class UsageRecorder {
  /** fresh per process: its numbers start at 1 and never meet the marks of an earlier life */
  readonly writer = randomUUID();
  private seq = 0;
  /** records not yet in a batch, per key, oldest first */
  private readonly unsent = new Map<string, UsageEntry[]>();
  private unsentCount = 0;
  /** per key, the batch sent and not yet acknowledged: immutable until it is */
  private readonly inFlight = new Map<string, UsageBatch>();
  private inFlightCount = 0;
  /** per key, the running loop that writes its batches one after another */
  private readonly writers = new Map<string, Promise<void>>();
  /** keys whose loop writes until nothing is left (`flush`), not only what is due */
  private readonly emptying = new Set<string>();
  /** keys with a record that must not wait for the interval (a taken-back admission) */
  private readonly urgent = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private flushTimer: NodeJS.Timeout | undefined;
  private readonly flushIntervalMs: number;
  /** per key, the number of the last admission asked for */
  private readonly admissions = new Map<string, number>();

  constructor(
    private readonly store: Store,
    private readonly events: UsageRecorderEvents = {},
    options: UsageRecorderOptions = {},
  ) {
    this.flushIntervalMs = options.flushIntervalMs ?? 0;
  }

  /** Checks the key's limits and counts the request (see `Store.admitRequest`). */
  async admit(keyId: string, limits: Limit[], now: number): Promise<Admission> {
    const number = (this.admissions.get(keyId) ?? 0) + 1;
    this.admissions.set(keyId, number);
    try {
      return await this.store.admitRequest(keyId, limits, now, { writer: this.writer, number });
    } catch (err) {
      // unless it surely never reached the store, nobody knows yet whether it counted: the store
      // will tell by its number
      if (!(err instanceof GatewayError && err.cause instanceof StoreNotReached)) this.enqueue(keyId, { at: now, lostAdmission: number }, true);
      throw err;
    }
  }

  /**
   * Counts a request of a key without limits: nothing to check, so no store call of its own; it
   * goes with the key's next batch (taken back by `refund` like an admitted one).
   */
  countRequest(keyId: string, at: number): void {
    this.enqueue(keyId, { at, deltas: { requests: 1 } });
  }

  /**
   * The usage of a completed request and its cost in USD: one entry, so both count exactly once;
   * with `history`, also one request (and its cost) in the usage history.
   */
  record(keyId: string, usage: TokenUsage, costUsd = 0, history?: HistoryTag, at = Date.now()): void {
    this.enqueue(keyId, { at, deltas: usageDeltas(usage, costUsd), ...(history && { history }) });
  }

  /** A request that failed without usage: one request and its error class in the usage history. */
  recordFailure(keyId: string, history: HistoryTag & { error: NonNullable<HistoryTag['error']> }, at = Date.now()): void {
    this.enqueue(keyId, { at, deltas: {}, history });
  }

  /** Takes back a request admitted at `admittedAt` that never reached an upstream. */
  refund(keyId: string, admittedAt: number): void {
    this.enqueue(keyId, { at: admittedAt, deltas: { requests: -1 } }, true);
  }

  /** Records not yet acknowledged by the store. */
  get backlog(): number {
    return this.unsentCount + this.inFlightCount;
  }

  /** Writes everything buffered; resolves once all of it is acknowledged or a write failed. */
  async flush(): Promise<void> {
    const keys = this.pendingKeys();
    keys.forEach((keyId) => this.emptying.add(keyId));
    await Promise.all(keys.map((keyId) => this.drain(keyId)));
  }

  /** The interval's flush, and the retry after a failed write: what each key has waiting goes. */
  private flushDue(): void {
    for (const keyId of this.pendingKeys()) void this.drain(keyId);
  }

  private pendingKeys(): string[] {
    return [...new Set([...this.inFlight.keys(), ...this.unsent.keys()])];
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
  }

  /** `now`: an admission given back frees room under a limit: it goes without waiting for others */
  private enqueue(keyId: string, entry: UsageEntry, now = false): void {
    const queue = this.unsent.get(keyId);
    if (queue) queue.push(entry);
    else this.unsent.set(keyId, [entry]);
    this.unsentCount += 1;
    if (this.backlog > USAGE_BUFFER_LIMIT) this.dropOldestUnsent();
    this.events.onBacklog?.(this.backlog);
    if (now) this.urgent.add(keyId);
    if (this.isDue(keyId)) void this.drain(keyId);
    else this.scheduleFlush();
  }

  /** Whether the key's waiting records go now rather than with the interval's flush. */
  private isDue(keyId: string): boolean {
    const waiting = this.unsent.get(keyId)?.length ?? 0;
    if (waiting === 0) return false;
    return this.flushIntervalMs === 0 || waiting >= USAGE_BATCH_LIMIT || this.urgent.has(keyId) || this.emptying.has(keyId);
  }

  private scheduleFlush(): void {
    if (this.flushTimer) return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = undefined;
      this.flushDue();
    }, this.flushIntervalMs);
  }

  /** Starts the key's write loop unless it runs already; resolves when that loop ends. */
  private drain(keyId: string): Promise<void> {
    const running = this.writers.get(keyId);
    if (running) return running;
    if (!this.inFlight.has(keyId) && !this.unsent.has(keyId)) return Promise.resolve();
    const loop = this.writeKey(keyId);
    this.writers.set(keyId, loop);
    return loop;
  }

  /**
   * Writes the key's batches in order: the one in flight or what is waiting, then more only while
   * more is due (a whole batch, a taken-back admission, or `flush`); what arrived during a write
   * otherwise waits for the interval, so a busy key costs one store call per interval, not one per
   * round trip. Stops when the store fails. The loop forgets itself in the same tick it stops, so a
   * record queued later starts a new one.
   */
  private async writeKey(keyId: string): Promise<void> {
    let failed = false;
    for (let first = true; ; first = false) {
      const batch = this.inFlight.get(keyId) ?? (first || this.isDue(keyId) ? this.nextBatch(keyId) : undefined);
      if (!batch) break;
      try {
        await this.store.recordUsage(keyId, batch);
      } catch (err) {
        this.events.onError?.(err);
        this.scheduleRetry();
        failed = true;
        break;
      }
      this.inFlight.delete(keyId);
      this.inFlightCount -= batch.entries.length;
      this.events.onBacklog?.(this.backlog);
      this.events.onWritten?.(keyId);
    }
    this.writers.delete(keyId);
    this.emptying.delete(keyId);
    // left for the interval; after a failure the retry takes it
    if (!failed && this.unsent.has(keyId)) this.scheduleFlush();
  }

  private nextBatch(keyId: string): UsageBatch | undefined {
    const queue = this.unsent.get(keyId);
    if (!queue) return undefined;
    const entries = queue.splice(0, USAGE_BATCH_LIMIT);
    if (queue.length === 0) this.unsent.delete(keyId);
    this.urgent.delete(keyId);
    const batch: UsageBatch = { writer: this.writer, seq: ++this.seq, entries };
    this.unsentCount -= entries.length;
    this.inFlightCount += entries.length;
    this.inFlight.set(keyId, batch);
    return batch;
  }

  /** Batches already sent are never touched: only records not yet sent can go. */
  private dropOldestUnsent(): void {
    let oldest: [string, UsageEntry[]] | undefined;
    for (const candidate of this.unsent) if (!oldest || candidate[1][0]!.at < oldest[1][0]!.at) oldest = candidate;
    if (!oldest) return;
    const [keyId, queue] = oldest;
    queue.shift();
    if (queue.length === 0) this.unsent.delete(keyId);
    this.unsentCount -= 1;
    this.events.onDrop?.();
  }

  private scheduleRetry(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flushDue();
    }, RETRY_INTERVAL_MS);
    this.timer.unref();
  }
}
