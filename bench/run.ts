/**
 * `npm run bench`: gateway overhead against the mock upstream called directly, measured in the
 * same run. The mock, each gateway and redis-server run in child processes of their own; the
 * load generator (autocannon) runs here. Scenarios are listed in `scenarios.ts`.
 *
 * Env: BENCH_SECONDS (measured seconds per load scenario, default 8), BENCH_WARMUP_SECONDS (2),
 * BENCH_CONNECTIONS (20), BENCH_PROBE_SAMPLES (200), BENCH_BURSTS (burst sizes, "1000,2000,5000"),
 * BENCH_HELD_STREAMS (1000), BENCH_ONLY (some of "load,probes,bursts,memory,cache"; all by default),
 * BENCH_LOG_LEVEL (gateway log level, info), BENCH_CPU_PROFILE_DIR (write a V8 CPU profile of
 * the bare proxy and each gateway there), BENCH_GATEWAY_NODE_ARGS (extra node flags for each gateway
 * process, e.g. to measure a V8 setting: `--max-semi-space-size=1`).
 *
 * Exit code: 0 when everything ran (whether or not a target is met), 1 when something failed.
 */
import { execFileSync } from 'node:child_process';
import { availableParallelism, loadavg } from 'node:os';
import { burst, heldStreams, idleMemoryOf } from './burst.js';
import { CONVERSATIONS, TURNS, runCacheAffinity, type CacheRun } from './cache-affinity.js';
import { installCleanup, stopAllChildren } from './children.js';
import { BenchEnv, type HttpTarget } from './env.js';
import { load, preflight, probe, probePreflight, type LoadResult, type LoadSettings } from './measure.js';
import {
  burstTable,
  loadTable,
  memoryLines,
  probeTable,
  targetLines,
  type BurstRow,
  type LoadRow,
  type MemoryRows,
  type Outcome,
  type ProbeRow,
} from './report.js';
import {
  BURST_BODY,
  BURST_SCENARIOS,
  BURST_TTFB_MAX_RATIO,
  freshGateways,
  HEALTH_MAX_MS,
  HELD_STREAM_MAX_KIB,
  IDLE_RSS_MAX_MIB,
  LATENCY_PROBES,
  LOAD_SCENARIOS,
  RESPONSES_PATH,
} from './scenarios.js';

function numberFromEnv(name: string, fallback: number, min: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < min) throw new Error(`${name} must be a number >= ${min}, got "${raw}"`);
  return value;
}

const settings: LoadSettings = {
  seconds: numberFromEnv('BENCH_SECONDS', 8, 1),
  warmupSeconds: numberFromEnv('BENCH_WARMUP_SECONDS', 2, 0),
  connections: numberFromEnv('BENCH_CONNECTIONS', 20, 1),
};
const PROBE_SAMPLES = numberFromEnv('BENCH_PROBE_SAMPLES', 200, 1);
const PROBE_WARMUP = 20;
const BURSTS = (process.env.BENCH_BURSTS || '1000,2000,5000').split(',').map((n) => {
  const value = Number(n);
  if (!Number.isInteger(value) || value < 1) throw new Error(`BENCH_BURSTS must list positive integers, got "${n}"`);
  return value;
});
const HELD_STREAMS = numberFromEnv('BENCH_HELD_STREAMS', 1000, 1);
const PARTS = ['load', 'probes', 'bursts', 'memory', 'cache'] as const;
const ONLY = new Set((process.env.BENCH_ONLY || PARTS.join(',')).split(','));
for (const part of ONLY) if (!(PARTS as readonly string[]).includes(part)) throw new Error(`BENCH_ONLY: unknown part "${part}"`);

const progress = (text: string) => process.stderr.write(`bench: ${text}\n`);
const errorText = (err: unknown) => (err instanceof Error ? err.message : String(err));

async function attempt<T>(what: string, fn: () => Promise<T>): Promise<Outcome<T>> {
  try {
    return { ok: true, value: await fn() };
  } catch (err) {
    progress(`${what} FAILED: ${errorText(err)}`);
    return { ok: false, error: errorText(err) };
  }
}

function commit(): string {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return 'unknown';
  }
}

