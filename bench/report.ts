/** Plain-text tables for the bench's results. */
import type { BurstResult, HeldResult, IdleMemory } from './burst.js';
import type { LatencyResult, LoadResult } from './measure.js';

/** The issue's targets for a gateway scenario, against direct in the same run. */
export const MIN_THROUGHPUT_RATIO = 0.5;
export const MAX_ADDED_P50_MS = 2;

export type Outcome<T> = { ok: true; value: T } | { ok: false; error: string };

export interface LoadRow {
  label: string;
  baseline: boolean;
  targets: boolean;
  cpuTarget?: { floor: string; maxRatio: number };
  maxRedisCommands?: number;
  outcome: Outcome<LoadResult>;
}

type ProbeGoal = { label: string; maxAddedP50Ms: number };
export interface ProbeRow {
  label: string;
  outcome: Outcome<{
    baseline: { label: string; result: LatencyResult };
    subjects: { label: string; result: LatencyResult; goal?: ProbeGoal; floor?: boolean }[];
  }>;
}

export interface BurstRow {
  label: string;
  streams: number;
  /** the row (same burst size) whose TTFB p50 this one is held to */
  floor?: string;
  outcome: Outcome<BurstResult>;
}

export interface MemoryRows {
  idleMemory: Outcome<IdleMemory>;
  idleRedis: Outcome<IdleMemory>;
  held: Outcome<HeldResult>;
}

export interface Goals {
  burstTtfbMaxRatio: number;
  healthMaxMs: number;
  idleRssMaxMiB: number;
  heldStreamMaxKiB: number;
}

const ms = (value: number) => value.toFixed(2);
const signedMs = (value: number) => (value >= 0 ? '+' : '') + value.toFixed(2);
const pct = (ratio: number) => (ratio * 100).toFixed(1) + '%';

/** Columns: the first left-aligned, the rest right-aligned. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join('  ').trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

export function loadTable(rows: LoadRow[], direct: LoadResult): string {
  const body = rows.map((row): string[] => {
    if (!row.outcome.ok) return [row.label, `FAILED: ${row.outcome.error.split('\n')[0]}`];
    const r = row.outcome.value;
    const vs = row.baseline;
    return [
      row.label,
      Math.round(r.requestsPerSec).toString(),
      pct(r.requestsPerSec / direct.requestsPerSec),
      ms(r.p50),
      ms(r.p99),
      vs ? '—' : signedMs(r.p50 - direct.p50),
      vs ? '—' : signedMs(r.p99 - direct.p99),
      r.cpuMicrosPerRequest === undefined ? '—' : Math.round(r.cpuMicrosPerRequest).toString(),
      r.redis ? Math.round(r.redis.cpuMicros).toString() : '—',
      r.redis ? r.redis.commands.toFixed(2) : '—',
      String(r.total),
      String(r.non2xx + r.errors),
    ];
  });
  const notes = rows.flatMap((row) =>
    row.outcome.ok && row.outcome.value.redis ? [`  ${row.label}: Redis commands sent per request: ${row.outcome.value.redis.breakdown}`] : [],
  );
  return [
    table(
      ['scenario', 'req/s', 'vs direct', 'p50 ms', 'p99 ms', 'added p50', 'added p99', 'server CPU µs/req', 'Redis CPU µs/req', 'Redis cmds/req', 'requests', 'errors'],
      body,
    ),
    ...(notes.length ? ['', ...notes] : []),
  ].join('\n');
}

export function burstTable(rows: BurstRow[]): string {
  const body = rows.map((row): string[] => {
    const name = `${row.label}, ${row.streams} streams`;
    if (!row.outcome.ok) return [name, `FAILED: ${row.outcome.error.split('\n')[0]}`];
    const r = row.outcome.value;
    const floor = row.floor ? rows.find((f) => f.label === row.floor && f.streams === row.streams) : undefined;
    const ratio = floor?.outcome.ok ? (r.ttfbP50 / floor.outcome.value.ttfbP50).toFixed(2) + '×' : '—';
    return [name, ms(r.ttfbP50), ms(r.ttfbP99), ratio, Number.isNaN(r.healthWorstMs) ? '—' : ms(r.healthWorstMs), String(r.healthSamples), ms(r.wallMs)];
  });
  return table(['burst', 'TTFB p50 ms', 'TTFB p99 ms', 'p50 vs floor', '/health/live worst ms', 'health samples', 'all done ms'], body);
}

const mib = (value: number) => value.toFixed(1) + ' MiB';

/** RSS and where it is: file-backed (binary, libraries) vs anonymous, the V8 heap's spaces, external. */
function idleText(m: IdleMemory): string {
  const spaces = Object.entries(m.spaces)
    .map(([space, size]) => `${space} ${size.toFixed(1)}`)
    .join(', ');
  return (
    `RSS ${mib(m.rss)} = file-backed ${mib(m.file)} (node binary, libraries) + anonymous ${mib(m.anon)}; ` +
    `V8 heap ${mib(m.heapTotal)} committed, ${mib(m.heapUsed)} used (spaces, MiB: ${spaces}); external ${mib(m.external)}`
  );
}

