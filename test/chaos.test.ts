import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { sessionOf } from '../src/http/session-key.js';
import { TEST_BRIDGE, createKeyVia, useCluster, type Replica } from './support/cluster.js';
import { servedTotals } from './support/gateway.js';
import { metricValue } from './support/http.js';
import { chaosSeed, prng, send, type Call, type Kind, type Outcome } from './support/load.js';
import { AOF_ALWAYS } from './support/redis.js';

/**
 * Staleness above the Redis pause below (1.5 s), so a paused store does not make live owners look
 * dead; leases long enough to outlive a Redis restart. The takeover bound is `staleAfterMs`.
 */
const BRIDGE = { ...TEST_BRIDGE, staleAfterMs: 3_000, leaseMs: 9_000 };
// Redis as production should run it (every write on disk before its reply), with DEBUG allowed.
// Three replicas take the load; the fourth is the killed one's replacement, a new process with an id
// of its own (as every start gets by default), started with the others so that its start-up, many
// seconds on a loaded machine, is not on the test's clock. It joins the rotation after the kill.
const env = useCluster(4, { config: { bridge: BRIDGE }, redis: { args: [...AOF_ALWAYS, '--enable-debug-command', 'yes'] } });

const PLAIN: Kind[] = ['responses', 'chat', 'messages'];
const PLAIN_WORKERS = 4;
const CONVERSATIONS = 4;

interface Conversation {
  sessionId: string;
  turnState?: string;
  /** the last response of its chain, continued by the next turn */
  previous?: string;
  /** upstream chains it lost (previous_response_not_found), and how many its owners' deaths allow */
  lost: number;
  allowedLosses: number;
}

