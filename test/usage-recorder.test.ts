import { afterEach, describe, expect, it, vi } from 'vitest';
import { GatewayError } from '../src/errors.js';
import { MemoryStore } from '../src/store/memory.js';
import { StoreNotReached, type Admission, type AdmissionTicket, type UsageBatch } from '../src/store/types.js';
import type { Limit } from '../src/usage/counters.js';
import { USAGE_BATCH_LIMIT, USAGE_BUFFER_LIMIT, UsageRecorder } from '../src/metering/recorder.js';
import type { TokenUsage } from '../src/usage/tokens.js';

/**
 * A real store whose writes can be switched off, as when Redis is unreachable, or made to apply
 * and then fail, as when the reply of an executed write is lost. Keeps every batch it was sent.
 */
class FlakyStore extends MemoryStore {
  down = false;
  loseReplies = false;
  readonly sent: UsageBatch[] = [];
  override async recordUsage(keyId: string, batch: UsageBatch): Promise<boolean> {
    this.sent.push(structuredClone(batch));
    if (this.down) throw new GatewayError('store_unavailable', 'down');
    const applied = await super.recordUsage(keyId, batch);
    if (this.loseReplies) throw new GatewayError('store_unavailable', 'reply lost');
    return applied;
  }
  override async admitRequest(keyId: string, limits: Limit[], now: number, ticket: AdmissionTicket): Promise<Admission> {
    if (this.down) throw new GatewayError('store_unavailable', 'down', { cause: new StoreNotReached('no connection') });
    const admission = await super.admitRequest(keyId, limits, now, ticket);
    if (this.loseReplies) throw new GatewayError('store_unavailable', 'reply lost');
    return admission;
  }
}

const usage = (n: number): TokenUsage => ({ input_tokens: n, output_tokens: 1, cached_input_tokens: 0, total_tokens: n + 1 });

