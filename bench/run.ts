/**
 * `npm run bench`: gateway overhead against the mock upstream called directly, measured in the
 * same run. The mock, each gateway and redis-server run in child processes of their own; the
 * load generator (autocannon) runs here. Scenarios are listed in `scenarios.ts`.
 *
 * Env: BENCH_SECONDS (measured seconds per load scenario, default 8), BENCH_WARMUP_SECONDS (2),
 * BENCH_CONNECTIONS (20), BENCH_PROBE_SAMPLES (200), BENCH_LOG_LEVEL (gateway log level, info),
 * BENCH_CPU_PROFILE_DIR (write a V8 CPU profile of each gateway there).
 *
 * Exit code: 0 when everything ran (whether or not a target is met), 1 when something failed.
 */
import { execFileSync } from 'node:child_process';
import { availableParallelism, loadavg } from 'node:os';
import { CONVERSATIONS, TURNS, runCacheAffinity, type CacheRun } from './cache-affinity.js';
import { installCleanup, stopAllChildren } from './children.js';
import { BenchEnv } from './env.js';
import { load, preflight, probe, probePreflight, type LoadResult, type LoadSettings } from './measure.js';
import { loadTable, probeTable, targetLines, type LoadRow, type Outcome, type ProbeRow } from './report.js';
import { LATENCY_PROBES, LOAD_SCENARIOS } from './scenarios.js';

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

async function runLoadScenarios(env: BenchEnv): Promise<LoadRow[]> {
  const rows: LoadRow[] = [];
  for (const scenario of LOAD_SCENARIOS) {
    progress(`${scenario.label}: ${settings.warmupSeconds} s warm-up + ${settings.seconds} s, ${settings.connections} connections`);
    const outcome = await attempt(scenario.label, async () => {
      const target = await scenario.target(env);
      await preflight(target, scenario.path, scenario.body);
      const result = await load(target, scenario.path, scenario.body, settings);
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
    rows.push({ label: scenario.label, baseline: scenario.baseline ?? false, targets: scenario.targets ?? false, outcome });
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
        subjects: p.subjects.map((s, i) => ({ label: s.label, result: rest[i] })),
      };
    });
    rows.push({ label: p.label, target: p.target, outcome });
  }
  return rows;
}

async function main(): Promise<number> {
  installCleanup();
  const loadBefore = loadavg()[0];
  const env = new BenchEnv();
  let loadRows: LoadRow[];
  let probeRows: ProbeRow[];
  let cacheRuns: Outcome<CacheRun[]>;
  try {
    loadRows = await runLoadScenarios(env);
    probeRows = await runProbes(env);
    progress(`Prompt-cache affinity: ${CONVERSATIONS} conversations x ${TURNS} turns over 3 replicas, 3 accounts`);
    cacheRuns = await attempt('Prompt-cache affinity', () => runCacheAffinity(env));
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
  console.log(targetLines(loadRows, direct, probeRows));

  console.log('');
  console.log(
    `Prompt-cache affinity: ${CONVERSATIONS} conversations x ${TURNS} turns, each turn on the next of 3 Redis replicas with ` +
      '3 accounts; a hit is a turn whose account served the conversation\'s previous turn (ideal: all but the first).',
  );
  if (cacheRuns.ok) {
    for (const run of cacheRuns.value) console.log(`- ${run.label}: ${run.hits}/${run.ideal} cache hits (${((run.hits / run.ideal) * 100).toFixed(1)} % of ideal)`);
  }

  const failures = [...loadRows, ...probeRows, { label: 'Prompt-cache affinity', outcome: cacheRuns }].filter((r) => !r.outcome.ok);
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
