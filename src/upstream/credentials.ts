import type { HeaderMap } from '../http/headers.js';
import type { Account } from './accounts.js';

/**
 * The single factory of upstream credentials, kept apart from client authentication: adds the
 * account's own headers and its real credential to headers that were already allow-listed.
 * Who is billed (organization, project, ChatGPT account) comes from config only, and the
 * credential is set last so nothing overrides it.
 */
export function withAccountCredential(account: Account, headers: HeaderMap): HeaderMap {
  const own = { ...headers, ...account.headers };
  switch (account.provider) {
    case 'openai':
      return {
        ...own,
        ...(account.organization ? { 'openai-organization': account.organization } : {}),
        ...(account.project ? { 'openai-project': account.project } : {}),
        authorization: `Bearer ${account.secret}`,
      };
    case 'chatgpt':
      return {
        ...own,
        ...(account.chatgptAccountId ? { 'chatgpt-account-id': account.chatgptAccountId } : {}),
        authorization: `Bearer ${account.secret}`,
      };
    case 'anthropic':
      return { 'anthropic-version': '2023-06-01', ...own, 'x-api-key': account.secret };
  }
}
