/**
 * What the bench measures. Add a scenario by adding an entry: a load scenario names the target
 * it sends the same load to; a probe compares sequential latency of targets with a baseline.
 */
import { INTERNAL_SECRET, type BenchEnv, type GatewayConfigPatch, type HttpTarget } from './env.js';
import type { ProbeSpec } from './measure.js';

export const RESPONSES_PATH = '/v1/responses';
export const SMALL_BODY = { model: 'gpt-5', input: 'hi' };

/** Gateway variants, by name; each one is started once, the first time a scenario needs it. */
const withRedis: GatewayConfigPatch = async (env) => ({ redis: { url: await env.redis() }, internalSecret: INTERNAL_SECRET });
const gateway = {
  memory: (env: BenchEnv) => env.gateway('memory'),
  redis: (env: BenchEnv) => env.gateway('redis', withRedis),
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
  { label: 'Gateway, memory store', targets: true, target: gateway.memory, path: RESPONSES_PATH, body: SMALL_BODY },
  { label: 'Gateway, Redis store', targets: true, target: gateway.redis, path: RESPONSES_PATH, body: SMALL_BODY },
];

export interface ProbeSubject {
  label: string;
  target(env: BenchEnv): Promise<HttpTarget>;
}

export interface LatencyProbe {
  label: string;
  spec: ProbeSpec;
  baseline: ProbeSubject;
  subjects: ProbeSubject[];
}

const direct: ProbeSubject = { label: 'Direct (mock upstream)', target: (env) => env.mock() };

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
];
