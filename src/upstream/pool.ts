import { randomUUID } from 'node:crypto';
import { DEFAULTS, type ProviderConfig, type ProviderName, type Strategy } from '../config/schema.js';
import { GatewayError } from '../errors.js';
import type { CancelSignal } from '../http/client-gone.js';
import type { Store, StoredCredential } from '../store/types.js';
import { accountsOf, pickAccount, rendezvousOrder, unavailability, type Account, type Candidate } from './accounts.js';
import { headroom } from './chatgpt/quota.js';
import { WaitQueue } from './wait-queue.js';

const RECENT_TOKENS_WINDOW_MS = 5 * 60_000;
/** How long the list of ChatGPT logins imported through the admin API is reused before asking the store again. */
const IMPORTED_TTL_MS = 1_000;

/** What a request asks of selection beyond availability. */
export interface Scope {
  /** the call's conversation (see `affinityKeyOf`); ignored when the provider's `affinity` is off */
  affinityKey?: string;
  /** the accounts the caller's key is limited to; absent = any */
  accounts?: ReadonlySet<string>;
}

/** How concurrency caps behave (see `upstream.queueTimeoutMs`, the bridge's heartbeat and stale bounds). */
export interface QueueBounds {
  /** how long a request waits for a slot when every account is full */
  queueTimeoutMs: number;
  /** a slot not renewed for this long frees itself (a dead replica's) */
  slotTtlMs: number;
  /** held slots are renewed, and queued requests look for slots freed elsewhere, this often */
  renewMs: number;
}

export interface PoolEvents {
  onQueueDepth?(provider: ProviderName, depth: number): void;
  onQueueWait?(provider: ProviderName, seconds: number, outcome: 'served' | 'timeout' | 'gone'): void;
}

/** An account taken for one request: `release` (idempotent) ends its in-flight count and frees its slot. */
export interface Taken {
  account: Account;
  release: () => void;
}

/**
 * One provider's accounts on this replica: shared state (cooldowns, disabled, concurrency slots)
 * comes from the store on every pick; in-flight counts and recent token use are this replica's
 * own view.
 */
export class ProviderPool {
  readonly strategy: Strategy;
  readonly websocket: boolean;
  readonly affinity: boolean;
  private readonly configured: Account[];
  /** ChatGPT logins imported through the admin API, which every replica serves */
  private imported: Account[] = [];
  private importedAt = -Infinity;
  private cursor = 0;
  private readonly inFlight = new Map<string, number>();
  private readonly recent = new Map<string, { tokens: number; since: number }>();
  /** per account, the slot holders of this replica (renewed until released) */
  private readonly holders = new Map<string, Set<string>>();
  private readonly queue: WaitQueue;
  private readonly renewal: NodeJS.Timeout | undefined;

