import { setTimeout as delay } from 'node:timers/promises';
import type { Dispatcher } from 'undici';
import type { Config, ProviderName } from '../config/schema.js';
import type { ProbeVerdict, Store } from '../store/types.js';
import { upstreamTarget, type Account } from './accounts.js';
import { withAccountCredential, type OAuthBearer } from './credentials.js';

/**
 * The cheapest call that needs nothing but a valid credential: the model list. OpenAI and
 * Anthropic `GET /v1/models`; ChatGPT's Codex backend `GET {baseUrl}/models`, the list Codex
 * itself fetches at start.
 */
const PROBE_PATH = '/v1/models';
/** How often a request waiting on another replica's probe looks for its verdict. */
const PENDING_POLL_MS = 100;
/** Time for the prober to write its verdict after the probe's own timeout. */
const VERDICT_WRITE_MS = 1_000;

export interface ProbeEvents {
  onProbe?(provider: ProviderName, accountId: string, verdict: ProbeVerdict): void;
}

/**
 * Checks an account alone, with no client input, after the upstream refused one of its requests
 * (401/403): a refusal may be the request's fault (a model its project may not use, a header
 * the client chose), and only the account's own fault may disable it. One probe per account
 * at a time on this replica (concurrent requests share it) and, through the store, at most one
 * per `probeIntervalMs` across the cluster.
 */
export class AccountProbe {
  private readonly running = new Map<string, Promise<ProbeVerdict>>();

  constructor(
    private readonly dispatcher: Dispatcher,
    private readonly store: Store,
    private readonly bounds: Pick<Config['upstream'], 'probeIntervalMs' | 'probeTimeoutMs'>,
    private readonly events: ProbeEvents = {},
    /** a ChatGPT login's current bearer */
    private readonly bearerOf: (account: Account) => Promise<OAuthBearer | undefined> = async () => undefined,
  ) {}

  /** `refused`: the account is disabled now (by whoever probed; a ChatGPT login is due a refresh); otherwise it stays as it is. */
  verdict(account: Account): Promise<ProbeVerdict> {
    let running = this.running.get(account.id);
    if (!running) {
      running = this.decide(account)
        .catch(() => 'inconclusive' as const) // the store did not answer: nothing is disabled on a guess
        .finally(() => this.running.delete(account.id));
      this.running.set(account.id, running);
    }
    return running;
  }

  /** A fresh verdict from the store, the result of a probe another replica is running, or our own probe. */
  private async decide(account: Account): Promise<ProbeVerdict> {
    for (;;) {
      const record = await this.store.claimAccountProbe(account.id, this.bounds.probeTimeoutMs + VERDICT_WRITE_MS);
      if (record === null) return this.probe(account);
      if (record !== 'pending') return record;
      // a pending record expires if its prober died, and the next claim is ours
      await delay(PENDING_POLL_MS);
    }
  }

  private async probe(account: Account): Promise<ProbeVerdict> {
    const verdict = await this.ask(account);
    // disabled before the verdict is visible: a replica reading `refused` finds the account out.
    // A ChatGPT login is refreshed instead, by whoever reads the verdict (see ChatgptLogins).
    if (verdict === 'refused' && !account.oauth) await this.store.setAccountDisabled(account.id, true);
    await this.store.setAccountProbeVerdict(account.id, verdict, this.bounds.probeIntervalMs);
    this.events.onProbe?.(account.provider, account.id, verdict);
    return verdict;
  }

  private async ask(account: Account): Promise<ProbeVerdict> {
    try {
      const res = await this.dispatcher.request({
        ...upstreamTarget(account, PROBE_PATH),
        method: 'GET',
        headers: withAccountCredential(account, { accept: 'application/json' }, await this.bearerOf(account)),
        headersTimeout: this.bounds.probeTimeoutMs,
        bodyTimeout: this.bounds.probeTimeoutMs,
      });
      await res.body.dump();
      if (res.statusCode === 401 || res.statusCode === 403) return 'refused';
      return res.statusCode < 300 ? 'ok' : 'inconclusive';
    } catch {
      // unreachable or too slow: says nothing about the credential
      return 'inconclusive';
    }
  }
}
