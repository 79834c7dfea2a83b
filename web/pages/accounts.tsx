import { useState } from 'preact/hooks';
import { api, type Account } from '../api';
import { ErrorNote, HeadRow } from './common';
import { useApi } from './hooks';

export function AccountsPage() {
  const accounts = useApi<{ data: Account[] }>('/admin/accounts');
  const [error, setError] = useState('');
  const act = async (account: Account, action: 'enable' | 'disable') => {
    try {
      await api(`/admin/accounts/${encodeURIComponent(account.id)}/${action}`, { method: 'POST' });
      setError('');
      accounts.reload();
    } catch (err) {
      setError((err as Error).message);
    }
  };
  return (
    <>
      <ErrorNote error={error || accounts.error} />
      <div class="table-wrap">
        <table>
          <HeadRow columns={['Account', 'Provider', 'State', 'Cooldown until', 'In flight', 'Recent tokens', 'Action']} />
          <tbody>
            {accounts.data?.data.map((a) => (
              <tr data-account={a.id}>
                <td>{a.id}</td>
                <td>{a.provider}</td>
                <td class={`state-${a.state}`}>{a.state}</td>
                <td>{a.cooldown_until ? new Date(a.cooldown_until).toLocaleString() : '—'}</td>
                <td>{a.in_flight}</td>
                <td>{a.recent_tokens}</td>
                <td>
                  {a.state === 'disabled' ? (
                    <button type="button" class="secondary" onClick={() => act(a, 'enable')} aria-label={`Enable ${a.id}`}>
                      Enable
                    </button>
                  ) : (
                    <button type="button" class="danger" onClick={() => act(a, 'disable')} aria-label={`Disable ${a.id}`}>
                      Disable
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <button type="button" class="secondary" onClick={accounts.reload}>
        Refresh
      </button>
    </>
  );
}
