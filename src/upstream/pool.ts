import type { ProviderConfig, ProviderName, Strategy } from '../config/schema.js';
import { GatewayError } from '../errors.js';
import type { Store } from '../store/types.js';
import { accountsOf, pickAccount, unavailability, type Account, type Candidate } from './accounts.js';

const RECENT_TOKENS_WINDOW_MS = 5 * 60_000;

/** What a request asks of selection beyond availability. */
export interface Scope {
  /** the call's conversation (see `affinityKeyOf`); ignored when the provider's `affinity` is off */
  affinityKey?: string;
  /** the accounts the caller's key is limited to; absent = any */
  accounts?: ReadonlySet<string>;
}

/**
 * One provider's accounts on this replica: shared state (cooldowns, disabled) comes from the
 * store on every pick; in-flight counts and recent token use are this replica's own view.
 */
export class ProviderPool {
  readonly accounts: Account[];
  readonly strategy: Strategy;
  readonly websocket: boolean;
  readonly affinity: boolean;
  private cursor = 0;
  private readonly inFlight = new Map<string, number>();
  private readonly recent = new Map<string, { tokens: number; since: number }>();

  constructor(readonly provider: ProviderName, config: ProviderConfig, private readonly store: Store) {
    this.accounts = accountsOf(provider, config);
    this.strategy = config.strategy;
    this.websocket = config.websocket;
    this.affinity = config.affinity;
  }

  /**
   * Picks a usable account of the scope not in `exclude` — `prefer` when it is usable (session
   * affinity), else the affinity key's rendezvous winner, else by strategy — and throws 429/503
   * in the gateway's terms if there is none. A key limited to accounts never gets another one.
   */
  async choose(exclude: ReadonlySet<string> = new Set(), now = Date.now(), prefer?: string, scope: Scope = {}): Promise<Account> {
    const inScope = scope.accounts ? this.accounts.filter((a) => scope.accounts!.has(a.id)) : this.accounts;
    if (inScope.length === 0) throw new GatewayError('no_accounts', `No ${this.provider} account is in this key's pool.`, { retryAfter: 5 });
    const states = await this.store.getAccountStates(inScope.map((a) => a.id));
    const usable: Candidate[] = [];
    let earliestReset: number | undefined;
    for (const account of inScope) {
      const state = states.get(account.id) ?? {};
      const blocked = unavailability(state, now);
      if (blocked?.reason === 'cooldown') earliestReset = Math.min(earliestReset ?? Infinity, blocked.until);
      if (blocked || exclude.has(account.id)) continue;
      usable.push({ account, state, inFlight: this.inFlightOf(account.id), recentTokens: this.recentTokensOf(account.id, now) });
    }
    const picked = usable.find((c) => c.account.id === prefer) ?? pickAccount(this.strategy, usable, this.cursor++, this.affinity ? scope.affinityKey : undefined);
    if (picked) return picked.account;
    if (exclude.size === 0 && earliestReset !== undefined) {
      throw new GatewayError('usage_limit_reached', `Every ${this.provider} account is cooling down after upstream rate limits.`, {
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

  /** The account, if it is one of this pool's and in `scope`. */
  find(accountId: string, scope: Scope = {}): Account | undefined {
    if (scope.accounts && !scope.accounts.has(accountId)) return undefined;
    return this.accounts.find((a) => a.id === accountId);
  }
}
