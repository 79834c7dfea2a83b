import { useState } from 'preact/hooks';
import { api, type Key, type Limit, type Range, type UsageReport } from '../api';
import { Gauge, StackedChart } from '../chart';
import { ErrorNote, HeadRow, RangePicker } from './common';
import { useApi, useHistory } from './hooks';

const LIMIT_TYPES: Limit['limit_type'][] = ['requests', 'input_tokens', 'output_tokens', 'total_tokens'];
const LIMIT_WINDOWS: Limit['limit_window'][] = ['5h', 'daily', 'weekly', 'monthly'];
/** Limits as the CLI writes them: `type:window:max`, comma separated. */
const limitsText = (limits: Limit[]): string => limits.map((l) => `${l.limit_type}:${l.limit_window}:${l.max_value}`).join(', ');
const limitsOf = (text: string): Limit[] =>
  text
    .split(',')
    .map((part) => part.trim())
    .filter(Boolean)
    .map((part) => {
      const [limit_type, limit_window, max] = part.split(':');
      return { limit_type, limit_window, max_value: Number(max) } as Limit;
    });
const modelsOf = (text: string): string[] | null => {
  const models = text.split(',').map((m) => m.trim()).filter(Boolean);
  return models.length ? models : null;
};

function CreateKey({ onCreated }: { onCreated: () => void }) {
  const [secret, setSecret] = useState<{ name: string; key: string } | null>(null);
  const [error, setError] = useState('');
  const [copied, setCopied] = useState(false);
  const submit = async (event: Event) => {
    event.preventDefault();
    const form = event.currentTarget as HTMLFormElement;
    const field = (name: string) => (form.elements.namedItem(name) as HTMLInputElement).value;
    const max = Number(field('max_value'));
    const limits: Limit[] = max > 0 ? [{ limit_type: field('limit_type') as Limit['limit_type'], limit_window: field('limit_window') as Limit['limit_window'], max_value: max }] : [];
    try {
      const created = await api<{ name: string; key: string }>('/admin/keys', { method: 'POST', body: { name: field('name'), allowed_models: modelsOf(field('models')), limits } });
      setSecret(created);
      setCopied(false);
      setError('');
      form.reset();
      onCreated();
    } catch (err) {
      setError((err as Error).message);
    }
  };
  return (
    <section aria-labelledby="create-key">
      <h2 id="create-key">Create a key</h2>
      <form class="grid" onSubmit={submit}>
        <label>
          Name
          <input name="name" required maxLength={200} />
        </label>
        <label>
          Models (comma separated, empty = all)
          <input name="models" placeholder="gpt-5, claude-sonnet-4" />
        </label>
        <label>
          Limit
          <select name="limit_type">
            {LIMIT_TYPES.map((t) => (
              <option>{t}</option>
            ))}
          </select>
        </label>
        <label>
          per
          <select name="limit_window">
            {LIMIT_WINDOWS.map((w) => (
              <option>{w}</option>
            ))}
          </select>
        </label>
        <label>
          Max (empty = no limit)
          <input name="max_value" type="number" min={1} />
        </label>
        <button type="submit">Create key</button>
      </form>
      <ErrorNote error={error} />
      {secret && (
        <div class="secret" role="status">
          <p>
            Key <strong>{secret.name}</strong> created. Copy it now: it is shown only once.
          </p>
          <code data-testid="new-secret">{secret.key}</code>
          <button type="button" onClick={() => navigator.clipboard.writeText(secret.key).then(() => setCopied(true), () => setCopied(false))}>
            {copied ? 'Copied' : 'Copy'}
          </button>
        </div>
      )}
    </section>
  );
}

