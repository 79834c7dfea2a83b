/**
 * What a ChatGPT OAuth token says about its account, read from its JWT claims. The signature is
 * not checked: the gateway only stores and forwards these tokens, and the upstream checks them.
 */

/** Where OpenAI's auth server puts the ChatGPT facts in its id and access tokens. */
const AUTH_CLAIM = 'https://api.openai.com/auth';
const PROFILE_CLAIM = 'https://api.openai.com/profile';

/** A token that is not a JWT with a JSON payload, or lacks what the gateway needs. */
export class MalformedToken extends Error {
  override name = 'MalformedToken';
}

export type Claims = Record<string, unknown>;

/** The payload of a compact JWT (`header.payload.signature`, base64url). */
export function jwtClaims(token: string, what: string): Claims {
  const parts = token.split('.');
  if (parts.length !== 3 || parts.some((part) => !/^[A-Za-z0-9_-]*$/.test(part)) || !parts[1]) {
    throw new MalformedToken(`${what} is not a JWT (header.payload.signature, base64url)`);
  }
  let payload: unknown;
  try {
    payload = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
  } catch {
    throw new MalformedToken(`${what}: the JWT payload is not JSON`);
  }
  if (!payload || typeof payload !== 'object' || Array.isArray(payload)) throw new MalformedToken(`${what}: the JWT payload is not an object`);
  return payload as Claims;
}

export interface TokenFacts {
  chatgptAccountId: string;
  planType: string | null;
  email: string | null;
  /** the access token's `exp`, ms since epoch */
  expiresAt: number;
}

const text = (value: unknown): string | null => (typeof value === 'string' && value ? value : null);
const object = (value: unknown): Claims => (value && typeof value === 'object' && !Array.isArray(value) ? (value as Claims) : {});

/**
 * The account's facts from its tokens: the account id and plan from the id token's auth claim
 * (the access token's as a fallback, then the auth file's `account_id`), the email from the id
 * token, the expiry from the access token's `exp`.
 */
export function tokenFacts(tokens: { idToken: string; accessToken: string; accountId?: string }): TokenFacts {
  const id = jwtClaims(tokens.idToken, 'id_token');
  const access = jwtClaims(tokens.accessToken, 'access_token');
  const auth = { ...object(access[AUTH_CLAIM]), ...object(id[AUTH_CLAIM]) };
  const chatgptAccountId = text(auth.chatgpt_account_id) ?? text(tokens.accountId);
  if (!chatgptAccountId) throw new MalformedToken(`id_token: no ${AUTH_CLAIM} claim with a chatgpt_account_id`);
  if (typeof access.exp !== 'number' || !Number.isFinite(access.exp)) throw new MalformedToken('access_token: no numeric exp claim');
  return {
    chatgptAccountId,
    planType: text(auth.chatgpt_plan_type),
    email: text(id.email) ?? text(object(access[PROFILE_CLAIM]).email),
    expiresAt: access.exp * 1000,
  };
}