export function memoryLines(rows: MemoryRows): string {
  const show = <T>(o: Outcome<T>, text: (v: T) => string) => (o.ok ? text(o.value) : `FAILED: ${o.error.split('\n')[0]}`);
  return [
    'Idle memory of a fresh replica (after one request):',
    `  memory store: ${show(rows.idleMemory, idleText)}`,
    `  Redis store:  ${show(rows.idleRedis, idleText)}`,
    `Held streams (fresh memory-store replica, mock holds each stream after its first event): ${show(
      rows.held,
      (h) => `RSS ${mib(h.rssFirstMiB)} with ${h.streams} held, ${mib(h.rssBothMiB)} with ${2 * h.streams}: ${h.kibPerStream.toFixed(1)} KiB per stream (the second ${h.streams})`,
    )}`,
  ].join('\n');
}

export function probeTable(rows: ProbeRow[]): string {
  const body: string[][] = [];
  for (const row of rows) {
    if (!row.outcome.ok) {
      body.push([row.label, `FAILED: ${row.outcome.error.split('\n')[0]}`]);
      continue;
    }
    const { baseline, subjects } = row.outcome.value;
    body.push([row.label]);
    body.push([`  ${baseline.label}`, ms(baseline.result.p50), ms(baseline.result.p99), '—', '—', String(baseline.result.samples)]);
    for (const s of subjects) {
      body.push([
        `  ${s.label}`,
        ms(s.result.p50),
        ms(s.result.p99),
        signedMs(s.result.p50 - baseline.result.p50),
        signedMs(s.result.p99 - baseline.result.p99),
        String(s.result.samples),
      ]);
    }
  }
  return table(['probe / target', 'p50 ms', 'p99 ms', 'added p50', 'added p99', 'samples'], body);
}

const mark = (met: boolean) => (met ? 'MET' : 'MISSED');