function KeyDetail({ keyRecord, onChanged }: { keyRecord: Key; onChanged: () => void }) {
  const [range, setRange] = useState<Range>('24h');
  const [error, setError] = useState('');
  const usage = useApi<UsageReport>(`/dashboard/api/keys/${encodeURIComponent(keyRecord.id)}/usage`);
  const history = useHistory(range, 'key');
  const mine = history.data?.data.filter((p) => p.group === keyRecord.id) ?? [];
  const change = async (action: () => Promise<unknown>, gone = false) => {
    try {
      await action();
      setError('');
      onChanged();
      if (!gone) usage.reload();
    } catch (err) {
      setError((err as Error).message);
    }
  };
  const path = `/admin/keys/${encodeURIComponent(keyRecord.id)}`;
  const edit = async (event: Event) => {
    event.preventDefault();
    const field = (name: string) => ((event.currentTarget as HTMLFormElement).elements.namedItem(name) as HTMLInputElement).value;
    const body = { allowed_models: modelsOf(field('models')), limits: limitsOf(field('limits')) };
    await change(() => api(path, { method: 'PATCH', body }));
  };
  return (
    <section aria-labelledby="key-detail" class="card">
      <h2 id="key-detail">Key {keyRecord.name}</h2>
      <div class="actions">
        <button type="button" class="secondary" onClick={() => change(() => api(path, { method: 'PATCH', body: { disabled: !keyRecord.disabled } }))}>
          {keyRecord.disabled ? 'Enable' : 'Disable'}
        </button>
        <button type="button" class="danger" onClick={() => confirm(`Revoke key ${keyRecord.name}? Clients using it get 401 at once.`) && change(() => api(path, { method: 'DELETE' }), true)}>
          Revoke
        </button>
      </div>
      <form class="inline" onSubmit={edit}>
        <label>
          Allowed models
          <input name="models" defaultValue={keyRecord.allowed_models?.join(', ') ?? ''} placeholder="all" />
        </label>
        <label>
          Limits
          <input name="limits" defaultValue={limitsText(keyRecord.limits)} placeholder="requests:daily:100, total_tokens:monthly:1000000" size={40} />
        </label>
        <button type="submit" class="secondary">
          Save
        </button>
      </form>
      <ErrorNote error={error || usage.error || history.error} />
      {usage.data && (
        <>
          <p data-testid="key-totals">
            {usage.data.request_count} requests, {usage.data.total_tokens} tokens all time
          </p>
          <div class="gauges">
            {usage.data.limits.map((l) => (
              <Gauge label={`${l.limit_type} ${l.limit_window}`} value={l.current_value} max={l.max_value} resetAt={l.reset_at} />
            ))}
            {usage.data.limits.length === 0 && <p>No limits.</p>}
          </div>
        </>
      )}
      <RangePicker value={range} onChange={setRange} />
      {history.data && <StackedChart history={history.data} points={mine} metric="total_tokens" label={`Tokens of ${keyRecord.name}`} names={{ [keyRecord.id]: keyRecord.name }} />}
    </section>
  );
}

export function KeysPage() {
  const keys = useApi<{ data: Key[] }>('/admin/keys');
  const [search, setSearch] = useState('');
  const [selected, setSelected] = useState<string | null>(null);
  const shown = (keys.data?.data ?? []).filter((k) => `${k.name} ${k.id}`.toLowerCase().includes(search.toLowerCase()));
  const current = keys.data?.data.find((k) => k.id === selected);
  return (
    <>
      <CreateKey onCreated={keys.reload} />
      <h2>Keys</h2>
      <label class="inline">
        Search
        <input type="search" value={search} onInput={(e) => setSearch((e.currentTarget as HTMLInputElement).value)} />
      </label>
      <ErrorNote error={keys.error} />
      <div class="table-wrap">
        <table>
          <HeadRow columns={['Name', 'Id', 'Models', 'Limits', 'State']} />
          <tbody>
            {shown.map((k) => (
              <tr aria-selected={k.id === selected}>
                <td>
                  <button type="button" class="link" onClick={() => setSelected(k.id)}>
                    {k.name}
                  </button>
                </td>
                <td>
                  <code>{k.id}</code>
                </td>
                <td>{k.allowed_models?.join(', ') ?? 'all'}</td>
                <td>{limitsText(k.limits) || 'none'}</td>
                <td>{k.disabled ? 'disabled' : 'active'}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {current ? <KeyDetail key={current.id} keyRecord={current} onChanged={keys.reload} /> : selected && keys.data && <p>That key is gone.</p>}
    </>
  );
}
