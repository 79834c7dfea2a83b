/** Plain-text tables for the bench's results. */
import type { LatencyResult, LoadResult } from './measure.js';

/** The targets for a gateway scenario, against direct in the same run. */
export const MIN_THROUGHPUT_RATIO = 0.5;
export const MAX_ADDED_P50_MS = 2;

export type Outcome<T> = { ok: true; value: T } | { ok: false; error: string };

export interface LoadRow {
  label: string;
  baseline: boolean;
  targets: boolean;
  outcome: Outcome<LoadResult>;
}

export interface ProbeRow {
  label: string;
  /** the target for the probe's first subject, if it has one */
  target?: { label: string; maxAddedP50Ms: number };
  outcome: Outcome<{ baseline: { label: string; result: LatencyResult }; subjects: { label: string; result: LatencyResult }[] }>;
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
      String(r.total),
      String(r.non2xx + r.errors),
    ];
  });
  return table(
    ['scenario', 'req/s', 'vs direct', 'p50 ms', 'p99 ms', 'added p50', 'added p99', 'server CPU µs/req', 'requests', 'errors'],
    body,
  );
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

export function targetLines(rows: LoadRow[], direct: LoadResult, probeRows: ProbeRow[] = []): string {
  const mark = (met: boolean) => (met ? 'met' : 'MISSED');
  const lines = [
    `Targets (issue): a gateway serves >= ${pct(MIN_THROUGHPUT_RATIO)} of direct req/s and adds < ${MAX_ADDED_P50_MS} ms p50, under the same load`,
  ];
  for (const row of rows.filter((r) => r.targets)) {
    if (!row.outcome.ok) {
      lines.push(`  ${row.label}: not measured (failed)`);
      continue;
    }
    const r = row.outcome.value;
    const ratio = r.requestsPerSec / direct.requestsPerSec;
    const added = r.p50 - direct.p50;
    lines.push(
      `  ${row.label}: throughput ${pct(ratio)} of direct -> ${mark(ratio >= MIN_THROUGHPUT_RATIO)}; ` +
        `added p50 ${signedMs(added)} ms -> ${mark(added < MAX_ADDED_P50_MS)}`,
    );
  }
  for (const row of probeRows) {
    if (!row.target) continue;
    const head = `${row.target.label} < ${row.target.maxAddedP50Ms} ms p50`;
    const subject = row.outcome.ok ? row.outcome.value.subjects[0] : undefined;
    if (!row.outcome.ok || !subject) {
      lines.push(`  ${head}: not measured (${row.label} failed)`);
      continue;
    }
    const { baseline } = row.outcome.value;
    const addedP50 = subject.result.p50 - baseline.result.p50;
    const addedP99 = subject.result.p99 - baseline.result.p99;
    lines.push(
      `  ${head}: ${mark(addedP50 < row.target.maxAddedP50Ms)} (measured ${signedMs(addedP50)} ms p50, ${signedMs(addedP99)} ms p99; ` +
        `p50 ${ms(subject.result.p50)} vs ${ms(baseline.result.p50)} ms, sequential, no load)`,
    );
  }
  return lines.join('\n');
}
