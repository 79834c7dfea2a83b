import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { createKeyVia, useCluster, type Replica } from './support/cluster.js';
import { servedTotals } from './support/gateway.js';
import { metricValue } from './support/http.js';
import { AOF_ALWAYS } from './support/redis.js';

// Redis as production should run it (every write on disk before its reply), with DEBUG allowed
const env = useCluster(2, { redis: { args: [...AOF_ALWAYS, '--enable-debug-command', 'yes'] } });

/** mulberry32: a seeded PRNG, so a failing run can be replayed with its seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

const KINDS = ['responses', 'chat', 'messages', 'bridged'] as const;
type Kind = (typeof KINDS)[number];

interface Outcome {
  kind: Kind;
  stream: boolean;
  status: number;
  /** the provider-shaped error code of a refusal */
  code?: string;
}

/** What a caller sends for each kind: path, body, extra headers. */
function requestFor(kind: Kind, stream: boolean, text: string, session: Record<string, string>) {
  switch (kind) {
    case 'responses':
      return { path: '/v1/responses', body: { model: 'gpt-5', input: text, stream }, headers: {} };
    case 'bridged':
      // a session id makes it a bridged turn: served by the session's owner over its upstream WebSocket
      return { path: '/v1/responses', body: { model: 'gpt-5', input: text, stream, store: false }, headers: session };
    case 'chat':
      return {
        path: '/v1/chat/completions',
        body: { model: 'gpt-5', messages: [{ role: 'user', content: text }], stream, ...(stream && { stream_options: { include_usage: true } }) },
        headers: {},
      };
    case 'messages':
      return { path: '/v1/messages', body: { model: 'claude-sonnet-4-6', max_tokens: 16, messages: [{ role: 'user', content: text }], stream }, headers: {} };
  }
}

async function send(replica: Replica, key: string, kind: Kind, stream: boolean, text: string, session: Record<string, string>): Promise<{ outcome: Outcome; turnState: string | null }> {
  const { path, body, headers } = requestFor(kind, stream, text, session);
  // no hang: every call is answered, completely, well within this
  const res = await fetch(replica.url + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': key, ...headers },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(15_000),
  });
  const answer = await res.text();
  const outcome: Outcome = { kind, stream, status: res.status };
  if (res.status !== 200) outcome.code = (JSON.parse(answer) as { error?: { code?: string; type?: string } }).error?.code;
  return { outcome, turnState: res.headers.get('x-codex-turn-state') };
}

async function allReady(): Promise<boolean> {
  const statuses = await Promise.all(env.replicas.map(async (r) => (await fetch(`${r.url}/health/ready`)).status));
  return statuses.every((s) => s === 200);
}

describe('usage through Redis faults (AOF, appendfsync always)', () => {
  it('counts every served token exactly once through crashes, cut connections and late replies', async () => {
    const seed = Number(process.env.CHAOS_SEED ?? Math.floor(Math.random() * 2 ** 31));
    console.log(`usage chaos seed ${seed} (replay with CHAOS_SEED=${seed})`);
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
        const { outcome, turnState: next } = await send(env.replicas[(w + i) % 2]!, key, kind, stream, `w${w} i${i} ${'x'.repeat(Math.floor(turn() * 200))}`, session);
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