async function runLoadScenarios(env: BenchEnv, all: boolean): Promise<LoadRow[]> {
  const rows: LoadRow[] = [];
  for (const scenario of LOAD_SCENARIOS.filter((s) => all || s.baseline)) {
    const connections = scenario.connections ?? settings.connections;
    progress(`${scenario.label}: ${settings.warmupSeconds} s warm-up + ${settings.seconds} s, ${connections} connections`);
    const outcome = await attempt(scenario.label, async () => {
      const target = await scenario.target(env);
      await preflight(target, scenario.path, scenario.body);
      const result = await load(target, scenario.path, scenario.body, { ...settings, connections }, scenario.redis ? await env.redis() : undefined);
      const bad = result.non2xx + result.errors;
      // a handful of resets can happen; more means the figures are not about successful requests
      if (result.non2xx > 0 || bad > result.total * 0.001) {
        throw new Error(`${result.non2xx} non-2xx answers and ${result.errors} errors (${result.timeouts} timeouts) in ${result.total} requests`);
      }
      return result;
    });
    if (outcome.ok) {
      const r = outcome.value;
      progress(`  ${Math.round(r.requestsPerSec)} req/s, p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms`);
    }
    rows.push({
      label: scenario.label,
      baseline: scenario.baseline ?? false,
      targets: scenario.targets ?? false,
      cpuTarget: scenario.cpuTarget,
      maxRedisCommands: scenario.maxRedisCommands,
      outcome,
    });
  }
  return rows;
}

async function runProbes(env: BenchEnv): Promise<ProbeRow[]> {
  const rows: ProbeRow[] = [];
  for (const p of LATENCY_PROBES) {
    progress(`${p.label}: ${PROBE_WARMUP} warm-up + ${PROBE_SAMPLES} sequential requests per target`);
    const outcome = await attempt(p.label, async () => {
      const subjects = [p.baseline, ...p.subjects];
      const targets = await Promise.all(subjects.map((s) => s.target(env)));
      await probePreflight(targets, p.spec);
      const check = await p.watch?.(targets);
      const [base, ...rest] = await probe(targets, p.spec, PROBE_WARMUP, PROBE_SAMPLES);
      await check?.(PROBE_WARMUP + PROBE_SAMPLES);
      progress(
        `  ${[base, ...rest].map((r, i) => `${subjects[i].label}: p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms`).join('; ')}`,
      );
      return {
        baseline: { label: p.baseline.label, result: base },
        subjects: p.subjects.map((s, i) => ({ label: s.label, result: rest[i], goal: s.goal, floor: s.floor })),
      };
    });
    rows.push({ label: p.label, outcome });
  }
  return rows;
}

async function runBursts(env: BenchEnv): Promise<BurstRow[]> {
  const rows: BurstRow[] = [];
  for (const streams of BURSTS) {
    for (const scenario of BURST_SCENARIOS) {
      progress(`burst: ${streams} streams at once through ${scenario.label}`);
      const outcome = await attempt(`burst ${streams} ${scenario.label}`, async () => {
        const target = await scenario.target(env);
        await preflight(target, RESPONSES_PATH, BURST_BODY);
        return burst(target, RESPONSES_PATH, BURST_BODY, streams, scenario.health);
      });
      if (outcome.ok) {
        const r = outcome.value;
        progress(`  TTFB p50 ${r.ttfbP50.toFixed(1)} ms, /health/live worst ${scenario.health ? r.healthWorstMs.toFixed(1) + ' ms' : '—'}`);
      }
      rows.push({ label: scenario.label, streams, floor: scenario.floor, outcome });
    }
  }
  return rows;
}

/** Runs `fn` on a replica started for it alone, stopped afterwards. */
async function withFresh<T>(start: () => Promise<HttpTarget>, fn: (target: HttpTarget) => Promise<T>): Promise<T> {
  const target = await start();
  try {
    await preflight(target, RESPONSES_PATH, BURST_BODY);
    return await fn(target);
  } finally {
    await target.stop?.();
  }
}

async function runMemory(env: BenchEnv): Promise<MemoryRows> {
  progress('memory: idle RSS of fresh replicas');
  const idleMemory = await attempt('idle RSS (memory)', () => withFresh(() => freshGateways.memory(env), (t) => idleMemoryOf(t)));
  const idleRedis = await attempt('idle RSS (Redis)', () => withFresh(() => freshGateways.redis(env), (t) => idleMemoryOf(t)));
  progress(`memory: ${HELD_STREAMS} + ${HELD_STREAMS} held streams through a fresh replica`);
  const held = await attempt('held streams', () =>
    withFresh(
      () => freshGateways.memory(env),
      async (target) => {
        // warm: what one burst of ordinary requests allocates is not counted as held-stream memory
        await burst(target, RESPONSES_PATH, BURST_BODY, Math.min(HELD_STREAMS, 500));
        return heldStreams(target, await env.mock(), RESPONSES_PATH, BURST_BODY, HELD_STREAMS);
      },
    ),
  );
  return { idleMemory, idleRedis, held };
}

