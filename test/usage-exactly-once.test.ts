import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { createKeyVia, useCluster } from './support/cluster.js';
import { servedTotals } from './support/gateway.js';
import { metricValue } from './support/http.js';
import { KINDS, chaosSeed, prng, send, type Outcome } from './support/load.js';
import { AOF_ALWAYS } from './support/redis.js';

// Redis as production should run it (every write on disk before its reply), with DEBUG allowed
const env = useCluster(2, { redis: { args: [...AOF_ALWAYS, '--enable-debug-command', 'yes'] } });

async function allReady(): Promise<boolean> {
  const statuses = await Promise.all(env.replicas.map(async (r) => (await fetch(`${r.url}/health/ready`)).status));
  return statuses.every((s) => s === 200);
}

describe('usage through Redis faults (AOF, appendfsync always)', () => {
  it('counts every served token exactly once through crashes, cut connections and late replies', async () => {
    const seed = chaosSeed('usage chaos');
    const random = prng(seed);
    const between = (min: number, max: number): number => min + Math.floor(random() * (max - min));
    const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms)); // spaces chaos events only

    const { key } = await createKeyVia(env.replicas[0]!);
    const admin = new Redis(env.redis.url, { maxRetriesPerRequest: null, lazyConnect: true });
    admin.on('error', () => {}); // it reconnects after each restart
    const outcomes: Outcome[] = [];
    let running = true;
    const workers = Array.from({ length: 6 }, async (_, w) => {
      const turn = prng(seed + w + 1); // per worker: its own sequence of request kinds
      let turnState: string | null = null;
      for (let i = 0; running; i++) {
        const kind = KINDS[Math.floor(turn() * KINDS.length)]!;
        const stream = turn() < 0.5;
        const session: Record<string, string> = { 'session-id': `chaos-${seed}-${w}`, ...(turnState && { 'x-codex-turn-state': turnState }) };
        const text = `w${w} i${i} ${'x'.repeat(Math.floor(turn() * 200))}`;
        const { outcome, turnState: next } = await send(env.replicas[(w + i) % 2]!.url, key, { kind, stream, text, session }, 15_000);
        outcomes.push(outcome);
        if (kind === 'bridged' && next) turnState = next;
      }
    });

    try {
      await expect.poll(() => outcomes.filter((o) => o.status === 200).length, { timeout: 10_000 }).toBeGreaterThan(10);
      // crashes: Redis restarts on its AOF each time
      for (let i = 0; i < 5; i++) {
        await pause(between(200, 800));
        if (i % 2 === 0) await env.redis.kill();
        else await env.redis.terminate();
        await pause(between(50, 400));
        await env.redis.start();
        await expect.poll(allReady, { timeout: 10_000 }).toBe(true);
      }
      // cut connections: the server keeps what it executed, replies are lost
      await admin.connect();
      for (let i = 0; i < 3; i++) {
        await pause(between(200, 600));
        await admin.call('CLIENT', 'KILL', 'TYPE', 'normal');
        await expect.poll(allReady, { timeout: 10_000 }).toBe(true);
      }
      // late replies: everything sent now times out at the client (1 s) and runs after
      await pause(between(100, 400));
      await admin.call('DEBUG', 'SLEEP', '1.6');
      await expect.poll(allReady, { timeout: 10_000 }).toBe(true);
      await pause(300);
    } finally {
      running = false;
      await Promise.all(workers);
      admin.disconnect();
    }

    // every caller got success or a clear gateway error: no 500, no hang
    const refused = outcomes.filter((o) => o.status !== 200);
    for (const o of refused) expect([502, 503, 504], JSON.stringify(o)).toContain(o.status);
    const served = servedTotals(env.mock);
    const faults = outcomes.filter((o) => o.status === 503 && o.code === 'store_unavailable').length;
    console.log(`${outcomes.length} calls, ${env.mock.served.length} served upstream, ${refused.length} refused (${faults} store_unavailable)`);
    expect(faults).toBeGreaterThan(0); // the faults did hit traffic
    for (const kind of KINDS) expect(outcomes.some((o) => o.kind === kind && o.status === 200), kind).toBe(true);

    // once both replicas have written everything they hold, the counters are exactly what was
    // served: every token once, and one request per call served (admissions whose reply a fault
    // ate, their callers told 503, were taken back)
    const state = async () => {
      const backlogs = await Promise.all(env.replicas.map((r) => metricValue(r, 'tollgate_usage_backlog', {})));
      const usage = await (await fetch(`${env.replicas[0]!.url}/v1/usage`, { headers: { 'x-api-key': key } })).json();
      const { request_count, input_tokens, output_tokens, cached_input_tokens, total_tokens } = usage;
      return { backlogs, usage: { request_count, input_tokens, output_tokens, cached_input_tokens, total_tokens } };
    };
    await expect.poll(state, { timeout: 15_000 }).toEqual({ backlogs: [0, 0], usage: { request_count: env.mock.served.length, ...served } });
  }, 90_000);
});
