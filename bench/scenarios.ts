/**
 * What the bench measures. Add a scenario by adding an entry: a load scenario names the target
 * it sends the same load to; a probe compares sequential latency of targets with a baseline.
 */
import { INTERNAL_SECRET, type BenchEnv, type GatewayConfigPatch, type HttpTarget } from './env.js';
import { metricValue, type ProbeSpec } from './measure.js';

export const RESPONSES_PATH = '/v1/responses';
export const SMALL_BODY = { model: 'gpt-5', input: 'hi' };

/**
 * Gateway variants, by name; each one is started once, the first time a scenario needs it.
 * The Redis ones are replicas of one cluster: same Redis, same internal secret, own instance ids.
 */
const withRedis =
  (instanceId: string): GatewayConfigPatch =>
  async (env) => ({ server: { instanceId }, redis: { url: await env.redis() }, internalSecret: INTERNAL_SECRET });
const gateway = {
  memory: (env: BenchEnv) => env.gateway('memory'),
  /** replica A (also the load scenario's Redis gateway) */
  redis: (env: BenchEnv) => env.gateway('redis', withRedis('bench-replica-a')),
  /** replica B: started only for the owner-forward probe */
  redisB: (env: BenchEnv) => env.gateway('redis-b', withRedis('bench-replica-b')),
};

export interface LoadScenario {
  label: string;
  /** the scenario every other one is compared with; exactly one */
  baseline?: boolean;
  /** whether the earlier issue's targets (≥ 50% of direct req/s, < 2 ms added p50) apply */
  targets?: boolean;
  /** the bare proxy's row this row's server CPU is compared with, and the largest ratio the issue allows */
  cpuTarget?: { floor: string; maxRatio: number };
  /** Redis commands per request the issue allows (round trips; see redis-stats.ts) */
  maxRedisCommands?: number;
  target(env: BenchEnv): Promise<HttpTarget>;
  path: string;
  body: object;
  /** measure Redis's own CPU and commands per request over the measured run */
  redis?: boolean;
  /** instead of BENCH_CONNECTIONS (the 2 MB rows: a few uploads at a time, as a few agents would) */
  connections?: number;
}

/**
 * A Codex turn of about `bytes`: instructions, tools and a long conversation with tool output,
 * as the Responses API carries it (the whole history in `input`, streamed).
 */
export function codexTurnBody(bytes: number): object {
  const filler = (seed: number, length: number) => {
    let text = '';
    for (let i = 0; text.length < length; i++) text += `line ${seed}.${i}: const value = compute(${i}, "${'x'.repeat(i % 40)}");\n`;
    return text.slice(0, length);
  };
  const input: object[] = [];
  let size = 0;
  for (let turn = 0; size < bytes; turn++) {
    const items = [
      { type: 'message', role: 'user', content: [{ type: 'input_text', text: filler(turn, 400) }] },
      { type: 'function_call', call_id: `call_${turn}`, name: 'shell', arguments: JSON.stringify({ command: ['rg', '-n', `pattern${turn}`] }) },
      { type: 'function_call_output', call_id: `call_${turn}`, output: filler(turn + 1, 6_000) },
      { type: 'message', role: 'assistant', content: [{ type: 'output_text', text: filler(turn + 2, 600) }] },
    ];
    for (const item of items) size += JSON.stringify(item).length;
    input.push(...items);
  }
  return {
    model: 'gpt-5',
    instructions: filler(-1, 8_000),
    tools: [{ type: 'function', name: 'shell', parameters: { type: 'object', properties: { command: { type: 'array', items: { type: 'string' } } } } }],
    input,
    store: false,
    stream: true,
  };
}
export const LARGE_BODY = codexTurnBody(2 * 1024 * 1024);

/** What the key with limits presents instead of the default key. */
const withLimitedKey = (target: Promise<HttpTarget>, env: BenchEnv) =>
  target.then((t) => ({ ...t, headers: { authorization: `Bearer ${env.limitedKey.secret}` } }));

const FLOOR = 'Bare Fastify+undici proxy';
const FLOOR_2MB = 'Bare proxy, 2 MB turn';
const LARGE_CONNECTIONS = 4;

