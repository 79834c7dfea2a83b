import { useState } from 'preact/hooks';
import { api } from '../api';

/** Admin login: the token goes to the gateway once and is never kept by the page. */
export function Login({ onLogin }: { onLogin: (session: { csrf_token: string; expires_at: string }) => void }) {
  const [error, setError] = useState('');
  const submit = async (event: Event) => {
    event.preventDefault();
    const form = event.currentTarget as HTMLFormElement;
    const token = (form.elements.namedItem('token') as HTMLInputElement).value;
    try {
      onLogin(await api('/dashboard/api/login', { method: 'POST', body: { token } }));
    } catch (err) {
      setError((err as Error).message);
    }
  };
  return (
    <main class="narrow">
      <h1>Tollgate dashboard</h1>
      <form onSubmit={submit}>
        <label>
          Admin token
          <input name="token" type="password" autocomplete="current-password" required />
        </label>
        <button type="submit">Log in</button>
        {error && <p role="alert" class="error">{error}</p>}
      </form>
      <p>
        Have an API key? <a href="/dashboard/me">See your own usage</a>.
      </p>
    </main>
  );
}