  constructor(
    readonly provider: ProviderName,
    private readonly config: ProviderConfig,
    private readonly store: Store,
    private readonly bounds: QueueBounds = { queueTimeoutMs: DEFAULTS.queueTimeoutMs, slotTtlMs: DEFAULTS.staleAfterMs, renewMs: DEFAULTS.heartbeatMs },
    private readonly events: PoolEvents = {},
  ) {
    this.configured = accountsOf(provider, config);
    this.strategy = config.strategy;
    this.websocket = config.websocket;
    this.affinity = config.affinity;
    this.queue = new WaitQueue(bounds.renewMs);
    // only configured accounts have a `maxConcurrent`
    if (this.configured.some((a) => a.maxConcurrent)) this.renewal = setInterval(() => void this.renewSlots(), bounds.renewMs).unref();
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
   * Picks a usable account of the scope not in `exclude` — `prefer` when it is usable (session
   * affinity), else the affinity key's rendezvous winner, else by strategy — and throws 429/503
   * in the gateway's terms if there is none. A key limited to accounts never gets another one.
   */
  async choose(exclude: ReadonlySet<string> = new Set(), now = Date.now(), prefer?: string, scope: Scope = {}): Promise<Account> {
    const usable = await this.usable(exclude, now, scope);
    return (usable.find((c) => c.account.id === prefer) ?? this.pick(usable, scope)).account;
  }

  /**
   * Takes an account for one request: the account `choose` would pick, or the next in order
   * when it is at its `maxConcurrent` (cluster-wide slots). When every usable account is full the
   * request waits, first in first out, up to `queueTimeoutMs` (then 503 `no_accounts`); a client
   * gone meanwhile (`signal`) leaves the queue.
   */
  async take(exclude: ReadonlySet<string>, scope: Scope = {}, signal?: CancelSignal): Promise<Taken> {
    const attempt = async () => this.takeSlot(await this.usable(exclude, Date.now(), scope), scope);
    if (this.queue.depth === 0) {
      const taken = await attempt();
      if (taken) return taken;
    }
    const queuedAt = performance.now();
    this.events.onQueueDepth?.(this.provider, this.queue.depth + 1);
    const outcome = await this.queue.waitFor(attempt, Date.now() + this.bounds.queueTimeoutMs, signal).finally(() =>
      this.events.onQueueDepth?.(this.provider, this.queue.depth),
    );
    const waited = (performance.now() - queuedAt) / 1000;
    if (outcome === 'timeout' || outcome === 'gone') {
      this.events.onQueueWait?.(this.provider, waited, outcome);
      throw new GatewayError('no_accounts', `Every ${this.provider} account is at its concurrency limit.`, { retryAfter: 1 });
    }
    this.events.onQueueWait?.(this.provider, waited, 'served');
    return outcome;
  }

  close(): void {
    clearInterval(this.renewal);
  }

  /** The usable accounts of the scope not in `exclude`; throws 429/503 when there are none. */
  private async usable(exclude: ReadonlySet<string>, now: number, scope: Scope): Promise<Candidate[]> {
    await this.syncImported(false, now);
    const inScope = scope.accounts ? this.accounts.filter((a) => scope.accounts!.has(a.id)) : this.accounts;
    if (inScope.length === 0) throw new GatewayError('no_accounts', `No ${this.provider} account is in this key's pool.`, { retryAfter: 5 });
    const states = await this.store.getAccountStates(inScope.map((a) => a.id));
    const usable: Candidate[] = [];
    let earliestReset: number | undefined;
    for (const account of inScope) {
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
    if (usable.length > 0) return usable;
    if (exclude.size === 0 && earliestReset !== undefined) {
      throw new GatewayError('usage_limit_reached', `Every ${this.provider} account is cooling down after upstream rate limits or has used its quota.`, {
        retryAfter: (earliestReset - now) / 1000,
        resetsAt: earliestReset,
      });
    }
    throw new GatewayError('no_accounts', `No ${this.provider} account is available.`, { retryAfter: 5 });
  }

  private pick(usable: Candidate[], scope: Scope): Candidate {
    return pickAccount(this.strategy, usable, this.cursor++, this.affinity ? scope.affinityKey : undefined)!;
  }

  /** The first account in selection order with a free slot, taken; undefined when all are full. */
  private async takeSlot(usable: Candidate[], scope: Scope): Promise<Taken | undefined> {
    const first = this.pick(usable, scope);
    const rest = this.affinity && scope.affinityKey !== undefined ? rendezvousOrder(scope.affinityKey, usable).slice(1) : usable.filter((c) => c !== first);
    for (const { account } of [first, ...rest]) {
      if (!account.maxConcurrent) return { account, release: this.begin(account.id) };
      const holder = randomUUID();
      if (!(await this.store.acquireAccountSlot(account.id, holder, account.maxConcurrent, this.bounds.slotTtlMs))) continue;
      const held = this.holders.get(account.id) ?? new Set();
      this.holders.set(account.id, held.add(holder));
      const end = this.begin(account.id);
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        end();
        held.delete(holder);
        // an expired slot frees itself anyway: a failed release only delays the next request
        void this.store.releaseAccountSlot(account.id, holder).catch(() => {}).finally(() => this.queue.wakeHead());
      };
      return { account, release };
    }
    return undefined;
  }

  /** Keeps this replica's slots alive while their requests run. */
  private async renewSlots(): Promise<void> {
    for (const [accountId, held] of this.holders) {
      if (held.size > 0) await this.store.renewAccountSlots(accountId, [...held], this.bounds.slotTtlMs).catch(() => {});
    }
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
