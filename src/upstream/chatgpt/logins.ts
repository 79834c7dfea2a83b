import { setTimeout as delay } from 'node:timers/promises';
import type { Dispatcher } from 'undici';
import type { OAuthConfig } from '../../config/schema.js';
import { GatewayError } from '../../errors.js';
import type { CredentialUpdate, Store, StoredCredential } from '../../store/types.js';
import type { OAuthBearer } from '../credentials.js';
import { tokenFacts } from './jwt.js';
import { RefreshRefused, refreshTokens } from './oauth.js';
import type { TokenVault } from './vault.js';

/** How often a request waiting on another replica's refresh looks at the store. */
const WAIT_POLL_MS = 100;
/** After a transient failure nobody in the cluster tries this account's refresh again for this long. */
const REFRESH_BACKOFF_MS = 5_000;
/** How often a refresh result is offered to the store again while the store does not answer. */
const COMMIT_RETRY_MS = 200;
/** A token refused this soon after its refresh is not refreshed again: the login itself is refused. */
const REFUSED_AFTER_REFRESH_MS = 60_000;

export type RefreshOutcome = 'refreshed' | 'reauth_required' | 'failed';

export interface LoginEvents {
  onRefresh?(accountId: string, outcome: RefreshOutcome, reason?: string): void;
  /** the login's tokens in use on this replica now (to keep them out of answers) */
  onTokens?(accountId: string, tokens: readonly string[]): void;
}

interface Held {
  bearer: OAuthBearer;
  expiresAt: number;
  lastRefresh: number;
}

/**
 * The access tokens of ChatGPT logins on this replica, refreshed once per cluster: a refresh
 * runs only under the account's store lock, fenced by the credential generation it started from
 * (a refresher that lost its lock cannot overwrite a newer login), and its result is stored
 * before any request uses it — the refresh token is single use, so a result that was not stored
 * is kept and offered again rather than refreshed anew. Other requests and replicas wait for the
 * stored result (bounded) instead of refreshing themselves.
 */
export class ChatgptLogins {
  private readonly held = new Map<string, Held>();
  /** one store round per account at a time on this replica; concurrent requests share it */
  private readonly renewing = new Map<string, Promise<OAuthBearer>>();
  /** refresh results the store did not take yet, by account: offered again before refreshing */
  private readonly unstored = new Map<string, { fence: number; update: CredentialUpdate }>();

  constructor(
    private readonly dispatcher: Dispatcher,
    private readonly store: Store,
    private readonly vault: TokenVault | null,
    private readonly oauth: OAuthConfig,
    private readonly events: LoginEvents = {},
  ) {}

  /** The account's current bearer, refreshed first when due (a still-valid one serves while another replica refreshes). */
  async bearer(accountId: string, now = Date.now()): Promise<OAuthBearer> {
    const held = this.held.get(accountId);
    if (held && !this.due(held, now)) return held.bearer;
    try {
      return await this.renew(accountId, held?.bearer.generation ?? 0, false);
    } catch (err) {
      // a transient failure before expiry: the token still works, the next request tries again
      if (held && held.expiresAt > Date.now() && !(err instanceof GatewayError && err.code === 'no_accounts')) return held.bearer;
      throw err;
    }
  }

  /** A newer bearer than `used` is known here: the request may simply try again with it. */
  newerThan(accountId: string, used: OAuthBearer): OAuthBearer | null {
    const held = this.held.get(accountId);
    return held && held.bearer.generation > used.generation ? held.bearer : null;
  }

  /**
   * The upstream refused `used` and a probe of the account agreed: a newer bearer (stored by
   * anyone, or refreshed now), or null when the login is refused as a whole (then marked).
   */
  async afterRejection(accountId: string, used: OAuthBearer): Promise<OAuthBearer | null> {
    const bearer = await this.renew(accountId, used.generation, true);
    return bearer.generation > used.generation ? bearer : null;
  }

  private due(login: Pick<Held, 'expiresAt' | 'lastRefresh'>, now: number): boolean {
    return now >= login.expiresAt - this.oauth.refreshMarginMs || now >= login.lastRefresh + this.oauth.refreshEveryMs;
  }

  private renew(accountId: string, stale: number, rejected: boolean): Promise<OAuthBearer> {
    let running = this.renewing.get(accountId);
    if (!running) {
      running = this.settle(accountId, stale, rejected).finally(() => this.renewing.delete(accountId));
      this.renewing.set(accountId, running);
    }
    return running;
  }

