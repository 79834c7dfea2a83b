import { useState } from 'preact/hooks';
import { historyQuery, type History, type Range, type UsageReport } from '../api';
import { Gauge, StackedChart } from '../chart';
import { ErrorNote, HistoryTable, RangePicker } from './common';

/**
 * A key holder's own page: the key stays in this page's memory only and goes out as `x-api-key`
 * to `/v1/usage` and `/v1/usage/history`, exactly as a client would send it.
 */
export function MePage({ note }: { note?: string }) {
  const [key, setKey] = useState('');
  const [range, setRange] = useState<Range>('7d');
  const [report, setReport] = useState<UsageReport | null>(null);
  const [history, setHistory] = useState<History | null>(null);
  const [error, setError] = useState('');
  const load = async (secret: string, shown: Range) => {
    const get = async <T,>(path: string): Promise<T> => {
      const res = await fetch(path, { headers: { 'x-api-key': secret, accept: 'application/json' }, credentials: 'omit' });
      const body = await res.json();
      if (!res.ok) throw new Error(body?.error?.message ?? `${res.status}`);
      return body as T;
    };
    try {
      const [usage, past] = await Promise.all([get<UsageReport>('/v1/usage'), get<History>(`/v1/usage/history?${historyQuery(shown, 'model')}`)]);
      setReport(usage);
      setHistory(past);
      setError('');
    } catch (err) {
      setReport(null);
      setHistory(null);
      setError((err as Error).message);
    }
  };
  const submit = (event: Event) => {
    event.preventDefault();
    const secret = ((event.currentTarget as HTMLFormElement).elements.namedItem('key') as HTMLInputElement).value.trim();
    setKey(secret);
    void load(secret, range);
  };
  return (
    <main>
      <h1>My usage</h1>
      {note && <p>{note}</p>}
      <form class="inline" onSubmit={submit}>
        <label>
          Your API key
          <input name="key" type="password" autocomplete="off" required />
        </label>
        <button type="submit">Show my usage</button>
      </form>
      <p class="hint">The key stays in this page only; nothing is stored.</p>
      <ErrorNote error={error} />
      {report && (
        <section aria-labelledby="me-key">
          <h2 id="me-key">Key {report.key.name}</h2>
          <dl class="totals" data-testid="me-totals">
            <div>
              <dt>Requests</dt>
              <dd data-testid="me-requests">{report.request_count}</dd>
            </div>
            <div>
              <dt>Input tokens</dt>
              <dd data-testid="me-input">{report.input_tokens}</dd>
            </div>
            <div>
              <dt>Output tokens</dt>
              <dd data-testid="me-output">{report.output_tokens}</dd>
            </div>
            <div>
              <dt>Total tokens</dt>
              <dd data-testid="me-total">{report.total_tokens}</dd>
            </div>
          </dl>
          <p>Models: {report.key.allowed_models?.join(', ') ?? 'all'}. Expires: {report.key.expires_at ? new Date(report.key.expires_at).toLocaleString() : 'never'}.</p>
          <div class="gauges">
            {report.limits.map((l) => (
              <Gauge label={`${l.limit_type} ${l.limit_window}`} value={l.current_value} max={l.max_value} resetAt={l.reset_at} />
            ))}
          </div>
          <RangePicker
            value={range}
            onChange={(next) => {
              setRange(next);
              void load(key, next);
            }}
          />
          {history && (
            <>
              <StackedChart history={history} metric="total_tokens" label="My tokens by model" />
              <HistoryTable history={history} />
            </>
          )}
        </section>
      )}
      <p>
        <a href="/dashboard">Admin dashboard</a>
      </p>
    </main>
  );
}
