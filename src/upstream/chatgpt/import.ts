import { readFileSync } from 'node:fs';
import type { Config } from '../../config/schema.js';
import type { Store, StoredCredential } from '../../store/types.js';
import { parseAuthFile, type ImportedLogin } from './auth-file.js';
import type { TokenVault } from './vault.js';

/** How long re-sealing one login under a new key holds its refresh lock. */
const RESEAL_LOCK_MS = 5_000;

/** Seals a login and stores it unless the store's is newer (see Store.importCredential). */
export function storeLogin(
  store: Store,
  vault: TokenVault,
  account: { id: string; label: string | null; origin: StoredCredential['origin'] },
  login: ImportedLogin,
): Promise<StoredCredential | null> {
  return store.importCredential({
    ...account,
    sealed: vault.seal(account.id, login.tokens),
    chatgptAccountId: login.facts.chatgptAccountId,
    planType: login.facts.planType,
    email: login.facts.email,
    expiresAt: login.facts.expiresAt,
    lastRefresh: login.lastRefresh,
  });
}

/**
 * At start: every `authFile` of the config into the store (a file older than the stored login,
 * which replicas have refreshed since, is left alone), and logins sealed with a previous key
 * sealed again with the current one. Throws a one-line error when the key is missing but needed.
 */
export async function prepareLogins(config: Config, store: Store, vault: TokenVault | null): Promise<void> {
  const chatgpt = config.providers.chatgpt;
  if (!chatgpt) return;
  for (const account of chatgpt.accounts) {
    if (!account.authFile) continue;
    // the schema requires the key with an authFile
    const login = parseAuthFile(readFileSync(account.authFile, 'utf8'), `providers.chatgpt account ${account.id}: ${account.authFile}`);
    await storeLogin(store, vault!, { id: account.id, label: null, origin: 'config' }, login);
  }
  const stored = await store.listCredentials();
  if (stored.length === 0) return;
  if (!vault) throw new Error(`TOLLGATE_ENCRYPTION_KEY is required: the store holds ChatGPT logins (${stored.map((c) => c.id).join(', ')})`);
  for (const login of stored.filter((c) => vault.isStale(c.sealed))) {
    if (!(await store.claimCredentialRefresh(login.id, login.generation, RESEAL_LOCK_MS))) continue; // being refreshed: sealed anew by that
    const { sealed: _old, generation: _generation, id: _id, label: _label, origin: _origin, ...facts } = login;
    await store.commitCredentialRefresh(login.id, login.generation, { ...facts, sealed: vault.seal(login.id, vault.open(login.id, login.sealed)) });
  }
}