export const LOAD_SCENARIOS: LoadScenario[] = [
  { label: 'Direct (mock upstream)', baseline: true, target: (env) => env.mock(), path: RESPONSES_PATH, body: SMALL_BODY },
  // not a target: what a bare Fastify + undici pass-through costs, so the gateway's own share shows
  { label: FLOOR, target: (env) => env.floor(), path: RESPONSES_PATH, body: SMALL_BODY },
  // not a target either: the same pass-through without a framework, what a rewritten core would start from
  { label: 'Raw node:http+undici dispatch proxy', target: (env) => env.rawFloor(), path: RESPONSES_PATH, body: SMALL_BODY },
  {
    label: 'Gateway, memory store',
    targets: true,
    cpuTarget: { floor: FLOOR, maxRatio: 1.3 },
    target: gateway.memory,
    path: RESPONSES_PATH,
    body: SMALL_BODY,
  },
  {
    label: 'Gateway, Redis store',
    targets: true,
    cpuTarget: { floor: FLOOR, maxRatio: 1.5 },
    maxRedisCommands: 0,
    redis: true,
    target: gateway.redis,
    path: RESPONSES_PATH,
    body: SMALL_BODY,
  },
  {
    label: 'Gateway, Redis, key with limits',
    cpuTarget: { floor: FLOOR, maxRatio: 1.5 },
    maxRedisCommands: 1,
    redis: true,
    target: (env) => withLimitedKey(gateway.redis(env), env),
    path: RESPONSES_PATH,
    body: SMALL_BODY,
  },
  { label: 'Direct, 2 MB turn', connections: LARGE_CONNECTIONS, target: (env) => env.mock(), path: RESPONSES_PATH, body: LARGE_BODY },
  { label: FLOOR_2MB, connections: LARGE_CONNECTIONS, target: (env) => env.floor(), path: RESPONSES_PATH, body: LARGE_BODY },
  {
    label: 'Gateway, memory, 2 MB turn',
    cpuTarget: { floor: FLOOR_2MB, maxRatio: 1.3 },
    connections: LARGE_CONNECTIONS,
    target: gateway.memory,
    path: RESPONSES_PATH,
    body: LARGE_BODY,
  },
  {
    label: 'Gateway, Redis, 2 MB turn',
    cpuTarget: { floor: FLOOR_2MB, maxRatio: 1.5 },
    connections: LARGE_CONNECTIONS,
    redis: true,
    target: gateway.redis,
    path: RESPONSES_PATH,
    body: LARGE_BODY,
  },
];

/** Streams opened at once through one process: the bare proxy (the floor) and the gateway on the memory store. */
export interface BurstScenario {
  label: string;
  /** the row this one's TTFB p50 is compared with (max 1.25×), and whose loop is the floor */
  floor?: string;
  /** whether it answers GET /health/live (the mock does not) */
  health: boolean;
  target(env: BenchEnv): Promise<HttpTarget>;
}
export const BURST_BODY = { ...SMALL_BODY, stream: true };
export const BURST_SCENARIOS: BurstScenario[] = [
  { label: 'Direct (mock upstream)', health: false, target: (env) => env.mock() },
  { label: FLOOR, health: true, target: (env) => env.floor() },
  { label: 'Gateway, memory store', floor: FLOOR, health: true, target: gateway.memory },
];
/** ≤ this × the bare proxy's burst TTFB p50; /health/live never slower than this during a burst */
export const BURST_TTFB_MAX_RATIO = 1.25;
export const HEALTH_MAX_MS = 250;
export const IDLE_RSS_MAX_MIB = 80;
export const HELD_STREAM_MAX_KIB = 32;

/** Fresh replicas for the memory rows (idle RSS, held streams): nothing else has run through them. */
export const freshGateways = {
  memory: (env: BenchEnv) => env.freshReplica('fresh-memory'),
  redis: (env: BenchEnv) => env.freshReplica('fresh-redis', withRedis('bench-replica-fresh')),
};

/** An issue target for a probe subject: it adds at most this p50 over the probe's baseline. */
export interface ProbeTarget {
  /** what the target line says, e.g. "owner-forward hop adds" */
  label: string;
  maxAddedP50Ms: number;
}

export interface ProbeSubject {
  label: string;
  target(env: BenchEnv): Promise<HttpTarget>;
  goal?: ProbeTarget;
  /** the bare proxy: what any proxy in this stack adds, which the goals' lines quote beside theirs */
  floor?: boolean;
}

/**
 * Called after the preflight (one checked request per target, the baseline first) with the
 * targets in probe order; returns the check run after the measured requests, told how many
 * requests each target got. Throws when the targets did not do what the probe is about.
 */
export type ProbeWatch = (targets: HttpTarget[]) => Promise<(requestsPerTarget: number) => Promise<void>>;

export interface LatencyProbe {
  label: string;
  spec: ProbeSpec;
  baseline: ProbeSubject;
  subjects: ProbeSubject[];
  /** printed under the probe table */
  note?: string;
  watch?: ProbeWatch;
}

const direct: ProbeSubject = { label: 'Direct (mock upstream)', target: (env) => env.mock() };
const bareProxy: ProbeSubject = { label: FLOOR, target: (env) => env.floor(), floor: true };

