import { describe, expect, it } from 'vitest';
import { createKeyVia, useCluster } from './support/cluster.js';
import { metricValue } from './support/http.js';

const ACCOUNTS = [1, 2, 3].map((n) => ({ id: `oa-${n}`, apiKey: `sk-upstream-cap-${n}-${'d'.repeat(24)}`, maxConcurrent: 2 }));
const STREAMS = 20;

// the queue bound is generous: the test holds the streams until the queue is seen full, which
// takes seconds on a loaded machine; the bound itself is not what is tested
const env = useCluster(2, {
  config: (mockUrl) => ({
    providers: { openai: { baseUrl: mockUrl, strategy: 'round_robin', accounts: ACCOUNTS } },
    upstream: { queueTimeoutMs: 120_000 },
  }),
});

const queued = async () => {
  let depth = 0;
  for (const replica of env.replicas) depth += await metricValue(replica, 'tollgate_queue_depth', { provider: 'openai' });
  return depth;
};

describe('account concurrency caps with a queue, over 2 replicas', () => {
  it('3 accounts x maxConcurrent 2: 20 concurrent slow streams never exceed 2 per account, all complete, none 503', async () => {
    const { key } = await createKeyVia(env.replicas[0]!);
    const release = env.mock.holdStreams();
    const streams = Array.from({ length: STREAMS }, async (_, i) => {
      const res = await fetch(`${env.replicas[i % 2]!.url}/v1/responses`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'gpt-5', input: `stream ${i}`, stream: true }),
      });
      const text = await res.text();
      return { status: res.status, completed: text.includes('response.completed') };
    });

    // six streams held at the mock (two per account), the other fourteen queued at the replicas
    await expect.poll(() => env.mock.requests.length, { timeout: 60_000 }).toBe(6);
    await expect.poll(queued, { timeout: 60_000 }).toBe(STREAMS - 6);
    expect(env.mock.requests).toHaveLength(6);
    release();

    const results = await Promise.all(streams);
    expect(results.filter((r) => r.status !== 200)).toEqual([]);
    expect(results.every((r) => r.completed)).toBe(true);
    expect(env.mock.requests).toHaveLength(STREAMS);
    expect([...env.mock.peakInFlight.keys()].sort()).toEqual(ACCOUNTS.map((a) => a.apiKey).sort());
    for (const peak of env.mock.peakInFlight.values()) expect(peak).toBeLessThanOrEqual(2);
    expect(await queued()).toBe(0);
    let served = 0;
    for (const replica of env.replicas) served += await metricValue(replica, 'tollgate_queue_wait_seconds_count', { provider: 'openai', outcome: 'served' });
    expect(served).toBe(STREAMS - 6);
  }, 300_000);
});