  /** Adopts a stored login that is good, refreshes one that is not under the lock, or waits for whoever holds it. */
  private async settle(accountId: string, stale: number, rejected: boolean): Promise<OAuthBearer> {
    const deadline = Date.now() + this.oauth.refreshLockMs + this.oauth.refreshTimeoutMs;
    for (;;) {
      const [login, states] = await Promise.all([this.store.getCredential(accountId), this.store.getAccountStates([accountId])]);
      if (!login) throw new GatewayError('no_accounts', `ChatGPT account ${accountId} has no stored login; import its auth.json.`);
      const reauth = states.get(accountId)?.reauthRequired;
      if (reauth) throw reauthRequired(accountId, reauth);
      const now = Date.now();
      const refusedNow = rejected && login.generation === stale;
      if (refusedNow && now - login.lastRefresh < REFUSED_AFTER_REFRESH_MS) {
        await this.markReauth(accountId, login.generation, 'access_token_refused_after_refresh');
        continue;
      }
      if (!refusedNow && !this.due(login, now)) return this.adopt(login);
      if (await this.store.claimCredentialRefresh(accountId, login.generation, this.oauth.refreshLockMs)) {
        const refreshed = await this.refreshHeld(login);
        if (refreshed) return refreshed;
        continue; // fenced out: someone else stored a newer login
      }
      // another replica refreshes; a token that has not expired yet serves meanwhile
      if (!refusedNow && now < login.expiresAt) return this.adopt(login);
      if (Date.now() > deadline) throw new GatewayError('login_refresh_failed', `The login of ChatGPT account ${accountId} is being refreshed elsewhere and did not finish in time.`);
      await delay(WAIT_POLL_MS);
    }
  }

  /** Runs the refresh this replica holds the lock for; null when the store took another login meanwhile. */
  private async refreshHeld(login: StoredCredential): Promise<OAuthBearer | null> {
    const { id, generation: fence } = login;
    let update = this.unstored.get(id)?.fence === fence ? this.unstored.get(id)!.update : undefined;
    if (!update) {
      const vault = this.requireVault();
      try {
        const tokens = await refreshTokens(this.dispatcher, this.oauth, vault.open(id, login.sealed));
        const facts = tokenFacts({ ...tokens, accountId: login.chatgptAccountId });
        update = { sealed: vault.seal(id, tokens), ...facts, lastRefresh: Date.now() };
      } catch (err) {
        if (err instanceof RefreshRefused) {
          await this.markReauth(id, fence, err.reason);
          throw reauthRequired(id, err.reason);
        }
        this.events.onRefresh?.(id, 'failed', (err as Error).message);
        await this.store.backOffCredentialRefresh(id, fence, REFRESH_BACKOFF_MS).catch(() => {});
        throw new GatewayError('login_refresh_failed', `The login of ChatGPT account ${id} could not be refreshed: ${(err as Error).message}.`, { cause: err });
      }
    }
    const stored = await this.commit(id, fence, update);
    if (!stored) return null;
    this.events.onRefresh?.(id, 'refreshed');
    return this.adopt(stored);
  }

  /** Store first, then use: retried while this replica's lock lasts, kept for the next try after that. */
  private async commit(accountId: string, fence: number, update: CredentialUpdate): Promise<StoredCredential | null> {
    const until = Date.now() + this.oauth.refreshLockMs;
    for (;;) {
      try {
        const stored = await this.store.commitCredentialRefresh(accountId, fence, update);
        this.unstored.delete(accountId);
        return stored;
      } catch (err) {
        if (Date.now() >= until) {
          this.unstored.set(accountId, { fence, update });
          throw err;
        }
        await delay(COMMIT_RETRY_MS);
      }
    }
  }

  private async markReauth(accountId: string, fence: number, reason: string): Promise<void> {
    if (await this.store.markCredentialReauth(accountId, fence, reason)) this.events.onRefresh?.(accountId, 'reauth_required', reason);
  }

  private adopt(login: StoredCredential): OAuthBearer {
    const tokens = this.requireVault().open(login.id, login.sealed);
    const bearer = { accessToken: tokens.accessToken, chatgptAccountId: login.chatgptAccountId, generation: login.generation };
    this.events.onTokens?.(login.id, [tokens.accessToken, tokens.refreshToken, tokens.idToken]);
    this.held.set(login.id, { bearer, expiresAt: login.expiresAt, lastRefresh: login.lastRefresh });
    return bearer;
  }

  private requireVault(): TokenVault {
    if (!this.vault) throw new GatewayError('encryption_key_missing', 'ChatGPT logins need TOLLGATE_ENCRYPTION_KEY on every replica.');
    return this.vault;
  }
}

function reauthRequired(accountId: string, reason: string): GatewayError {
  return new GatewayError('no_accounts', `ChatGPT account ${accountId} needs a new login (${reason}): import a fresh Codex auth.json.`);
}
