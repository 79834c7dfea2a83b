import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import type { History, HistoryPoint } from './api';

const PALETTE = ['#2f7ed8', '#e8743b', '#19a979', '#ed4a7b', '#945ecf', '#13a4b4', '#b0a21c', '#6c757d'];

export type Metric = 'requests' | 'total_tokens' | 'errors';
const valueOf = (p: HistoryPoint, metric: Metric): number => (metric === 'errors' ? p.errors.rate_limited + p.errors.client_error + p.errors.server_error : p[metric]);

const BUCKET_MS = { hour: 3_600_000, day: 86_400_000 };

/** Every bucket start of the history's range, empty buckets included, so the time axis is the range. */
function bucketTimes(history: History): number[] {
  const size = BUCKET_MS[history.bucket];
  const times: number[] = [];
  for (let t = Math.floor(Date.parse(history.from) / size) * size; t < Date.parse(history.to); t += size) times.push(t);
  return times;
}

/**
 * History as a stacked area chart: one band per group, each drawn as the running sum of the
 * groups below it. `label` names the chart for screen readers; the table beside it has the numbers.
 */
export function StackedChart({ history, points = history.data, metric, label, names = {} }: { history: History; points?: HistoryPoint[]; metric: Metric; label: string; names?: Record<string, string> }) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const times = bucketTimes(history);
    const groups = [...new Set(points.map((p) => p.group))].sort();
    const at = new Map(times.map((t, i) => [new Date(t).toISOString(), i]));
    const rows = groups.map((group) => {
      const row = new Array<number>(times.length).fill(0);
      for (const p of points) {
        const i = at.get(p.start);
        if (p.group === group && i !== undefined) row[i] += valueOf(p, metric);
      }
      return row;
    });
    for (let g = 1; g < rows.length; g++) rows[g] = rows[g].map((v, i) => v + rows[g - 1][i]);
    const data: uPlot.AlignedData = [times.map((t) => t / 1000), ...rows];
    const series: uPlot.Series[] = [
      {},
      ...groups.map((group, g) => ({
        label: names[group] ?? (group || '(none)'),
        stroke: PALETTE[g % PALETTE.length],
        fill: PALETTE[g % PALETTE.length] + '55',
        points: { show: false },
      })),
    ];
    // bands fill between neighbours, so each area shows its own share
    const bands = groups.slice(1).map((_, g) => ({ series: [g + 2, g + 1] as [number, number] }));
    // the canvas cannot follow CSS: a mid grey reads on the light and the dark theme alike
    const axis = { stroke: '#8a939e', grid: { stroke: 'rgba(128, 128, 128, 0.25)' }, ticks: { stroke: 'rgba(128, 128, 128, 0.25)' } };
    const options = { width: el.clientWidth || 600, height: 240, series, bands, scales: { y: { range: (_u: uPlot, _min: number, max: number): uPlot.Range.MinMax => [0, Math.max(1, max)] } }, axes: [axis, { ...axis, size: 60 }] };
    const plot = new uPlot(options, data, el);
    const resize = new ResizeObserver(() => plot.setSize({ width: el.clientWidth, height: 240 }));
    resize.observe(el);
    return () => {
      resize.disconnect();
      plot.destroy();
    };
    // by content: callers pass derived arrays and objects anew on every render
  }, [history, JSON.stringify(points), metric, JSON.stringify(names)]);
  return (
    <figure class="chart" aria-label={label} data-testid={`chart-${metric}`} data-total={points.reduce((s, p) => s + valueOf(p, metric), 0)}>
      <figcaption>{label}</figcaption>
      <div ref={box} />
    </figure>
  );
}

/** A limit as a meter: how much of it is used, with the numbers spelled out. */
export function Gauge({ label, value, max, resetAt }: { label: string; value: number; max: number; resetAt: string }) {
  return (
    <div class="gauge">
      <label>
        <span>{label}</span>
        <meter min={0} max={max} value={value} high={max * 0.8} optimum={0} aria-label={label} />
        <span class="gauge-figures">
          {value} / {max}
        </span>
      </label>
      <small>resets {new Date(resetAt).toLocaleString()}</small>
    </div>
  );
}