describe('UsageRecorder', () => {
  it('buffers usage while the store is down and writes it when it answers again', async () => {
    const store = new FlakyStore();
    const errors: unknown[] = [];
    const recorder = new UsageRecorder(store, { onError: (err) => errors.push(err) });
    store.down = true;
    recorder.record('k', usage(10));
    recorder.record('k', usage(20));
    await recorder.flush();
    expect(recorder.backlog).toBe(2);
    expect(errors.length).toBeGreaterThan(0);
    expect((await store.getUsage('k', Date.now())).allTime.total_tokens).toBe(0);

    store.down = false;
    await recorder.flush();
    expect(recorder.backlog).toBe(0);
    expect((await store.getUsage('k', Date.now())).allTime).toMatchObject({ input_tokens: 30, total_tokens: 32 });
    recorder.stop();
  });

  it('a write whose reply was lost is sent again unchanged and counted once', async () => {
    const store = new FlakyStore();
    const recorder = new UsageRecorder(store);
    store.loseReplies = true;
    recorder.record('k', usage(10));
    await recorder.flush();
    // records behind the unresolved batch wait: they are not folded into it
    recorder.record('k', usage(20));
    await recorder.flush();
    store.loseReplies = false;
    await recorder.flush();
    recorder.record('k', usage(40));
    await recorder.flush();

    expect(recorder.backlog).toBe(0);
    expect((await store.getUsage('k', Date.now())).allTime.input_tokens).toBe(70);
    const seqs = store.sent.map((b) => b.seq);
    expect(new Set(seqs).size).toBeLessThan(seqs.length); // some batch went out more than once…
    for (const batch of store.sent) {
      // …and always as it was first sent
      expect(batch).toEqual(store.sent.find((b) => b.seq === batch.seq));
      expect(batch.writer).toBe(recorder.writer);
    }
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b)); // in order
    recorder.stop();
  });

  it('refunds go the same way: once, in the bucket of the admission', async () => {
    const store = new FlakyStore();
    const recorder = new UsageRecorder(store);
    const admittedAt = Date.now();
    await recorder.admit('k', [], admittedAt);
    await recorder.admit('k', [], admittedAt);
    store.loseReplies = true;
    recorder.refund('k', admittedAt);
    await recorder.flush();
    store.loseReplies = false;
    await recorder.flush();
    const snapshot = await store.getUsage('k', admittedAt);
    expect(snapshot.allTime.requests).toBe(1);
    expect(snapshot.windows.daily.requests).toBe(1);
    recorder.stop();
  });

  it('an admission whose outcome is unknown is taken back if it was counted, and only then', async () => {
    const store = new FlakyStore();
    const recorder = new UsageRecorder(store);
    const now = Date.now();
    await recorder.admit('k', [], now);
    store.loseReplies = true; // counted, caller told 503
    await expect(recorder.admit('k', [], now)).rejects.toThrow(GatewayError);
    store.loseReplies = false;
    await recorder.flush();
    expect(recorder.backlog).toBe(0);
    expect((await store.getUsage('k', now)).allTime.requests).toBe(1);
    recorder.stop();
  });

  it('an admission that surely never reached the store leaves nothing to take back', async () => {
    const store = new FlakyStore();
    const recorder = new UsageRecorder(store);
    store.down = true;
    await expect(recorder.admit('k', [], Date.now())).rejects.toThrow(GatewayError);
    expect(recorder.backlog).toBe(0);
    recorder.stop();
  });

  it('batches what piled up for a key, at most USAGE_BATCH_LIMIT records a call', async () => {
    const store = new FlakyStore();
    const recorder = new UsageRecorder(store);
    store.down = true;
    for (let i = 0; i < USAGE_BATCH_LIMIT * 2 + 1; i++) recorder.record('k', usage(1));
    await recorder.flush();
    store.down = false;
    store.sent.length = 0;
    await recorder.flush();
    expect(store.sent.map((b) => b.entries.length)).toEqual([1, USAGE_BATCH_LIMIT, USAGE_BATCH_LIMIT]);
    expect((await store.getUsage('k', Date.now())).allTime.input_tokens).toBe(USAGE_BATCH_LIMIT * 2 + 1);
    recorder.stop();
  });

  describe('with a flush interval', () => {
    afterEach(() => vi.useRealTimers());

    it('what arrives during a write waits for the next interval: one store call per interval, not per round trip; a whole batch or a refund does not wait', async () => {
      vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
      const store = new FlakyStore();
      let release!: () => void;
      const held = new Promise<void>((resolve) => (release = resolve));
      const original = store.recordUsage.bind(store);
      /** the records of each store call, as it starts */
      const calls: number[] = [];
      store.recordUsage = async (keyId, batch) => {
        calls.push(batch.entries.length);
        if (calls.length === 1) await held; // the first write takes a while
        return original(keyId, batch);
      };
      const written: Array<() => void> = [];
      const nextWrite = () => new Promise<void>((resolve) => written.push(resolve));
      const recorder = new UsageRecorder(store, { onWritten: () => written.shift()?.() }, { flushIntervalMs: 50 });

      recorder.record('k', usage(1));
      expect(calls).toEqual([]);
      await vi.advanceTimersByTimeAsync(50);
      expect(calls).toEqual([1]);
      // three more while that write is in flight
      for (const n of [2, 3, 4]) recorder.record('k', usage(n));
      const first = nextWrite();
      release();
      await first;
      await vi.advanceTimersByTimeAsync(0);
      expect(calls).toEqual([1]);
      await vi.advanceTimersByTimeAsync(50);
      expect(calls).toEqual([1, 3]);

      // a refund frees room under a limit: it goes at once, as does a whole batch
      const refunded = nextWrite();
      recorder.refund('k', Date.now());
      await refunded;
      expect(calls).toEqual([1, 3, 1]);
      const whole = nextWrite();
      for (let i = 0; i < USAGE_BATCH_LIMIT; i++) recorder.record('k', usage(1));
      await whole;
      expect(calls).toEqual([1, 3, 1, USAGE_BATCH_LIMIT]);
      expect((await store.getUsage('k', Date.now())).allTime).toMatchObject({ requests: -1, input_tokens: 10 + USAGE_BATCH_LIMIT });
      recorder.stop();
    });

    it('flush() writes everything, also what arrives while it runs', async () => {
      const store = new FlakyStore();
      const recorder = new UsageRecorder(store, {}, { flushIntervalMs: 1_000 });
      recorder.record('k', usage(1));
      const flushed = recorder.flush();
      recorder.record('k', usage(2));
      await flushed;
      expect(recorder.backlog).toBe(0);
      expect((await store.getUsage('k', Date.now())).allTime.input_tokens).toBe(3);
      recorder.stop();
    });
  });

  it('keeps at most USAGE_BUFFER_LIMIT records, dropping the oldest and reporting each drop', async () => {
    const store = new FlakyStore();
    let drops = 0;
    const backlogs: number[] = [];
    const recorder = new UsageRecorder(store, { onDrop: () => drops++, onBacklog: (n) => backlogs.push(n) });
    store.down = true;
    for (let i = 0; i < USAGE_BUFFER_LIMIT + 5; i++) recorder.record('k', usage(1));
    await recorder.flush();
    expect(recorder.backlog).toBe(USAGE_BUFFER_LIMIT);
    expect(drops).toBe(5);
    store.down = false;
    await recorder.flush();
    expect((await store.getUsage('k', Date.now())).allTime.input_tokens).toBe(USAGE_BUFFER_LIMIT);
    expect(backlogs.at(-1)).toBe(0);
    recorder.stop();
  });
});
