import type { History, HistoryPoint, Range } from '../api';
import { RANGES } from '../api';

export function RangePicker({ value, onChange }: { value: Range; onChange: (range: Range) => void }) {
  return (
    <label class="inline">
      Range
      <select value={value} onChange={(e) => onChange((e.currentTarget as HTMLSelectElement).value as Range)}>
        {Object.keys(RANGES).map((r) => (
          <option value={r}>last {r}</option>
        ))}
      </select>
    </label>
  );
}

/** A table's header row, one column per label. */
export function HeadRow({ columns }: { columns: string[] }) {
  return (
    <thead>
      <tr>
        {columns.map((label) => (
          <th scope="col">{label}</th>
        ))}
      </tr>
    </thead>
  );
}

export function ErrorNote({ error }: { error: string }) {
  return error ? (
    <p role="alert" class="error">
      {error}
    </p>
  ) : null;
}

export const sum = (points: HistoryPoint[], pick: (p: HistoryPoint) => number) => points.reduce((s, p) => s + pick(p), 0);
export const errorsOf = (p: HistoryPoint) => p.errors.rate_limited + p.errors.client_error + p.errors.server_error;

export function Totals({ history }: { history: History }) {
  const d = history.data;
  const figures: [string, number][] = [
    ['Requests', sum(d, (p) => p.requests)],
    ['Input tokens', sum(d, (p) => p.input_tokens)],
    ['Output tokens', sum(d, (p) => p.output_tokens)],
    ['Total tokens', sum(d, (p) => p.total_tokens)],
    ['Errors', sum(d, errorsOf)],
  ];
  return (
    <dl class="totals">
      {figures.map(([name, value]) => (
        <div data-testid={`total-${name.toLowerCase().replace(' ', '-')}`}>
          <dt>{name}</dt>
          <dd>{value.toLocaleString('en')}</dd>
        </div>
      ))}
    </dl>
  );
}

/** The history as a table: one row per bucket and group. */
export function HistoryTable({ history, names = {} }: { history: History; names?: Record<string, string> }) {
  return (
    <div class="table-wrap">
      <table>
        <caption class="visually-hidden">Usage by {history.group_by}</caption>
        <HeadRow columns={['Start', history.group_by, 'Requests', 'Input', 'Cached', 'Output', 'Total', 'Errors']} />
        <tbody>
          {history.data.map((p) => (
            <tr>
              <td>{new Date(p.start).toLocaleString()}</td>
              <td>{names[p.group] ?? (p.group || '(none)')}</td>
              <td>{p.requests}</td>
              <td>{p.input_tokens}</td>
              <td>{p.cached_input_tokens}</td>
              <td>{p.output_tokens}</td>
              <td>{p.total_tokens}</td>
              <td>{errorsOf(p)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
