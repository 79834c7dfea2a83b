import type { ProviderName } from '../config/schema.js';
import type { HeaderMap } from '../proxy/headers.js';
import type { Account } from './accounts.js';

/**
 * The single factory of upstream credentials, kept apart from client authentication:
 * adds the account's real credential to headers that were already cleaned.
 */
export function withAccountCredential(provider: ProviderName, account: Account, headers: HeaderMap): HeaderMap {
  switch (provider) {
    case 'openai':
      return { ...headers, authorization: `Bearer ${account.secret}` };
    case 'chatgpt':
      return {
        ...headers,
        authorization: `Bearer ${account.secret}`,
        ...(account.chatgptAccountId ? { 'chatgpt-account-id': account.chatgptAccountId } : {}),
      };
    case 'anthropic':
      return {
        'anthropic-version': '2023-06-01',
        ...headers,
        'x-api-key': account.secret,
      };
  }
}
