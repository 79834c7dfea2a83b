import type { ProviderConfig, ProviderName, Strategy } from '../config/schema.js';
import { GatewayError } from '../errors.js';
import type { Store, StoredCredential } from '../store/types.js';
import { accountsOf, pickAccount, unavailability, type Account, type Candidate } from './accounts.js';
import { headroom } from './chatgpt/quota.js';

const RECENT_TOKENS_WINDOW_MS = 5 * 60_000;
/** How long the list of ChatGPT logins imported through the admin API is reused before asking the store again. */
const IMPORTED_TTL_MS = 1_000;

/**
 * One provider's accounts on this replica: shared state (cooldowns, disabled) comes from the
 * store on every pick; in-flight counts and recent token use are this replica's own view.
 */
export class ProviderPool {
  readonly strategy: Strategy;
  readonly websocket: boolean;
  private readonly configured: Account[];
  /** ChatGPT logins imported through the admin API, which every replica serves */
  private imported: Account[] = [];
  private importedAt = -Infinity;
  private cursor = 0;
  private readonly inFlight = new Map<string, number>();
  private readonly recent = new Map<string, { tokens: number; since: number }>();

  constructor(readonly provider: ProviderName, private readonly config: ProviderConfig, private readonly store: Store) {
    this.configured = accountsOf(provider, config);
    this.strategy = config.strategy;
    this.websocket = config.websocket;
  }

  /** Configured accounts, then imported ones, as last synced. */
  get accounts(): Account[] {
    return [...this.configured, ...this.imported];
  }

  /** Picks up logins imported on any replica (ChatGPT only); `force` skips the reuse window. */
  async syncImported(force = false, now = Date.now()): Promise<void> {
    if (this.provider !== 'chatgpt' || (!force && now - this.importedAt < IMPORTED_TTL_MS)) return;
    const logins = await this.store.listCredentials();
    this.imported = logins.filter((login) => !this.configured.some((a) => a.id === login.id)).map((login) => this.importedAccount(login));
    this.importedAt = now;
  }

  private importedAccount(login: StoredCredential): Account {
    return { id: login.id, provider: this.provider, baseUrl: this.config.baseUrl.replace(/\/+$/, ''), secret: '', oauth: true, headers: {} };
  }

  /**
   * Picks a usable account not in `exclude` — `prefer` when it is usable (session affinity) —
   * and throws 429/503 in the gateway's terms if there is none.
   */
  async choose(exclude: ReadonlySet<string> = new Set(), now = Date.now(), prefer?: string): Promise<Account> {
    await this.syncImported(false, now);
    const accounts = this.accounts;
    const states = await this.store.getAccountStates(accounts.map((a) => a.id));
    const usable: Candidate[] = [];
    let earliestReset: number | undefined;
    for (const account of accounts) {
      const state = states.get(account.id) ?? {};
      const blocked = unavailability(state, now);
      if (blocked?.reason === 'cooldown' || blocked?.reason === 'quota_exhausted') earliestReset = Math.min(earliestReset ?? Infinity, blocked.until);
      if (blocked || exclude.has(account.id)) continue;
      usable.push({
        account,
        state,
        inFlight: this.inFlightOf(account.id),
        recentTokens: this.recentTokensOf(account.id, now),
        headroom: headroom(state.quota, now),
      });
    }
    const picked = usable.find((c) => c.account.id === prefer) ?? pickAccount(this.strategy, usable, this.cursor++);
    if (picked) return picked.account;
    if (exclude.size === 0 && earliestReset !== undefined) {
      throw new GatewayError('usage_limit_reached', `Every ${this.provider} account is cooling down after upstream rate limits or has used its quota.`, {
        retryAfter: (earliestReset - now) / 1000,
        resetsAt: earliestReset,
      });
    }
    throw new GatewayError('no_accounts', `No ${this.provider} account is available.`, { retryAfter: 5 });
  }

  /** Marks one request in flight on `account`; call the returned function exactly once when it ends. */
  begin(accountId: string): () => void {
    this.inFlight.set(accountId, this.inFlightOf(accountId) + 1);
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      this.inFlight.set(accountId, this.inFlightOf(accountId) - 1);
    };
  }

  noteTokens(accountId: string, tokens: number, now = Date.now()): void {
    const entry = this.recent.get(accountId);
    if (!entry || now - entry.since > RECENT_TOKENS_WINDOW_MS) this.recent.set(accountId, { tokens, since: now });
    else entry.tokens += tokens;
  }

  inFlightOf(accountId: string): number {
    return this.inFlight.get(accountId) ?? 0;
  }

  recentTokensOf(accountId: string, now = Date.now()): number {
    const entry = this.recent.get(accountId);
    return entry && now - entry.since <= RECENT_TOKENS_WINDOW_MS ? entry.tokens : 0;
  }

  find(accountId: string): Account | undefined {
    return this.accounts.find((a) => a.id === accountId);
  }
}