/** A bridged turn: `POST /v1/responses` naming a session, served over the owner's upstream WebSocket. */
export const BRIDGE_SESSION_ID = 'bench-bridge';
const BRIDGE_BODY = { model: 'gpt-5', input: 'hi', store: false };

const FORWARDS = 'tollgate_bridge_forwards_total';
const OWNED = 'tollgate_bridge_owned_sessions';

/**
 * The owner-forward probe measures what it claims only if A served every one of its turns
 * itself and B forwarded every one of its turns to A: checked with each replica's own bridge
 * metrics (forwards by outcome, owned sessions), before and after the measured requests.
 */
const checkOwnerForwarding: ProbeWatch = async ([owner, , forwarder]) => {
  const before = {
    ownerForwards: await metricValue(owner, FORWARDS),
    forwarderOk: await metricValue(forwarder, FORWARDS, { outcome: 'ok' }),
    forwarderAll: await metricValue(forwarder, FORWARDS),
  };
  const ownership = async () => {
    const [ownerSessions, forwarderSessions] = [await metricValue(owner, OWNED), await metricValue(forwarder, OWNED)];
    if (ownerSessions < 1 || forwarderSessions !== 0) {
      throw new Error(`session not owned by A: A holds ${ownerSessions} bridge session(s), B holds ${forwarderSessions}`);
    }
  };
  await ownership();
  return async (requestsPerTarget) => {
    await ownership();
    const ownerForwards = (await metricValue(owner, FORWARDS)) - before.ownerForwards;
    const forwarderOk = (await metricValue(forwarder, FORWARDS, { outcome: 'ok' })) - before.forwarderOk;
    const forwarderAll = (await metricValue(forwarder, FORWARDS)) - before.forwarderAll;
    if (ownerForwards !== 0 || forwarderOk !== requestsPerTarget || forwarderAll !== requestsPerTarget) {
      throw new Error(
        `expected A to serve its ${requestsPerTarget} turns locally and B to forward all of its ${requestsPerTarget} to A; ` +
          `A forwarded ${ownerForwards}, B forwarded ${forwarderAll} (${forwarderOk} ok)`,
      );
    }
  };
};

export const LATENCY_PROBES: LatencyProbe[] = [
  {
    label: 'SSE time to first byte (stream: true)',
    spec: { path: RESPONSES_PATH, body: { ...SMALL_BODY, stream: true }, until: 'first-byte', contentType: 'text/event-stream' },
    baseline: direct,
    subjects: [
      bareProxy,
      { label: 'Gateway, memory store', target: gateway.memory, goal: { label: 'SSE TTFB, memory store, adds', maxAddedP50Ms: 0.3 } },
      { label: 'Gateway, Redis store', target: gateway.redis, goal: { label: 'SSE TTFB, Redis store, adds', maxAddedP50Ms: 0.5 } },
    ],
  },
  {
    label: 'Non-streamed JSON, whole response, no concurrent load',
    spec: { path: RESPONSES_PATH, body: SMALL_BODY, until: 'end', contentType: 'application/json' },
    baseline: direct,
    subjects: [bareProxy, { label: 'Gateway, memory store', target: gateway.memory }],
  },
  {
    label: 'Bridged turn (session-id), non-streamed JSON, whole response',
    spec: {
      path: RESPONSES_PATH,
      body: BRIDGE_BODY,
      headers: { 'session-id': BRIDGE_SESSION_ID },
      until: 'end',
      contentType: 'application/json',
    },
    baseline: { label: 'Replica A, session owner: served locally', target: gateway.redis },
    subjects: [
      {
        label: 'Bare proxy hop to A (the floor of a hop)',
        target: async (env) => env.bareHopTo('bare hop to replica A', await gateway.redis(env), ['authorization', 'session-id']),
        floor: true,
      },
      { label: 'Replica B: owner-forward hop to A', target: gateway.redisB, goal: { label: 'owner-forward hop adds', maxAddedP50Ms: 1 } },
    ],
    note: [
      `Bridged turn: POST ${RESPONSES_PATH} ${JSON.stringify(BRIDGE_BODY)}, session-id: ${BRIDGE_SESSION_ID}; two Redis-store`,
      'replicas (same Redis and internal secret, own instance ids). A got the first turn and owns the session (one upstream',
      "WebSocket); B forwards each of its turns to A's internal port with a signed context; the bare hop is the floor's",
      "Fastify+undici pass-through in front of A's public port (passing authorization and session-id). Checked with the replicas'",
      'bridge metrics: A forwarded none of its turns, B forwarded every one of its turns (outcome ok).',
    ].join('\n'),
    watch: checkOwnerForwarding,
  },
];
