import type { IncomingHttpHeaders } from 'node:http';
import { Agent, type Dispatcher } from 'undici';
import WebSocket from 'ws';
import type { Config, ProviderName } from '../config/schema.js';
import { GatewayError, upstreamFailure } from '../errors.js';
import type { CancelSignal } from '../http/client-gone.js';
import type { HeaderMap } from '../http/headers.js';
import type { QuotaSnapshot, Store } from '../store/types.js';
import { upstreamTarget, upstreamUrl, type Account } from './accounts.js';
import type { ChatgptLogins } from './chatgpt/logins.js';
import { exhaustedUntil, quotaFromHeaders } from './chatgpt/quota.js';
import { withAccountCredential, type OAuthBearer } from './credentials.js';
import type { ProviderPool, Scope } from './pool.js';
import { AccountProbe, type ProbeEvents } from './probe.js';

export interface UpstreamTarget {
  /** the canonical API path, e.g. `/v1/responses`, with its query string */
  path: string;
  /** already cleaned of client credentials */
  headers: HeaderMap;
  /** bind to this account (bridge affinity) instead of choosing one */
  accountId?: string;
  /** the caller's affinity key and account pool */
  scope?: Scope;
}

export interface UpstreamRequest extends UpstreamTarget {
  method: 'GET' | 'POST';
  body?: Buffer;
  signal?: CancelSignal;
}

export interface UpstreamReply {
  account: Account;
  statusCode: number;
  headers: IncomingHttpHeaders;
  body: Dispatcher.ResponseData['body'];
  /** ends this request's in-flight slot; safe to call more than once */
  release: () => void;
}

export interface UpstreamSocket {
  account: Account;
  socket: WebSocket;
  /** the upstream's handshake response headers (x-codex-turn-state, openai-model, …) */
  headers: IncomingHttpHeaders;
  release: () => void;
}

/** An upstream refused the WebSocket handshake on every account; the client gets the same status. */
export class HandshakeRefused extends Error {
  constructor(readonly statusCode: number, readonly headers: IncomingHttpHeaders, readonly body: string) {
    super(`upstream refused the WebSocket handshake with ${statusCode}`);
  }
}

export interface UpstreamEvents extends ProbeEvents {
  onUpstreamError?(provider: ProviderName, accountId: string, kind: string): void;
  onCooldown?(provider: ProviderName, accountId: string, untilMs: number): void;
  onQuota?(provider: ProviderName, accountId: string, quota: QuotaSnapshot): void;
}

/** After a failed answer: try the next account, give the caller this answer, or try the same account again (a newer login). */
type FailureStep = 'next' | 'stop' | 'again';

/** One try on one account: either an answer (any status) or a thrown connection error. */
interface Attempt<T> {
  statusCode: number;
  headers: IncomingHttpHeaders;
  value: T;
  /** frees what a failed attempt holds (read the body, close the socket) */
  discard(): void;
}

/** Statuses that may be worth another account: rate limited, refused (if the probe agrees), upstream broken. */
const RETRYABLE = (status: number) => status === 429 || status === 401 || status === 403 || status >= 500;

export const MAX_WEBSOCKET_MESSAGE_BYTES = 64 * 1024 * 1024;

