import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COMMAND_DEADLINE_MS, RedisStore } from '../src/store/redis.js';
import { startRedis, type TestRedis } from './support/redis.js';

let redis: TestRedis;
let store: RedisStore;

beforeAll(async () => {
  redis = await startRedis({ args: ['--enable-debug-command', 'yes'] });
  store = await RedisStore.connect(redis.url);
});

afterAll(async () => {
  await store?.close();
  await redis?.stop();
});

/** Blocks this process's event loop, as a CPU-starved replica's loop is blocked. */
function stallEventLoop(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until);
}

/** Lets the queued command reach the socket (auto-pipelining writes it on a later tick). */
const commandWritten = () => new Promise((resolve) => setImmediate(resolve));

describe('Redis store deadlines', () => {
  it('a reply that arrived while the event loop was stalled past the deadline is an answer, not a 503', async () => {
    const answer = store.getUsage('stall-key', Date.now());
    await commandWritten();
    stallEventLoop(COMMAND_DEADLINE_MS * 1.5);
    await expect(answer).resolves.toMatchObject({ allTime: { requests: 0 } });
  });

  it('a server that does not answer within the deadline still gets the caller a 503', async () => {
    const admin = new Redis(redis.url);
    try {
      await admin.ping();
      const pause = admin.call('DEBUG', 'SLEEP', String((COMMAND_DEADLINE_MS * 2) / 1000)).catch((err: unknown) => err);
      await commandWritten();
      await expect(store.getUsage('stall-key', Date.now())).rejects.toMatchObject({ code: 'store_unavailable' });
      await pause;
    } finally {
      admin.disconnect();
    }
  });
});