export function targetLines(
  rows: LoadRow[],
  direct: LoadResult,
  probeRows: ProbeRow[],
  burstRows: BurstRow[],
  memory: MemoryRows,
  goals: Goals,
): string {
  const lines = ['Targets (issues 7 and 12), each against its comparison row of this run:'];
  const loadOf = (label: string) => {
    const row = rows.find((r) => r.label === label);
    return row?.outcome.ok ? row.outcome.value : undefined;
  };
  for (const row of rows) {
    if (!row.outcome.ok) {
      if (row.targets || row.cpuTarget || row.maxRedisCommands !== undefined) lines.push(`  ${row.label}: not measured (failed)`);
      continue;
    }
    const r = row.outcome.value;
    if (row.targets) {
      const ratio = r.requestsPerSec / direct.requestsPerSec;
      const added = r.p50 - direct.p50;
      lines.push(
        `  ${row.label}: throughput ${pct(ratio)} of direct (>= ${pct(MIN_THROUGHPUT_RATIO)}) -> ${mark(ratio >= MIN_THROUGHPUT_RATIO)}; ` +
          `added p50 ${signedMs(added)} ms (< ${MAX_ADDED_P50_MS} ms) -> ${mark(added < MAX_ADDED_P50_MS)}`,
      );
    }
    if (row.cpuTarget) {
      const floor = loadOf(row.cpuTarget.floor);
      if (floor?.cpuMicrosPerRequest === undefined || r.cpuMicrosPerRequest === undefined) {
        lines.push(`  ${row.label}: server CPU not measured`);
      } else {
        const ratio = r.cpuMicrosPerRequest / floor.cpuMicrosPerRequest;
        lines.push(
          `  ${row.label}: server CPU ${Math.round(r.cpuMicrosPerRequest)} µs/req = ${ratio.toFixed(2)}× the bare proxy's ` +
            `${Math.round(floor.cpuMicrosPerRequest)} (<= ${row.cpuTarget.maxRatio}×) -> ${mark(ratio <= row.cpuTarget.maxRatio)}; ` +
            `added p50 vs the bare proxy ${signedMs(r.p50 - floor.p50)} ms`,
        );
      }
    }
    if (row.maxRedisCommands !== undefined && r.redis) {
      // the allowance: per-replica work that is not per request (usage flushes, heartbeats)
      lines.push(
        `  ${row.label}: ${r.redis.commands.toFixed(2)} Redis round trips/req (<= ${row.maxRedisCommands}, +0.1 for batched ` +
          `flushes and heartbeats) -> ${mark(r.redis.commands <= row.maxRedisCommands + 0.1)}; Redis CPU ${Math.round(r.redis.cpuMicros)} µs/req`,
      );
    }
  }
  for (const row of probeRows) {
    if (!row.outcome.ok) {
      lines.push(`  ${row.label}: not measured (failed)`);
      continue;
    }
    const { baseline, subjects } = row.outcome.value;
    const floor = subjects.find((s) => s.floor);
    for (const subject of subjects) {
      if (!subject.goal) continue;
      const addedP50 = subject.result.p50 - baseline.result.p50;
      const addedP99 = subject.result.p99 - baseline.result.p99;
      const overFloor = floor
        ? `; the bare proxy itself adds ${signedMs(floor.result.p50 - baseline.result.p50)} ms p50, the gateway ${signedMs(subject.result.p50 - floor.result.p50)} ms over it`
        : '';
      lines.push(
        `  ${subject.goal.label} <= ${subject.goal.maxAddedP50Ms} ms p50: ${mark(addedP50 <= subject.goal.maxAddedP50Ms)} ` +
          `(measured ${signedMs(addedP50)} ms p50, ${signedMs(addedP99)} ms p99; p50 ${ms(subject.result.p50)} vs ${ms(baseline.result.p50)} ms, sequential, no load${overFloor})`,
      );
    }
  }
  for (const row of burstRows) {
    if (!row.floor) continue;
    const head = `  burst of ${row.streams} through ${row.label}`;
    if (!row.outcome.ok) {
      lines.push(`${head}: not measured (failed)`);
      continue;
    }
    const r = row.outcome.value;
    const floor = burstRows.find((f) => f.label === row.floor && f.streams === row.streams);
    const ratioText = floor?.outcome.ok
      ? (() => {
          const ratio = r.ttfbP50 / floor.outcome.value.ttfbP50;
          return `TTFB p50 ${ms(r.ttfbP50)} ms = ${ratio.toFixed(2)}× the bare proxy's ${ms(floor.outcome.value.ttfbP50)} (<= ${goals.burstTtfbMaxRatio}×) -> ${mark(ratio <= goals.burstTtfbMaxRatio)}`;
        })()
      : 'TTFB vs the bare proxy not measured';
    lines.push(
      `${head}: ${ratioText}; /health/live worst ${ms(r.healthWorstMs)} ms (< ${goals.healthMaxMs}) -> ${mark(r.healthWorstMs < goals.healthMaxMs)}`,
    );
  }
  const idle = (label: string, o: Outcome<IdleMemory>) =>
    o.ok ? `${mib(o.value.rss)} (< ${goals.idleRssMaxMiB} MiB) -> ${mark(o.value.rss < goals.idleRssMaxMiB)}` : `not measured (${label} failed)`;
  lines.push(`  idle RSS, memory store: ${idle('idle memory', memory.idleMemory)}; Redis store: ${idle('idle Redis', memory.idleRedis)}`);
  lines.push(
    `  RSS per held stream: ${
      memory.held.ok
        ? `${memory.held.value.kibPerStream.toFixed(1)} KiB (<= ${goals.heldStreamMaxKiB} KiB) -> ${mark(memory.held.value.kibPerStream <= goals.heldStreamMaxKiB)}`
        : 'not measured (failed)'
    }`,
  );
  return lines.join('\n');
}
