/** The dashboard's only way to the gateway: same origin, the session cookie, the CSRF token on changes. */
let csrfToken: string | null = null;

export function setCsrfToken(token: string | null): void {
  csrfToken = token;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export interface RequestOptions {
  method?: string;
  body?: unknown;
  headers?: Record<string, string>;
  /** the response as text (CSV) instead of JSON */
  text?: boolean;
}

export async function api<T>(path: string, options: RequestOptions = {}): Promise<T> {
  const method = options.method ?? 'GET';
  const headers: Record<string, string> = { accept: 'application/json', ...options.headers };
  if (options.body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET' && csrfToken) headers['x-csrf-token'] = csrfToken;
  const res = await fetch(path, { method, headers, credentials: 'same-origin', body: options.body === undefined ? undefined : JSON.stringify(options.body) });
  if (!res.ok) {
    const body = (await res.json().catch(() => null)) as { error?: { message?: string } } | null;
    throw new ApiError(res.status, body?.error?.message ?? `${res.status} ${res.statusText}`);
  }
  if (res.status === 204) return undefined as T;
  return (options.text ? await res.text() : await res.json()) as T;
}

export interface Limit {
  limit_type: 'requests' | 'input_tokens' | 'output_tokens' | 'total_tokens' | 'cost_usd';
  limit_window: '5h' | 'daily' | 'weekly' | 'monthly';
  max_value: number;
}

export interface Key {
  id: string;
  name: string;
  allowed_models: string[] | null;
  expires_at: string | null;
  limits: Limit[];
  disabled: boolean;
  created_at: string;
}

export interface UsageReport {
  key: { id: string; name: string; expires_at: string | null; allowed_models: string[] | null };
  request_count: number;
  input_tokens: number;
  output_tokens: number;
  cached_input_tokens: number;
  total_tokens: number;
  cost_usd: number;
  limits: (Limit & { current_value: number; remaining_value: number; reset_at: string })[];
}

export interface HistoryPoint {
  start: string;
  group: string;
  requests: number;
  input_tokens: number;
  cached_input_tokens: number;
  output_tokens: number;
  total_tokens: number;
  cost_usd: number;
  errors: Record<'rate_limited' | 'client_error' | 'server_error', number>;
}

export interface History {
  from: string;
  to: string;
  bucket: 'hour' | 'day';
  group_by: 'key' | 'model' | 'account';
  data: HistoryPoint[];
}

export interface Account {
  id: string;
  provider: string;
  state: string;
  cooldown_until: string | null;
  in_flight: number;
  recent_tokens: number;
}

export interface Replica {
  instance_id: string;
  last_seen: string;
  live: { in_flight_streams: number; bridge_sessions: number; websocket_sessions: number } | null;
}

export const RANGES = { '24h': 24, '7d': 7 * 24, '30d': 30 * 24, '90d': 90 * 24 } as const;
export type Range = keyof typeof RANGES;

/** The history query of a range: hourly buckets up to a week, daily beyond. */
export function historyQuery(range: Range, groupBy: History['group_by']): string {
  const hours = RANGES[range];
  const to = Date.now();
  const from = to - hours * 3_600_000;
  return `from=${from}&to=${to}&bucket=${hours > 7 * 24 ? 'day' : 'hour'}&group_by=${groupBy}`;
}
