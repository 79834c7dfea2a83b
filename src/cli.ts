#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';

const USAGE = `usage: tollgate keys create --name NAME [--allowed-models m1,m2] [--expires-at ISO] [--limit TYPE:WINDOW:MAX ...]
                           [--accounts id1,id2 | --pool NAME]
       tollgate keys list
       tollgate keys revoke ID
       tollgate accounts import --id ID [--label LABEL] AUTH_JSON   (a Codex CLI auth.json, e.g. ~/.codex/auth.json)
       tollgate accounts list
options: --url URL (or TOLLGATE_URL, default http://127.0.0.1:8080), --token TOKEN (or TOLLGATE_ADMIN_TOKEN)`;

export class CliError extends Error {}

function parseLimit(text: string) {
  const [limit_type, limit_window, max] = text.split(':');
  if (!limit_type || !limit_window || !max || !/^\d+$/.test(max)) throw new CliError(`--limit ${text}: expected TYPE:WINDOW:MAX, e.g. requests:daily:1000`);
  return { limit_type, limit_window, max_value: Number(max) };
}

/** The CLI wraps the admin API; it holds no logic of its own. Returns what to print. */
export async function runCli(argv: string[], env: Record<string, string | undefined> = process.env): Promise<string> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      name: { type: 'string' },
      'allowed-models': { type: 'string' },
      'expires-at': { type: 'string' },
      limit: { type: 'string', multiple: true },
      accounts: { type: 'string' },
      pool: { type: 'string' },
      id: { type: 'string' },
      label: { type: 'string' },
      url: { type: 'string' },
      token: { type: 'string' },
    },
  });
  const [group, command, arg] = positionals;
  if ((group !== 'keys' && group !== 'accounts') || !command) throw new CliError(USAGE);
  const base = (values.url ?? env.TOLLGATE_URL ?? 'http://127.0.0.1:8080').replace(/\/+$/, '');
  const token = values.token ?? env.TOLLGATE_ADMIN_TOKEN;
  if (!token) throw new CliError('set TOLLGATE_ADMIN_TOKEN (or pass --token) to use the admin API');

  const call = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(base + path, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    if (!res.ok) {
      const message = (() => { try { return JSON.parse(text).error?.message; } catch { return undefined; } })();
      throw new CliError(`${method} ${path}: HTTP ${res.status}${message ? `: ${message}` : ''}`);
    }
    return text ? JSON.parse(text) : null;
  };

  if (group === 'accounts') return accountsCommand(command, arg, values, call);

  switch (command) {
    case 'create': {
      if (!values.name) throw new CliError('keys create: --name is required');
      const created = await call('POST', '/admin/keys', {
        name: values.name,
        ...(values['allowed-models'] && { allowed_models: values['allowed-models'].split(',').map((m) => m.trim()) }),
        ...(values['expires-at'] && { expires_at: values['expires-at'] }),
        ...(values.limit && { limits: values.limit.map(parseLimit) }),
        ...(values.accounts && { accounts: values.accounts.split(',').map((id) => id.trim()) }),
        ...(values.pool && { pool: values.pool }),
      });
      return `created key ${created.id} (${created.name})\n${created.key}\nstore it now: the key is not shown again`;
    }
    case 'list': {
      const { data } = await call('GET', '/admin/keys');
      const rows = (data as Array<Record<string, unknown>>).map((k) =>
        [k.id, k.name, k.disabled ? 'disabled' : 'active', k.expires_at ?? '-', (k.allowed_models as string[] | null)?.join(',') ?? '*'].join('\t'),
      );
      return ['id\tname\tstate\texpires_at\tmodels', ...rows].join('\n');
    }
    case 'revoke': {
      if (!arg) throw new CliError('keys revoke: the key id is required');
      await call('DELETE', `/admin/keys/${encodeURIComponent(arg)}`);
      return `revoked key ${arg}`;
    }
    default:
      throw new CliError(USAGE);
  }
}

type Call = (method: string, path: string, body?: unknown) => Promise<any>;

const percent = (window: { used_percent: number } | null | undefined) => (window ? `${window.used_percent}%` : '-');

async function accountsCommand(command: string, file: string | undefined, values: { id?: string; label?: string }, call: Call): Promise<string> {
  switch (command) {
    case 'import': {
      if (!values.id || !file) throw new CliError('accounts import: --id ID and the auth.json path are required');
      let authFile: unknown;
      try {
        authFile = JSON.parse(readFileSync(file, 'utf8'));
      } catch (err) {
        throw new CliError(`accounts import: ${file}: ${(err as NodeJS.ErrnoException).code ?? 'not JSON'}`);
      }
      const account = await call('POST', '/admin/accounts', { ...(authFile as object), id: values.id, ...(values.label && { label: values.label }) });
      return `imported ${account.id} (${account.plan_type ?? 'unknown plan'}${account.email ? `, ${account.email}` : ''}), token expires ${account.token_expires_at}`;
    }
    case 'list': {
      const { data } = await call('GET', '/admin/accounts');
      const rows = (data as Array<Record<string, any>>).map((a) =>
        [a.id, a.provider, a.state + (a.reauth_reason ? ` (${a.reauth_reason})` : ''), a.plan_type ?? '-', a.token_expires_at ?? '-', percent(a.quota?.primary), percent(a.quota?.secondary), a.in_flight].join('\t'),
      );
      return ['id\tprovider\tstate\tplan\ttoken_expires_at\tprimary\tsecondary\tin_flight', ...rows].join('\n');
    }
    default:
      throw new CliError(USAGE);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runCli(process.argv.slice(2)).then(
    (out) => console.log(out),
    (err) => {
      console.error(err instanceof CliError ? err.message : `tollgate: ${(err as Error).message}`);
      process.exit(err instanceof CliError ? 2 : 1);
    },
  );
}
