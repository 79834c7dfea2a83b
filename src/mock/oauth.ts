/**
 * The mock's OpenAI auth server and ChatGPT login checks: `POST /oauth/token` refreshes a login
 * the way OpenAI's does — the refresh token is single use and rotated on every refresh, a spent
 * one is answered 401 `{"error":{"code":"refresh_token_reused"}}` (the shape Codex CLI's own
 * tests expect) — and issues unsigned but well-formed JWTs. Codex backend paths accept a JWT
 * bearer only if the mock issued it and it has not expired, and report per-account quota headers.
 */
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';

const AUTH_CLAIM = 'https://api.openai.com/auth';
const DAY_SEC = 86_400;

export interface MockLogin {
  chatgptAccountId: string;
  planType: string;
  email: string;
}

/** One call of the token endpoint, as the mock saw it. */
export interface RefreshCall {
  refreshToken: string;
  clientId: unknown;
  grantType: unknown;
  scope: unknown;
  outcome: 'rotated' | 'reused' | 'unknown' | 'abandoned';
}

export interface OAuthEvents {
  /** a refresh arrived and is held (see `holdRefreshes`) */
  held: [RefreshCall];
  refreshed: [RefreshCall];
}

/** `spent`: the refresh token is used up when the held call arrives; `unspent`: only if the caller is still there on release. */
export type HoldMode = 'spent' | 'unspent';

export interface OAuthMock {
  events: EventEmitter<OAuthEvents>;
  refreshes: RefreshCall[];
  /** every token the mock issued (access, id, refresh), for tests that check none leaks */
  issued: string[];
  /** a Codex auth.json for a new login; its access token expires after `expiresInSec` (negative: already expired) */
  login(account: Partial<MockLogin> & { chatgptAccountId: string }, expiresInSec?: number, lastRefresh?: Date): Record<string, unknown>;
  /** holds every refresh until the returned release is called */
  holdRefreshes(mode: HoldMode): () => void;
  /** quota headers sent on Codex answers for this ChatGPT account (null: none) */
  setQuota(chatgptAccountId: string, headers: Record<string, string> | null): void;
  /** ends every access token of the account now (as a revoked session would) */
  revokeAccessTokens(chatgptAccountId: string): void;
  /** why a Codex backend request's JWT bearer is refused, or null (also for a bearer that is no JWT) */
  accessProblem(headers: Record<string, string | string[] | undefined>): string | null;
  quotaHeaders(headers: Record<string, string | string[] | undefined>): Record<string, string>;
  handleToken(body: unknown, alive: () => boolean): Promise<{ status: number; body: object }>;
  reset(): void;
}

const b64 = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');
const jwt = (claims: object) => `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims)}.${Buffer.from('mock-signature').toString('base64url')}`;

export function createOAuthMock(): OAuthMock {
  const events = new EventEmitter<OAuthEvents>();
  const refreshes: RefreshCall[] = [];
  const issued: string[] = [];
  /** refresh token → its login and whether it was used */
  const refreshTokens = new Map<string, { login: MockLogin; spent: boolean }>();
  /** access token → its login and expiry (s) */
  const accessTokens = new Map<string, { login: MockLogin; exp: number }>();
  const quotas = new Map<string, Record<string, string>>();
  let hold: { mode: HoldMode; released: Promise<void>; release: () => void } | null = null;

  const issue = (login: MockLogin, expiresInSec: number) => {
    const now = Math.floor(Date.now() / 1000);
    const exp = now + expiresInSec;
    const auth = { chatgpt_account_id: login.chatgptAccountId, chatgpt_plan_type: login.planType };
    const accessToken = jwt({ iat: now, exp, jti: randomBytes(8).toString('hex'), [AUTH_CLAIM]: auth });
    const idToken = jwt({ iat: now, exp, email: login.email, [AUTH_CLAIM]: auth });
    const refreshToken = `rt_${randomBytes(16).toString('hex')}`;
    accessTokens.set(accessToken, { login, exp });
    issued.push(accessToken, idToken, refreshToken);
    refreshTokens.set(refreshToken, { login, spent: false });
    return { id_token: idToken, access_token: accessToken, refresh_token: refreshToken };
  };

  const bearerOf = (headers: Record<string, string | string[] | undefined>) => /^Bearer\s+(.+)$/i.exec(String(headers.authorization ?? ''))?.[1]?.trim();

  return {
    events,
    refreshes,
    issued,
    login(account, expiresInSec = 10 * DAY_SEC, lastRefresh = new Date(Date.now() - DAY_SEC * 1000)) {
      const login = { planType: 'plus', email: `${account.chatgptAccountId}@example.com`, ...account };
      const tokens = issue(login, expiresInSec);
      return { OPENAI_API_KEY: null, tokens: { ...tokens, account_id: login.chatgptAccountId }, last_refresh: lastRefresh.toISOString() };
    },
    holdRefreshes(mode) {
      let release!: () => void;
      const released = new Promise<void>((resolve) => (release = resolve));
      const held = { mode, released, release };
      hold = held;
      return () => {
        held.release();
        if (hold === held) hold = null;
      };
    },
    setQuota(chatgptAccountId, headers) {
      if (headers) quotas.set(chatgptAccountId, headers);
      else quotas.delete(chatgptAccountId);
    },
    revokeAccessTokens(chatgptAccountId) {
      for (const [token, held] of accessTokens) if (held.login.chatgptAccountId === chatgptAccountId) accessTokens.delete(token);
    },
    accessProblem(headers) {
      const bearer = bearerOf(headers) ?? '';
      // static test tokens (not JWTs) are the rest of the mock's business
      if (bearer.split('.').length !== 3) return null;
      const held = accessTokens.get(bearer);
      if (!held) return 'Your authentication token is not valid.';
      if (held.exp * 1000 <= Date.now()) return 'Your authentication token has expired. Please try signing in again.';
      if (headers['chatgpt-account-id'] !== held.login.chatgptAccountId) return 'ChatGPT-Account-Id does not match the token.';
      return null;
    },
    quotaHeaders(headers) {
      const account = headers['chatgpt-account-id'];
      return (typeof account === 'string' && quotas.get(account)) || {};
    },
    async handleToken(body, alive) {
      const json = (body ?? {}) as Record<string, unknown>;
      const token = typeof json.refresh_token === 'string' ? json.refresh_token : '';
      const call: RefreshCall = { refreshToken: token, clientId: json.client_id, grantType: json.grant_type, scope: json.scope, outcome: 'unknown' };
      refreshes.push(call);
      const held = refreshTokens.get(token);
      const current = hold;
      if (current) {
        if (current.mode === 'spent' && held) held.spent = true;
        events.emit('held', call);
        await current.released;
        if (!alive()) {
          call.outcome = 'abandoned';
          return { status: 499, body: {} };
        }
        if (current.mode === 'spent' && held) held.spent = false; // the caller is still there: it gets the answer
      }
      if (json.grant_type !== 'refresh_token' || !held) {
        return { status: 400, body: { error: 'invalid_grant', error_description: 'Unknown or invalid refresh token.' } };
      }
      if (held.spent) {
        call.outcome = 'reused';
        return { status: 401, body: { error: { message: 'Your refresh token has already been used to generate a new access token. Please try signing in again.', type: 'invalid_request_error', param: null, code: 'refresh_token_reused' } } };
      }
      held.spent = true;
      call.outcome = 'rotated';
      events.emit('refreshed', call);
      return { status: 200, body: issue(held.login, 10 * DAY_SEC) };
    },
    reset() {
      refreshes.length = 0;
      quotas.clear();
      hold?.release();
      hold = null;
    },
  };
}
