import { Agent, request, type Dispatcher } from 'undici';
import type { Config, ProviderName } from '../config/schema.js';
import { upstreamFailure } from '../errors.js';
import type { HeaderMap } from '../proxy/headers.js';
import type { Store } from '../store/types.js';
import type { Account } from './accounts.js';
import { withAccountCredential } from './credentials.js';
import type { ProviderPool } from './pool.js';

export interface UpstreamRequest {
  method: 'GET' | 'POST';
  /** the canonical API path, e.g. `/v1/responses`, with its query string */
  path: string;
  /** already cleaned of client credentials */
  headers: HeaderMap;
  body?: Buffer;
  signal?: AbortSignal;
  /** bind to this account (bridge affinity) instead of choosing one */
  accountId?: string;
}

export interface UpstreamReply {
  account: Account;
  statusCode: number;
  headers: Record<string, string | string[] | undefined>;
  body: Dispatcher.ResponseData['body'];
  /** ends this request's in-flight slot; safe to call more than once */
  release: () => void;
}

export interface UpstreamEvents {
  onUpstreamError?(provider: ProviderName, accountId: string, kind: string): void;
  onCooldown?(provider: ProviderName, accountId: string, untilMs: number): void;
}

/** Statuses worth another account: rate limited, account refused, upstream broken. */
const RETRYABLE = (status: number) => status === 429 || status === 401 || status === 403 || status >= 500;

export function upstreamUrl(account: Account, path: string): string {
  // ChatGPT's Codex backend has no `/v1` segment: its base URL already ends at `/backend-api/codex`.
  return account.baseUrl + (account.provider === 'chatgpt' ? path.replace(/^\/v1(?=\/)/, '') : path);
}

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
 * Sends a request to one provider's accounts with failover: a connection error, 5xx, 429 or
 * 401/403 moves on to the next account, which is only possible because nothing has reached the
 * client yet. The last upstream answer passes through when every account failed.
 */
export class UpstreamClient {
  constructor(
    private readonly dispatcher: Dispatcher,
    private readonly store: Store,
    private readonly cooldownMs: number,
    private readonly events: UpstreamEvents = {},
  ) {}

  async send(pool: ProviderPool, req: UpstreamRequest): Promise<UpstreamReply> {
    const tried = new Set<string>();
    let lastReply: UpstreamReply | undefined;
    let lastError: unknown;
    for (;;) {
      let account: Account;
      try {
        account = req.accountId ? this.boundAccount(pool, req.accountId, tried) : await pool.choose(tried);
      } catch (noneLeft) {
        if (lastReply) return lastReply;
        if (lastError) throw upstreamFailure(lastError);
        throw noneLeft;
      }
      tried.add(account.id);
      const release = pool.begin(account.id);
      let reply: UpstreamReply;
      try {
        const res = await request(upstreamUrl(account, req.path), {
          dispatcher: this.dispatcher,
          method: req.method,
          headers: withAccountCredential(account.provider, account, req.headers),
          body: req.body,
          signal: req.signal,
        });
        reply = { account, statusCode: res.statusCode, headers: res.headers, body: res.body, release };
      } catch (err) {
        release();
        if (req.signal?.aborted) throw err;
        this.events.onUpstreamError?.(pool.provider, account.id, (err as { code?: string }).code ?? 'error');
        lastError = err;
        continue;
      }
      if (!RETRYABLE(reply.statusCode)) return reply;
      await this.noteFailure(pool, reply);
      if (lastReply) discard(lastReply);
      lastReply = reply;
    }
  }

  private boundAccount(pool: ProviderPool, accountId: string, tried: ReadonlySet<string>): Account {
    const account = pool.find(accountId);
    if (!account || tried.has(accountId)) throw new Error('bound account already tried');
    return account;
  }

  private async noteFailure(pool: ProviderPool, reply: UpstreamReply): Promise<void> {
    const { account, statusCode } = reply;
    this.events.onUpstreamError?.(pool.provider, account.id, String(statusCode));
    if (statusCode === 429) {
      const until = Date.now() + (retryAfterMs(reply.headers['retry-after']) ?? this.cooldownMs);
      await this.store.setAccountCooldown(account.id, until);
      this.events.onCooldown?.(pool.provider, account.id, until);
    } else if (statusCode === 401 || statusCode === 403) {
      // the account's credential was refused: unusable until an operator re-enables it
      await this.store.setAccountDisabled(account.id, true);
    }
  }
}

/** A failed attempt's body must be read or dumped, or the connection hangs on a busy pool. */
function discard(reply: UpstreamReply): void {
  reply.release();
  reply.body.dump().catch(() => {});
}
