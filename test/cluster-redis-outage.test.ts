import { describe, expect, it } from 'vitest';
import { createKeyVia, useCluster, type Replica } from './support/cluster.js';
import { servedTotals } from './support/gateway.js';
import { metricValue } from './support/http.js';

const env = useCluster(2);

interface Outcome {
  status: number;
  code?: string;
  retryAfter: string | null;
}

async function respond(replica: Replica, key: string, path: '/v1/responses' | '/v1/messages'): Promise<Outcome> {
  const body = path === '/v1/responses' ? { model: 'gpt-5', input: 'x' } : { model: 'claude-sonnet-4-6', max_tokens: 8, messages: [{ role: 'user', content: 'x' }] };
  // a hang would fail the run: every request must be answered within a few seconds
  const res = await fetch(replica.url + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': key },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(5_000),
  });
  const json = await res.json();
  return { status: res.status, code: json.error?.code, retryAfter: res.headers.get('retry-after') };
}

describe('Redis going away mid-traffic', () => {
  it('answers clear 503s while it is gone, recovers by itself, and loses no usage of completed requests', async () => {
    const { key } = await createKeyVia(env.replicas[0]!);
    const outcomes: Outcome[] = [];
    let running = true;
    const workers = Array.from({ length: 4 }, async (_, w) => {
      for (let i = 0; running; i++) {
        outcomes.push(await respond(env.replicas[(w + i) % 2]!, key, i % 2 ? '/v1/messages' : '/v1/responses'));
        await new Promise((r) => setTimeout(r, 20)); // steady load, not a flood: part of the scenario
      }
    });

    const answered = (status: number, since = 0) => outcomes.slice(since).filter((o) => o.status === status).length;
    await expect.poll(() => answered(200)).toBeGreaterThanOrEqual(8);
    // three streams admitted before the outage that complete during it: their usage must survive
    const release = env.mock.holdStreams();
    const heldStreams = env.replicas.concat(env.replicas[0]!).map(async (replica) => {
      const res = await fetch(`${replica.url}/v1/responses`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
        body: JSON.stringify({ model: 'gpt-5', input: 'held across the outage', stream: true }),
      });
      return { status: res.status, text: await res.text() };
    });
    // admitted (and counted) before the outage: the upstream has all three
    await expect.poll(() => env.mock.requests.filter((r) => (r.json as { input?: string })?.input === 'held across the outage').length).toBe(3);
    await env.redis.stop();
    release();
    for (const held of await Promise.all(heldStreams)) {
      expect(held.status).toBe(200);
      expect(held.text).toContain('response.completed');
    }
    const ready = await fetch(`${env.replicas[1]!.url}/health/ready`);
    expect(ready.status).toBe(503);
    expect((await ready.json()).error.code).toBe('store_unavailable');
    // every worker has met the outage
    await expect.poll(() => answered(503)).toBeGreaterThanOrEqual(8);
    const duringOutage = outcomes.length;
    await env.redis.start();
    // every replica reconnects on its own schedule: each is asked, not only the first
    for (const replica of env.replicas) {
      await expect.poll(async () => (await fetch(`${replica.url}/health/ready`)).status, { timeout: 10_000 }).toBe(200);
    }
    await expect.poll(() => answered(200, duringOutage)).toBeGreaterThanOrEqual(8);
    running = false;
    await Promise.all(workers);

    const served = outcomes.filter((o) => o.status === 200);
    const unavailable = outcomes.filter((o) => o.status === 503);
    expect(served.length).toBeGreaterThan(0);
    expect(unavailable.length).toBeGreaterThan(0);
    for (const o of unavailable) {
      expect(o.code).toBe('store_unavailable');
      expect(Number(o.retryAfter)).toBeGreaterThan(0);
    }
    // nothing but success and clear 503s: no 500, no hang
    expect(served.length + unavailable.length).toBe(outcomes.length);
    // requests after recovery succeed again
    expect(outcomes.slice(duringOutage).some((o) => o.status === 200)).toBe(true);
    expect((await respond(env.replicas[1]!, key, '/v1/responses')).status).toBe(200);

    // usage of requests that completed while Redis was gone was buffered and written after, once,
    // and admissions whose reply the outage ate (their callers got the 503) were taken back: when
    // both replicas have written everything they hold, the counters are exactly what was served
    const state = async () => {
      const backlogs = await Promise.all(env.replicas.map((r) => metricValue(r, 'tollgate_usage_backlog', {})));
      const usage = await (await fetch(`${env.replicas[0]!.url}/v1/usage`, { headers: { 'x-api-key': key } })).json();
      return { backlogs, request_count: usage.request_count, total_tokens: usage.total_tokens };
    };
    const expected = { backlogs: [0, 0], request_count: env.mock.served.length, total_tokens: servedTotals(env.mock).total_tokens };
    await expect.poll(state, { timeout: 10_000 }).toEqual(expected);
  });
});
