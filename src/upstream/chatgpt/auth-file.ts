import { z } from 'zod';
import { MalformedToken, tokenFacts, type TokenFacts } from './jwt.js';

/** The tokens of one ChatGPT login; what the vault seals. */
export interface OAuthTokens {
  idToken: string;
  accessToken: string;
  refreshToken: string;
}

/** Codex CLI's `auth.json` (`~/.codex/auth.json`): the parts the gateway uses, other fields ignored. */
export const authFileSchema = z.object({
  tokens: z.object({
    id_token: z.string().min(1),
    access_token: z.string().min(1),
    refresh_token: z.string().min(1),
    account_id: z.string().min(1).nullish(),
  }),
  last_refresh: z.iso.datetime({ offset: true }).nullish(),
});
export type AuthFile = z.infer<typeof authFileSchema>;

export interface ImportedLogin {
  tokens: OAuthTokens;
  facts: TokenFacts;
  /** ms since epoch: the file's `last_refresh`, else when the access token was issued (its `exp` is later) */
  lastRefresh: number;
}

/** A parsed auth file's tokens and facts; throws `MalformedToken` when a token is not a usable JWT. */
export function loginFromAuthFile(file: AuthFile, now = Date.now()): ImportedLogin {
  const tokens = { idToken: file.tokens.id_token, accessToken: file.tokens.access_token, refreshToken: file.tokens.refresh_token };
  const facts = tokenFacts({ ...tokens, accountId: file.tokens.account_id ?? undefined });
  return { tokens, facts, lastRefresh: file.last_refresh ? Date.parse(file.last_refresh) : now };
}

/** The text of an auth file (a mounted secret, a CLI argument) as a login; errors name the problem, never a token. */
export function parseAuthFile(text: string, where: string): ImportedLogin {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new MalformedToken(`${where}: not JSON (expected a Codex auth.json)`);
  }
  const parsed = authFileSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new MalformedToken(`${where}: ${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  return loginFromAuthFile(parsed.data);
}
