import 'uplot/dist/uPlot.min.css';
import './style.css';
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { api, setCsrfToken } from './api';
import { AccountsPage } from './pages/accounts';
import { KeysPage } from './pages/keys';
import { Login } from './pages/login';
import { MePage } from './pages/me';
import { OverviewPage } from './pages/overview';
import { UsagePage } from './pages/usage';

const PAGES = [
  { path: '/dashboard', title: 'Overview', Page: OverviewPage },
  { path: '/dashboard/keys', title: 'Keys', Page: KeysPage },
  { path: '/dashboard/accounts', title: 'Accounts', Page: AccountsPage },
  { path: '/dashboard/usage', title: 'Usage', Page: UsagePage },
];

interface SessionState {
  admin_enabled: boolean;
  session: { csrf_token: string; expires_at: string } | null;
}

function usePath(): [string, (path: string) => void] {
  const [path, setPath] = useState(location.pathname);
  useEffect(() => {
    const onPop = () => setPath(location.pathname);
    addEventListener('popstate', onPop);
    return () => removeEventListener('popstate', onPop);
  }, []);
  const go = (next: string) => {
    history.pushState(null, '', next);
    setPath(next);
  };
  return [path, go];
}

function App() {
  const [path, go] = usePath();
  const [state, setState] = useState<SessionState | null>(null);
  const adopt = (next: SessionState) => {
    setCsrfToken(next.session?.csrf_token ?? null);
    setState(next);
  };
  useEffect(() => {
    void api<SessionState>('/dashboard/api/session').then(adopt);
  }, []);

  if (path === '/dashboard/me') return <MePage />;
  if (!state) return <p class="loading">Loading…</p>;
  if (!state.admin_enabled) return <MePage note="The admin pages are off: this gateway has no admin token." />;
  if (!state.session) return <Login onLogin={(session) => adopt({ ...state, session })} />;

  const current = PAGES.find((p) => p.path === path) ?? PAGES[0];
  const logout = async () => {
    await api('/dashboard/api/logout', { method: 'POST' });
    adopt({ ...state, session: null });
  };
  return (
    <>
      <header>
        <strong class="brand">Tollgate</strong>
        <nav aria-label="Dashboard pages">
          {PAGES.map((p) => (
            <a
              href={p.path}
              aria-current={p === current ? 'page' : undefined}
              onClick={(e) => {
                e.preventDefault();
                go(p.path);
              }}
            >
              {p.title}
            </a>
          ))}
          <a href="/dashboard/me">My key</a>
        </nav>
        <button type="button" class="secondary" onClick={logout}>
          Log out
        </button>
      </header>
      <main>
        <h1>{current.title}</h1>
        <current.Page />
      </main>
    </>
  );
}

render(<App />, document.getElementById('app')!);
