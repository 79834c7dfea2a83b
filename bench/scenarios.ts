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
  /** whether the targets (≥ 50% of direct req/s, < 2 ms added p50) apply */
  targets?: boolean;
  target(env: BenchEnv): Promise<HttpTarget>;
  path: string;
  body: object;
}

export const LOAD_SCENARIOS: LoadScenario[] = [
  { label: 'Direct (mock upstream)', baseline: true, target: (env) => env.mock(), path: RESPONSES_PATH, body: SMALL_BODY },
  // not a target: what a bare Fastify + undici pass-through costs, so the gateway's own share shows
  { label: 'Bare Fastify+undici proxy', target: (env) => env.floor(), path: RESPONSES_PATH, body: SMALL_BODY },
  { label: 'Gateway, memory store', targets: true, target: gateway.memory, path: RESPONSES_PATH, body: SMALL_BODY },
  { label: 'Gateway, Redis store', targets: true, target: gateway.redis, path: RESPONSES_PATH, body: SMALL_BODY },
];

export interface ProbeSubject {
  label: string;
  target(env: BenchEnv): Promise<HttpTarget>;
}

/** An issue target for a probe: its first subject adds less than this p50 over the baseline. */
export interface ProbeTarget {
  /** what the target line says, e.g. "owner-forward hop adds" */
  label: string;
  maxAddedP50Ms: number;
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
  target?: ProbeTarget;
}

const direct: ProbeSubject = { label: 'Direct (mock upstream)', target: (env) => env.mock() };

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
const checkOwnerForwarding: ProbeWatch = async ([owner, forwarder]) => {
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
    subjects: [{ label: 'Gateway, memory store', target: gateway.memory }],
  },
  {
    label: 'Non-streamed JSON, whole response, no concurrent load',
    spec: { path: RESPONSES_PATH, body: SMALL_BODY, until: 'end', contentType: 'application/json' },
    baseline: direct,
    subjects: [{ label: 'Gateway, memory store', target: gateway.memory }],
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
    subjects: [{ label: 'Replica B: owner-forward hop to A', target: gateway.redisB }],
    note: [
      `Bridged turn: POST ${RESPONSES_PATH} ${JSON.stringify(BRIDGE_BODY)}, session-id: ${BRIDGE_SESSION_ID}; two Redis-store`,
      'replicas (same Redis and internal secret, own instance ids). A got the first turn and owns the session (one upstream',
      "WebSocket); B forwards each of its turns to A's internal port with a signed context. Checked with the replicas'",
      'bridge metrics: A forwarded none of its turns, B forwarded every one of its turns (outcome ok).',
    ].join('\n'),
    watch: checkOwnerForwarding,
    target: { label: 'owner-forward hop adds', maxAddedP50Ms: 1 },
  },
];
