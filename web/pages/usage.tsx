import { useMemo, useState } from 'preact/hooks';
import { api, type History, type Key, type Range } from '../api';
import { StackedChart } from '../chart';
import { ErrorNote, HistoryTable, RangePicker } from './common';
import { useApi, useHistory } from './hooks';

type GroupBy = History['group_by'];

export function UsagePage() {
  const [range, setRange] = useState<Range>('24h');
  const [groupBy, setGroupBy] = useState<GroupBy>('key');
  const [error, setError] = useState('');
  const history = useHistory(range, groupBy);
  const { query } = history;
  const keys = useApi<{ data: Key[] }>('/admin/keys');
  const names = useMemo(() => (groupBy === 'key' ? Object.fromEntries((keys.data?.data ?? []).map((k) => [k.id, k.name])) : {}), [keys.data, groupBy]);
  const exportCsv = async () => {
    try {
      const csv = await api<string>(`/admin/usage?${query}`, { headers: { accept: 'text/csv' }, text: true });
      const link = document.createElement('a');
      link.href = URL.createObjectURL(new Blob([csv], { type: 'text/csv' }));
      link.download = `tollgate-usage-by-${groupBy}.csv`;
      link.click();
      URL.revokeObjectURL(link.href);
    } catch (err) {
      setError((err as Error).message);
    }
  };
  return (
    <>
      <div class="controls">
        <RangePicker value={range} onChange={setRange} />
        <label class="inline">
          Group by
          <select value={groupBy} onChange={(e) => setGroupBy((e.currentTarget as HTMLSelectElement).value as GroupBy)}>
            <option value="key">key</option>
            <option value="model">model</option>
            <option value="account">account</option>
          </select>
        </label>
        <button type="button" class="secondary" onClick={exportCsv}>
          Export CSV
        </button>
      </div>
      <ErrorNote error={error || history.error} />
      {history.data && (
        <>
          <div class="charts">
            <StackedChart history={history.data} metric="requests" label={`Requests by ${groupBy}`} names={names} />
            <StackedChart history={history.data} metric="total_tokens" label={`Tokens by ${groupBy}`} names={names} />
          </div>
          <HistoryTable history={history.data} names={names} />
        </>
      )}
    </>
  );
}