async function main(): Promise<number> {
  installCleanup();
  const loadBefore = loadavg()[0];
  const env = new BenchEnv();
  let loadRows: LoadRow[];
  let probeRows: ProbeRow[] = [];
  let burstRows: BurstRow[] = [];
  const notRun: Outcome<never> = { ok: false, error: 'not run (BENCH_ONLY)' };
  let memory: MemoryRows = { idleMemory: notRun, idleRedis: notRun, held: notRun };
  let cacheRuns: Outcome<CacheRun[]> = notRun;
  try {
    // the baseline always runs: every other figure is read against it
    loadRows = await runLoadScenarios(env, ONLY.has('load'));
    // memory first: its replicas are fresh, and the machine has not been loaded by us yet
    if (ONLY.has('memory')) memory = await runMemory(env);
    if (ONLY.has('probes')) probeRows = await runProbes(env);
    if (ONLY.has('bursts')) burstRows = await runBursts(env);
    if (ONLY.has('cache')) {
      progress(`Prompt-cache affinity: ${CONVERSATIONS} conversations x ${TURNS} turns over 3 replicas, 3 accounts`);
      cacheRuns = await attempt('Prompt-cache affinity', () => runCacheAffinity(env));
    }
  } finally {
    await stopAllChildren();
  }

  const baseline = loadRows.find((r) => r.baseline);
  if (!baseline?.outcome.ok) {
    console.error(`bench: the baseline (${baseline?.label ?? 'none'}) did not run; nothing to compare with`);
    return 1;
  }
  const direct: LoadResult = baseline.outcome.value;
  const body = LOAD_SCENARIOS.find((s) => s.baseline)!;

  const cpus = availableParallelism();
  console.log('');
  console.log(`Tollgate bench: node ${process.version}, ${cpus} CPUs, commit ${commit()}`);
  console.log(
    `Load: autocannon in the bench process, ${settings.connections} connections, ${settings.warmupSeconds} s warm-up + ` +
      `${settings.seconds} s measured per scenario; POST ${body.path} ${JSON.stringify(body.body)}. ` +
      `Mock, each gateway (compiled dist/, log level ${process.env.BENCH_LOG_LEVEL ?? 'info'}) and redis-server are separate processes.`,
  );
  console.log(`1-min load average: ${loadBefore.toFixed(2)} before the run (${cpus} CPUs).`);
  if (loadBefore > cpus / 2) {
    console.log('WARNING: other processes were busy when the run started; req/s and latencies are noisy (server CPU/req less so).');
  }
  console.log('');
  console.log(loadTable(loadRows, direct));
  console.log('server CPU µs/req: user+system CPU of the serving process (mock for direct, else the gateway alone) per request.');
  console.log('');
  console.log(
    `Sequential latency (no concurrent load): one checked request per target (baseline first), then ${PROBE_SAMPLES} ` +
      `requests per target after ${PROBE_WARMUP} warm-up, targets alternating`,
  );
  console.log('');
  console.log(probeTable(probeRows));
  for (const p of LATENCY_PROBES) if (p.note) console.log(p.note);
  console.log('');
  console.log(
    `Bursts: N streamed requests (POST ${RESPONSES_PATH} ${JSON.stringify(BURST_BODY)}) sent at once from a child process, one ` +
      'connection each; TTFB from the moment they were sent. Meanwhile the bench sends GET /health/live to the same process, ' +
      'one at a time on one connection.',
  );
  console.log('');
  console.log(burstTable(burstRows));
  console.log('');
  console.log(memoryLines(memory));
  console.log('');
  console.log(
    targetLines(loadRows, direct, probeRows, burstRows, memory, {
      burstTtfbMaxRatio: BURST_TTFB_MAX_RATIO,
      healthMaxMs: HEALTH_MAX_MS,
      idleRssMaxMiB: IDLE_RSS_MAX_MIB,
      heldStreamMaxKiB: HELD_STREAM_MAX_KIB,
    }),
  );

  if (cacheRuns.ok) {
    console.log('');
    console.log(
      `Prompt-cache affinity: ${CONVERSATIONS} conversations x ${TURNS} turns, each turn on the next of 3 Redis replicas with ` +
        '3 accounts; a hit is a turn whose account served the conversation\'s previous turn (ideal: all but the first).',
    );
    for (const run of cacheRuns.value) console.log(`- ${run.label}: ${run.hits}/${run.ideal} cache hits (${((run.hits / run.ideal) * 100).toFixed(1)} % of ideal)`);
  }

  const optionalFailures = [...Object.entries(memory), ['Prompt-cache affinity', cacheRuns] as const].flatMap(([label, outcome]) =>
    outcome.ok || outcome.error === notRun.error ? [] : [{ label, outcome }],
  );
  const failures = [...loadRows, ...probeRows, ...burstRows, ...optionalFailures].filter((r) => !r.outcome.ok);
  if (failures.length > 0) {
    console.log('');
    console.log(`${failures.length} scenario(s) failed to run:`);
    for (const f of failures) if (!f.outcome.ok) console.log(`- ${f.label}: ${f.outcome.error}`);
    return 1;
  }
  return 0;
}

main().then(
  (code) => process.exit(code),
  async (err: unknown) => {
    console.error('bench failed:', err);
    await stopAllChildren().catch(() => {});
    process.exit(1);
  },
);
