import type { HeaderMap } from '../http/headers.js';
import type { Account } from './accounts.js';

/** A ChatGPT login's current access token, the account it is for, and its store generation. */
export interface OAuthBearer {
  accessToken: string;
  chatgptAccountId: string;
  generation: number;
}

/**
 * The single factory of upstream credentials, kept apart from client authentication: adds the
 * account's own headers and its real credential to headers that were already allow-listed.
 * Who is billed (organization, project, ChatGPT account) comes from config or the login only,
 * and the credential is set last so nothing overrides it. A ChatGPT login passes its `bearer`.
 */
export function withAccountCredential(account: Account, headers: HeaderMap, bearer?: OAuthBearer): HeaderMap {
  const own = { ...headers, ...account.headers };
  switch (account.provider) {
    case 'openai':
      return {
        ...own,
        ...(account.organization ? { 'openai-organization': account.organization } : {}),
        ...(account.project ? { 'openai-project': account.project } : {}),
        authorization: `Bearer ${account.secret}`,
      };
    case 'chatgpt': {
      const accountId = bearer?.chatgptAccountId ?? account.chatgptAccountId;
      return {
        ...own,
        ...(accountId ? { 'chatgpt-account-id': accountId } : {}),
        authorization: `Bearer ${bearer?.accessToken ?? account.secret}`,
      };
    }
    case 'anthropic':
      return { 'anthropic-version': '2023-06-01', ...own, 'x-api-key': account.secret };
  }
}