/** Seconds or an HTTP date, as upstreams send it; undefined when absent or unreadable. */
export function retryAfterMs(value: string | string[] | undefined, now = Date.now()): number | undefined {
  const text = Array.isArray(value) ? value[0] : value;
  if (!text) return undefined;
  if (/^\d+(\.\d+)?$/.test(text.trim())) return Number(text) * 1000;
  const date = Date.parse(text);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

export function buildAgent(config: Config['upstream']): Agent {
  return new Agent({
    connectTimeout: config.connectTimeoutMs,
    headersTimeout: config.headersTimeoutMs,
    bodyTimeout: config.bodyTimeoutMs,
    keepAliveTimeout: 30_000,
  });
}

/**
 * Talks to one provider's accounts with failover, over HTTP or WebSocket: a connection error,
 * 5xx, 429, or a 401/403 that a probe of the account confirms, moves on to the next account,
 * which is only possible because nothing has reached the client yet. The last upstream answer
 * passes through when every account failed.
 */
export class UpstreamClient {
  private readonly probe: AccountProbe;

  constructor(
    private readonly dispatcher: Dispatcher,
    private readonly store: Store,
    private readonly config: Config['upstream'],
    private readonly events: UpstreamEvents = {},
    /** ChatGPT logins (OAuth); absent when no account has one */
    private readonly logins?: ChatgptLogins,
  ) {
    this.probe = new AccountProbe(dispatcher, store, config, events, (account) => this.bearerFor(account));
  }

  async send(pool: ProviderPool, req: UpstreamRequest): Promise<UpstreamReply> {
    const { account, attempt, release } = await this.failover(pool, req, req.signal, async (account, bearer) => {
      const res = await this.dispatcher.request({
        ...upstreamTarget(account, req.path),
        method: req.method,
        headers: withAccountCredential(account, req.headers, bearer),
        body: req.body,
        signal: req.signal,
      });
      return { statusCode: res.statusCode, headers: res.headers, value: res.body, discard: () => void res.body.dump().catch(() => {}) };
    });
    return { account, statusCode: attempt.statusCode, headers: attempt.headers, body: attempt.value, release };
  }

  /** Opens the Responses WebSocket on an account; throws `HandshakeRefused` when every account refused. */
  async openSocket(pool: ProviderPool, target: UpstreamTarget): Promise<UpstreamSocket> {
    const { account, attempt, release } = await this.failover(pool, target, undefined, (account, bearer) => this.handshake(account, target, bearer));
    if (attempt.statusCode !== 101) {
      release();
      throw new HandshakeRefused(attempt.statusCode, attempt.headers, (attempt.value as { body: string }).body);
    }
    return { account, socket: (attempt.value as { socket: WebSocket }).socket, headers: attempt.headers, release };
  }

  private handshake(account: Account, target: UpstreamTarget, bearer?: OAuthBearer): Promise<Attempt<{ socket?: WebSocket; body: string }>> {
    const url = upstreamUrl(account, target.path).replace(/^http/, 'ws');
    const headers = withAccountCredential(account, target.headers, bearer);
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(url, {
        headers: headers as Record<string, string>,
        perMessageDeflate: this.config.websocketCompression,
        maxPayload: MAX_WEBSOCKET_MESSAGE_BYTES,
        handshakeTimeout: this.config.connectTimeoutMs,
      });
      let upgradeHeaders: IncomingHttpHeaders = {};
      socket.once('upgrade', (res) => (upgradeHeaders = res.headers));
      socket.once('open', () => {
        socket.off('error', reject);
        // a socket error is always followed by 'close', which every owner of the socket handles;
        // without a listener the error event would take the process down
        socket.on('error', () => {});
        resolve({ statusCode: 101, headers: upgradeHeaders, value: { socket, body: '' }, discard: () => socket.terminate() });
      });
      socket.once('unexpected-response', (_req, res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          socket.terminate();
          resolve({ statusCode: res.statusCode ?? 502, headers: res.headers, value: { body: Buffer.concat(chunks).toString('utf8') }, discard: () => {} });
        });
      });
      socket.once('error', reject);
    });
  }

  private async failover<T>(
    pool: ProviderPool,
    target: UpstreamTarget,
    signal: CancelSignal | undefined,
    attemptOn: (account: Account, bearer?: OAuthBearer) => Promise<Attempt<T>>,
  ): Promise<{ account: Account; attempt: Attempt<T>; release: () => void }> {
    const tried = new Set<string>();
    /** accounts tried again with a newer login: once each per request */
    const renewed = new Set<string>();
    let last: { account: Account; attempt: Attempt<T>; release: () => void } | undefined;
    let lastError: unknown;
    const dropLast = () => {
      last?.release();
      last?.attempt.discard();
      last = undefined;
    };
    for (;;) {
      let account: Account;
      let release: () => void;
      try {
        if (target.accountId) {
          account = this.boundAccount(pool, target.accountId, tried, target.scope);
          release = pool.begin(account.id);
        } else {
          ({ account, release } = await pool.take(tried, target.scope, signal));
        }
      } catch (noneLeft) {
        if (last) return last;
        // a login that could not be refreshed says so; a connection error becomes 502/504
        if (lastError) throw lastError instanceof GatewayError ? lastError : upstreamFailure(lastError);
        throw noneLeft;
      }
      tried.add(account.id);
      let attempt: Attempt<T>;
      let bearer: OAuthBearer | undefined;
      try {
        // an API-key account has no login to wait for
        bearer = account.oauth ? await this.bearerFor(account) : undefined;
        attempt = await attemptOn(account, bearer);
      } catch (err) {
        release();
        if (signal?.aborted) {
          dropLast();
          throw err;
        }
        this.events.onUpstreamError?.(pool.provider, account.id, (err as { code?: string }).code ?? 'error');
        lastError = err;
        continue;
      }
      this.noteQuota(pool, account, attempt.headers);
      const step = RETRYABLE(attempt.statusCode) ? await this.noteFailure(pool, account, attempt, bearer) : 'stop';
      dropLast();
      last = { account, attempt, release };
      if (step === 'stop' || (step === 'again' && renewed.has(account.id))) return last;
      if (step === 'again') {
        renewed.add(account.id);
        tried.delete(account.id);
      }
    }
  }

  private async bearerFor(account: Account): Promise<OAuthBearer | undefined> {
    if (!account.oauth) return undefined;
    if (!this.logins) throw new GatewayError('encryption_key_missing', 'ChatGPT logins need TOLLGATE_ENCRYPTION_KEY on every replica.');
    return this.logins.bearer(account.id);
  }

  /** The ChatGPT backend reports the account's quota windows on every answer: kept cluster-wide for routing. */
  private noteQuota(pool: ProviderPool, account: Account, headers: IncomingHttpHeaders): void {
    if (account.provider !== 'chatgpt') return;
    const quota = quotaFromHeaders(headers);
    if (!quota) return;
    this.events.onQuota?.(pool.provider, account.id, quota);
    // best effort: the next answer reports again
    void this.store.setAccountQuota(account.id, quota).catch(() => {});
  }

  /** A session bound to an account gets that account or nothing: affinity over availability. */
  private boundAccount(pool: ProviderPool, accountId: string, tried: ReadonlySet<string>, scope?: Scope): Account {
    const account = pool.find(accountId, scope);
    if (!account || tried.has(accountId)) {
      throw new GatewayError('no_accounts', `Account ${accountId} of this session is not available.`, { retryAfter: 5 });
    }
    return account;
  }

  /** Records what a failed answer says about the account; what the request does next. */
  private async noteFailure(pool: ProviderPool, account: Account, attempt: Attempt<unknown>, bearer?: OAuthBearer): Promise<FailureStep> {
    this.events.onUpstreamError?.(pool.provider, account.id, String(attempt.statusCode));
    if (attempt.statusCode === 429) {
      // ChatGPT says when the full window resets; cooled until then, cluster-wide
      const now = Date.now();
      const quotaReset = exhaustedUntil(quotaFromHeaders(attempt.headers, now) ?? undefined, now);
      const until = quotaReset ?? now + (retryAfterMs(attempt.headers['retry-after']) ?? this.config.cooldownMs);
      await this.store.setAccountCooldown(account.id, until);
      this.events.onCooldown?.(pool.provider, account.id, until);
    } else if (account.oauth && bearer && attempt.statusCode === 401) {
      // a ChatGPT login is refreshed, not disabled: with a newer token known, just try again; else
      // once a probe agrees the token is refused, refresh it (once per cluster) and try again
      if (this.logins!.newerThan(account.id, bearer)) return 'again';
      if ((await this.probe.verdict(account)) !== 'refused') return 'stop';
      return (await this.logins!.afterRejection(account.id, bearer).catch(() => null)) ? 'again' : 'next';
    } else if (attempt.statusCode === 401 || attempt.statusCode === 403) {
      // refused for the request or for the account? Only a refused probe disables it (until an
      // operator re-enables it); otherwise the caller gets this answer and the account serves on.
      return (await this.probe.verdict(account)) === 'refused' ? 'next' : 'stop';
    }
    return 'next';
  }
}
