import { request, type Dispatcher } from 'undici';
import type { OAuthConfig } from '../../config/schema.js';
import type { OAuthTokens } from './auth-file.js';

/**
 * Answers of OpenAI's auth server that no retry can fix: the login is spent and a person must
 * log in again (Codex CLI's own refresh gives up on the same codes).
 */
const PERMANENT = new Set(['invalid_grant', 'refresh_token_expired', 'refresh_token_reused', 'refresh_token_invalidated']);

/** The auth server refused the refresh token for good; `reason` is its error code. */
export class RefreshRefused extends Error {
  override name = 'RefreshRefused';
  constructor(readonly reason: string) {
    super(`the auth server refused the refresh token (${reason})`);
  }
}

/** `{"error":"code"}` (OAuth 2.0) or `{"error":{"code":"…"}}` (OpenAI's auth server). */
function errorCode(body: unknown): string | null {
  const error = (body as { error?: unknown } | null)?.error;
  if (typeof error === 'string') return error;
  const code = (error as { code?: unknown } | null | undefined)?.code;
  return typeof code === 'string' ? code : null;
}

const text = (value: unknown) => (typeof value === 'string' && value ? value : undefined);

/**
 * One refresh at `{issuer}/oauth/token`, as Codex CLI sends it: a JSON body with the refresh
 * grant, the client id and the scope. The answer's refresh token replaces the old one (rotated,
 * single use); a token the answer leaves out stays as it was. Throws `RefreshRefused` for a
 * permanent refusal, any other error for a transient one. No error carries a token.
 */
export async function refreshTokens(dispatcher: Dispatcher, oauth: OAuthConfig, current: OAuthTokens): Promise<OAuthTokens> {
  const res = await request(`${oauth.issuer.replace(/\/+$/, '')}/oauth/token`, {
    dispatcher,
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: JSON.stringify({ grant_type: 'refresh_token', refresh_token: current.refreshToken, client_id: oauth.clientId, scope: 'openid profile email' }),
    headersTimeout: oauth.refreshTimeoutMs,
    bodyTimeout: oauth.refreshTimeoutMs,
  });
  const body: unknown = await res.body.json().catch(() => null);
  if (res.statusCode !== 200) {
    const code = errorCode(body);
    if ((code && PERMANENT.has(code)) || res.statusCode === 401) throw new RefreshRefused(code ?? `http_${res.statusCode}`);
    throw new Error(`the auth server answered ${res.statusCode}${code ? ` (${code})` : ''}`);
  }
  const answer = (body ?? {}) as Record<string, unknown>;
  const accessToken = text(answer.access_token);
  if (!accessToken) throw new Error('the auth server answered without an access_token');
  return {
    accessToken,
    idToken: text(answer.id_token) ?? current.idToken,
    refreshToken: text(answer.refresh_token) ?? current.refreshToken,
  };
}
