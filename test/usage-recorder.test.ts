import { describe, expect, it } from 'vitest';
import { GatewayError } from '../src/errors.js';
import { MemoryStore } from '../src/store/memory.js';
import { USAGE_BUFFER_LIMIT, UsageRecorder } from '../src/usage/recorder.js';
import type { TokenUsage } from '../src/usage/tokens.js';

/** A real store whose writes can be switched off, as when Redis is unreachable. */
class FlakyStore extends MemoryStore {
  down = false;
  override async recordUsage(keyId: string, usage: TokenUsage, now: number): Promise<void> {
    if (this.down) throw new GatewayError('store_unavailable', 'down');
    return super.recordUsage(keyId, usage, now);
  }
}

const usage = (n: number): TokenUsage => ({ input_tokens: n, output_tokens: 1, cached_input_tokens: 0, total_tokens: n + 1 });

describe('UsageRecorder', () => {
  it('buffers usage while the store is down and writes it when it answers again', async () => {
    const store = new FlakyStore();
    const errors: unknown[] = [];
    const recorder = new UsageRecorder(store, { onError: (err) => errors.push(err) });
    store.down = true;
    await recorder.record('k', usage(10));
    await recorder.record('k', usage(20));
    expect(recorder.backlog).toBe(2);
    expect(errors).toHaveLength(2);
    expect((await store.getUsage('k', Date.now())).allTime.total_tokens).toBe(0);

    store.down = false;
    await recorder.flush();
    expect(recorder.backlog).toBe(0);
    expect((await store.getUsage('k', Date.now())).allTime).toMatchObject({ input_tokens: 30, total_tokens: 32 });
    recorder.stop();
  });

  it('keeps at most USAGE_BUFFER_LIMIT records, dropping the oldest and reporting each drop', async () => {
    const store = new FlakyStore();
    let drops = 0;
    const recorder = new UsageRecorder(store, { onDrop: () => drops++ });
    store.down = true;
    for (let i = 0; i < USAGE_BUFFER_LIMIT + 5; i++) await recorder.record('k', usage(1));
    expect(recorder.backlog).toBe(USAGE_BUFFER_LIMIT);
    expect(drops).toBe(5);
    store.down = false;
    await recorder.flush();
    expect((await store.getUsage('k', Date.now())).allTime.input_tokens).toBe(USAGE_BUFFER_LIMIT);
    recorder.stop();
  });

  it('stops at the first failure of a flush and keeps the rest in order', async () => {
    const store = new FlakyStore();
    const recorder = new UsageRecorder(store);
    store.down = true;
    await recorder.record('a', usage(1));
    await recorder.record('b', usage(2));
    await recorder.flush();
    expect(recorder.backlog).toBe(2);
    store.down = false;
    await recorder.flush();
    expect((await store.getUsage('a', Date.now())).allTime.input_tokens).toBe(1);
    expect((await store.getUsage('b', Date.now())).allTime.input_tokens).toBe(2);
    recorder.stop();
  });
});