describe('chaos: replicas and Redis fail in turn under mixed load (AOF, appendfsync always)', () => {
  it('answers every caller cleanly, keeps every conversation going and counts usage exactly', async () => {
    const seed = chaosSeed('chaos');
    const random = prng(seed);
    const between = (min: number, max: number): number => min + Math.floor(random() * (max - min));
    const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms)); // spaces chaos events only

    const { id: keyId, key } = await createKeyVia(env.replicas[0]!);
    /** where callers are sent, round robin: what a load balancer has in rotation */
    const live: Replica[] = env.replicas.slice(0, 3);
    const replacement = env.replicas[3]!;
    let rr = 0;
    const entry = (): Replica => live[rr++ % live.length]!;
    const outcomes: Outcome[] = [];
    const problems: string[] = [];
    /** calls sent and not answered yet, by the replica they were sent to */
    const inFlight = new Map<Promise<unknown>, { target: Replica; bridged: boolean }>();
    /** while a replica is about to be killed: the instance id conversations it owns must not reach */
    let hold: { instanceId: string; released: Promise<void> } | null = null;
    /** when each call refused for a dead owner was sent */
    const ownerRefusals: number[] = [];

    const sessionHeaders = (c: Conversation): Record<string, string> => ({ 'session-id': c.sessionId, ...(c.turnState && { 'x-codex-turn-state': c.turnState }) });
    const leaseOf = (c: Conversation) => env.store.getLease(sessionOf(sessionHeaders(c), keyId)!.key);

    /** One call through the rotation, its answer judged: success, or a clean gateway refusal. */
    const issue = async (call: Call, conversation?: Conversation) => {
      const target = entry();
      const sentAt = Date.now();
      const pending = send(target.url, key, call);
      inFlight.set(pending, { target, bridged: call.kind === 'bridged' });
      const answer = await pending.catch((err: Error) => void problems.push(err.message)).finally(() => inFlight.delete(pending));
      if (!answer) return null; // no complete answer in time: listed as a problem
      const { outcome } = answer;
      outcomes.push(outcome);
      if (outcome.code === 'owner_unavailable') ownerRefusals.push(sentAt);
      const what = `${call.kind}${call.stream ? ' streamed' : ''} via ${target.instanceId} → ${outcome.status} ${outcome.code ?? ''}`;
      if (outcome.status === 200) {
        if (outcome.incomplete) problems.push(`${what}: incomplete body`);
      } else if (outcome.status === 400 && outcome.code === 'previous_response_not_found' && conversation) {
        // the upstream socket holding the chain died with its owner: the conversation starts a new chain
        conversation.lost++;
      } else if (![502, 503, 504].includes(outcome.status) || /^not /.test(outcome.code ?? '')) {
        problems.push(`${what}: not a clean gateway error`);
      } else if (outcome.status === 503 && !(Number(outcome.retryAfter) > 0)) {
        problems.push(`${what}: 503 without Retry-After`);
      }
      return answer;
    };

    /** One turn of a conversation: continues its chain, or starts a new one after a lost chain. */
    const converse = async (c: Conversation, stream: boolean, text: string) => {
      const answer = await issue({ kind: 'bridged', stream, text, session: sessionHeaders(c), previousResponseId: c.previous }, c);
      if (answer?.outcome.status === 200 && answer.responseId) {
        c.previous = answer.responseId;
        c.turnState = answer.turnState ?? c.turnState;
      } else if (answer?.outcome.code === 'previous_response_not_found') c.previous = undefined;
      return answer?.outcome;
    };

    let running = true;
    const plainWorkers = Array.from({ length: PLAIN_WORKERS }, async (_, w) => {
      const draw = prng(seed + w + 1);
      for (let i = 0; running; i++) {
        const kind = PLAIN[Math.floor(draw() * PLAIN.length)]!;
        await issue({ kind, stream: draw() < 0.5, text: `p${w} i${i} ${'x'.repeat(Math.floor(draw() * 200))}` });
      }
    });
    let killHitConversation = false;
    const conversations: Conversation[] = Array.from({ length: CONVERSATIONS }, (_, w) => ({ sessionId: `chaos-${seed}-${w}`, lost: 0, allowedLosses: 0 }));
    const conversationWorkers = conversations.map(async (c, w) => {
      const draw = prng(seed + 100 + w);
      for (let i = 0; running; i++) {
        const held = hold;
        if (held && (await leaseOf(c).catch(() => null))?.instanceId === held.instanceId) await held.released;
        await converse(c, draw() < 0.5, `c${w} i${i} ${'y'.repeat(Math.floor(draw() * 200))}`);
      }
    });

    const successes = () => outcomes.filter((o) => o.status === 200).length;
    /** load keeps being served: a fact to wait on between chaos events */
    const progress = async (count: number) => {
      const from = successes();
      await expect.poll(successes, { timeout: 20_000 }).toBeGreaterThanOrEqual(from + count);
    };
    const allReady = async () => {
      const statuses = await Promise.all(live.map(async (r) => (await fetch(`${r.url}/health/ready`)).status));
      return statuses.every((s) => s === 200);
    };
    /**
     * A replica leaves the rotation, then the bridged calls in flight anywhere (any may be
     * forwarded to it, or claim a session for it) and, with 'all', every call sent to it are
     * answered; conversations it owns then may lose their upstream chain once.
     */
    const takeOutOfRotation = async (replica: Replica, wait: 'bridged' | 'all') => {
      live.splice(live.indexOf(replica), 1);
      const sent = [...inFlight].filter(([, call]) => call.bridged || (wait === 'all' && call.target === replica));
      await Promise.allSettled(sent.map(([pending]) => pending));
      for (const c of conversations) {
        if ((await leaseOf(c))?.instanceId !== replica.instanceId) continue;
        c.allowedLosses++;
        killHitConversation = true;
      }
    };
    const admin = new Redis(env.redis.url, { maxRetriesPerRequest: null, lazyConnect: true });
    admin.on('error', () => {}); // it reconnects after the restart
    const t0 = Date.now();
    const timeline: string[] = [];
    const mark = (what: string) => timeline.push(`${((Date.now() - t0) / 1000).toFixed(1)}s ${what}`);
    let release = (): void => {};
    let killedAt = 0;

    try {
      await progress(30);
      // 1. SIGKILL a replica that owns bridge sessions, with nothing of its usage unwritten (what a
      // killed replica holds is lost by design); its replacement joins the rotation
      const owned = await Promise.all(live.map((r) => metricValue(r, 'tollgate_bridge_owned_sessions', {})));
      const owners = live.filter((_, i) => owned[i]! > 0);
      expect(owners.length).toBeGreaterThan(0);
      const victim = owners[Math.floor(random() * owners.length)]!;
      hold = { instanceId: victim.instanceId, released: new Promise<void>((r) => (release = r)) };
      await takeOutOfRotation(victim, 'all');
      await expect.poll(() => metricValue(victim, 'tollgate_usage_backlog', {})).toBe(0);
      killedAt = Date.now();
      await victim.kill('SIGKILL');
      mark(`SIGKILL ${victim.instanceId}`);
      hold = null;
      release();
      live.push(replacement);
      mark(`${replacement.instanceId} in rotation`);
      await progress(20);

      // 2. SIGTERM another, calls in flight: it drains (they finish, usage is written, sessions released)
      const drained = live.filter((r) => r !== replacement)[Math.floor(random() * (live.length - 1))]!;
      await takeOutOfRotation(drained, 'bridged');
      mark(`SIGTERM ${drained.instanceId}`);
      expect(await drained.kill('SIGTERM')).toBe(0);
      mark('drained');
      await progress(20);

      // 3. restart Redis on its data: cleanly, stopped by the orchestrator, or crashed
      await pause(between(100, 600));
      const stop = (['restart', 'terminate', 'kill'] as const)[Math.floor(random() * 3)]!;
      mark(`redis ${stop}`);
      const redisStoppedAt = Date.now();
      if (stop === 'restart') await env.redis.restart();
      else {
        await env.redis[stop]();
        await env.redis.start();
      }
      await expect.poll(allReady, { timeout: 15_000 }).toBe(true);
      // a lease's expiry is absolute: Redis down for longer than a lease (a slow restart on a
      // loaded machine) lets every lease lapse, and a session may then move with its chain
      if (Date.now() - redisStoppedAt >= BRIDGE.leaseMs) {
        mark('redis was down longer than a lease');
        for (const c of conversations) c.allowedLosses++;
      }
      await progress(20);

      // 4. pause Redis past the 1 s command deadline: replies arrive after the callers gave up
      await pause(between(100, 600));
      await admin.connect();
      await admin.call('DEBUG', 'SLEEP', '1.5');
      mark('redis paused 1.5 s');
      await expect.poll(allReady, { timeout: 15_000 }).toBe(true);
      await progress(20);
    } finally {
      running = false;
      hold = null;
      release();
      await Promise.all([...plainWorkers, ...conversationWorkers]);
      admin.disconnect();
    }

    mark('load stopped');
    console.log(timeline.join('\n'));
    const refused = outcomes.filter((o) => o.status !== 200);
    const byCode = new Map<string, number>();
    for (const o of refused) byCode.set(`${o.status} ${o.code}`, (byCode.get(`${o.status} ${o.code}`) ?? 0) + 1);
    console.log(`${outcomes.length} calls, ${env.mock.served.length} served upstream; refused: ${JSON.stringify(Object.fromEntries(byCode))}`);
    expect(problems).toEqual([]);
    expect(refused.some((o) => o.code === 'store_unavailable')).toBe(true); // the Redis faults did hit traffic
    expect(killHitConversation).toBe(true); // the kill hit a conversation
    // takeover bound: the dead owner's sessions are refused only until it is stale, then taken
    // over (a call sent after the bound is answered by the new owner, however slowly)
    for (const sentAt of ownerRefusals) expect(sentAt - killedAt).toBeGreaterThanOrEqual(0);
    for (const sentAt of ownerRefusals) expect(sentAt - killedAt, 'owner_unavailable past the takeover bound').toBeLessThanOrEqual(BRIDGE.staleAfterMs);

    // every conversation goes on after the chaos: a turn on its chain (or on a new one, if its
    // owner died with the chain), then one continuing that
    for (const c of conversations) {
      let first = await converse(c, false, 'after the chaos');
      if (first?.code === 'previous_response_not_found') first = await converse(c, false, 'after the chaos, new chain');
      expect(first?.status, c.sessionId).toBe(200);
      expect((await converse(c, true, 'and on'))?.status, c.sessionId).toBe(200);
      expect(c.lost, `${c.sessionId}: chains lost vs owners lost`).toBeLessThanOrEqual(c.allowedLosses);
    }
    expect(problems).toEqual([]);

    // once every replica has written what it holds, the counters are exactly what was served:
    // every token once; one request per call that reached the upstream (served, or refused there
    // as a lost chain), none for the calls refused by the gateway
    const chainsLost = outcomes.filter((o) => o.code === 'previous_response_not_found').length;
    const state = async () => {
      const backlogs = await Promise.all(live.map((r) => metricValue(r, 'tollgate_usage_backlog', {})));
      const usage = await (await fetch(`${live[0]!.url}/v1/usage`, { headers: { 'x-api-key': key } })).json();
      const { request_count, input_tokens, output_tokens, cached_input_tokens, total_tokens } = usage;
      return { backlogs, usage: { request_count, input_tokens, output_tokens, cached_input_tokens, total_tokens } };
    };
    await expect
      .poll(state, { timeout: 15_000 })
      .toEqual({ backlogs: live.map(() => 0), usage: { request_count: env.mock.served.length + chainsLost, ...servedTotals(env.mock) } });
  }, 60_000);
});
