import { useState } from 'preact/hooks';
import type { Range, Replica } from '../api';
import { StackedChart } from '../chart';
import { ErrorNote, HeadRow, RangePicker, Totals } from './common';
import { useApi, useHistory } from './hooks';

export function OverviewPage() {
  const [range, setRange] = useState<Range>('24h');
  const history = useHistory(range, 'model');
  const replicas = useApi<{ data: Replica[] }>('/dashboard/api/replicas');
  return (
    <>
      <RangePicker value={range} onChange={setRange} />
      <ErrorNote error={history.error || replicas.error} />
      {history.data && (
        <>
          <Totals history={history.data} />
          <div class="charts">
            <StackedChart history={history.data} metric="requests" label="Requests by model" />
            <StackedChart history={history.data} metric="total_tokens" label="Tokens by model" />
            <StackedChart history={history.data} metric="errors" label="Errors by model" />
          </div>
        </>
      )}
      <h2>Replicas, live</h2>
      {replicas.data && (
        <div class="table-wrap">
          <table>
            <HeadRow columns={['Replica', 'Last heartbeat', 'Streams in flight', 'Bridge sessions', 'WebSocket sessions']} />
            <tbody>
              {replicas.data.data.map((r) => (
                <tr>
                  <td>{r.instance_id}</td>
                  <td>{new Date(r.last_seen).toLocaleTimeString()}</td>
                  {r.live ? (
                    <>
                      <td>{r.live.in_flight_streams}</td>
                      <td>{r.live.bridge_sessions}</td>
                      <td>{r.live.websocket_sessions}</td>
                    </>
                  ) : (
                    <td colSpan={3}>unreachable</td>
                  )}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <button type="button" class="secondary" onClick={() => (history.reload(), replicas.reload())}>
        Refresh
      </button>
    </>
  );
}
