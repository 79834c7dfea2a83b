import type { FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import type { Agent } from 'undici';
import { KeyDirectory } from './auth/keys.js';
import { PROVIDERS, type Config, type ProviderName } from './config/schema.js';
import { GatewayError } from './errors.js';
import { buildMetrics, type Metrics } from './metrics/metrics.js';
import type { ParsedBody } from './server/types.js';
import { SecretScrubber } from './http/scrubber.js';
import type { ErrorClass, KeyRecord, Store } from './store/types.js';
import { ChatgptLogins } from './upstream/chatgpt/logins.js';
import { parseEncryptionKey } from './config/encryption-key.js';
import { TokenVault } from './upstream/chatgpt/vault.js';
import { ADMISSION_SPAN } from './telemetry/attributes.js';
import type { Tracing } from './telemetry/tracing.js';
import { UpstreamClient, buildAgent } from './upstream/client.js';
import { affinityKeyOf } from './upstream/cache-affinity.js';
import { ProviderPool, type Scope } from './upstream/pool.js';
import { CostMeter } from './metering/cost.js';
import { LimitAlerts } from './metering/limit-alerts.js';
import { MeteredCall } from './metering/metered-call.js';
import { UsageRecorder } from './metering/recorder.js';

const bodyModel = (request: FastifyRequest): string | undefined => (request.body as ParsedBody | undefined)?.top.model;

/**
 * The runtime parts one replica is made of, built once at start and shared by its routes.
 * Routes get this object; nothing in it reaches back into routes.
 */
export class Gateway {
  readonly keys: KeyDirectory;
  readonly pools = new Map<ProviderName, ProviderPool>();
  readonly metrics: Metrics;
  readonly agent: Agent;
  readonly upstream: UpstreamClient;
  readonly usage: UsageRecorder;
  /** every account's secret, whichever account served: one upstream may echo another's key */
  readonly scrubber: SecretScrubber;
  readonly cost: CostMeter;
  /** seals ChatGPT logins; null without TOLLGATE_ENCRYPTION_KEY */
  readonly vault: TokenVault | null;
  draining = false;

  constructor(
    readonly config: Config,
    readonly store: Store,
    readonly log: Logger,
    /** undefined unless tracing is on: every span is made behind a check of it */
    readonly tracing?: Tracing,
  ) {
    this.metrics = buildMetrics();
    this.keys = new KeyDirectory(store, config.redis.keyCacheTtlMs);
    this.cost = new CostMeter(config.pricing, {
      onUnpriced: (model, tokens) => this.metrics.unpricedTokens.inc({ model }, tokens),
      onFirstUnpriced: (model) => log.warn({ model }, 'no price for this model: its calls count as costing 0 (set pricing: in the config)'),
    });
    for (const provider of PROVIDERS) {
      const providerConfig = config.providers[provider];
      if (!providerConfig) continue;
      const bounds = { queueTimeoutMs: config.upstream.queueTimeoutMs, slotTtlMs: config.bridge.staleAfterMs, renewMs: config.bridge.heartbeatMs };
      this.pools.set(
        provider,
        new ProviderPool(provider, providerConfig, store, bounds, {
          onQueueDepth: (name, depth) => this.metrics.queueDepth.set({ provider: name }, depth),
          onQueueWait: (name, seconds, outcome) => this.metrics.queueWait.observe({ provider: name, outcome }, seconds),
        }),
      );
    }
    this.scrubber = new SecretScrubber([...this.pools.values()].flatMap((pool) => pool.accounts.map((account) => account.secret)));
    this.agent = buildAgent(config.upstream);
    const { key, previousKey } = config.encryption;
    this.vault = key ? new TokenVault(parseEncryptionKey(key, 'key'), previousKey ? parseEncryptionKey(previousKey, 'previousKey') : undefined) : null;
    const oauth = config.providers.chatgpt?.oauth;
    const logins = oauth
      ? new ChatgptLogins(this.agent, store, this.vault, oauth, {
          onRefresh: (account, outcome, reason) => {
            this.metrics.loginRefreshes.inc({ provider: 'chatgpt', account, outcome });
            if (outcome === 'reauth_required') log.error({ account, reason }, 'ChatGPT login needs re-authentication: import a fresh auth.json');
            else if (outcome === 'failed') log.warn({ account, reason }, 'ChatGPT login refresh failed; backing off');
            else log.info({ account }, 'ChatGPT login refreshed');
          },
          onTokens: (account, tokens) => this.scrubber.track(account, tokens),
        })
      : undefined;
    this.upstream = new UpstreamClient(
      this.agent,
      store,
      config.upstream,
      {
        onUpstreamError: (provider, account, kind) => this.metrics.upstreamErrors.inc({ provider, account, kind }),
        onCooldown: (provider, account) => this.metrics.cooldowns.inc({ provider, account }),
        onProbe: (provider, account, outcome) => this.metrics.accountProbes.inc({ provider, account, outcome }),
        onQuota: (provider, account, quota) => {
          for (const window of ['primary', 'secondary'] as const) {
            const reported = quota[window];
            if (reported) this.metrics.quotaUsed.set({ provider, account, window }, reported.usedPercent);
          }
        },
      },
      logins,
    );
    const alerts = config.webhook && new LimitAlerts(store, config.webhook, (err) => log.warn({ err }, 'limit webhook failed after retries'));
    this.usage = new UsageRecorder(store, {
      onError: (err) => log.warn({ err }, 'usage write failed; buffered until the store answers'),
      onDrop: () => this.metrics.usageDropped.inc(),
      onBacklog: (backlog) => this.metrics.usageBacklog.set(backlog),
      onWritten: alerts ? (keyId) => void this.announceCrossings(alerts, keyId) : undefined,
    }, { flushIntervalMs: config.usage.flushIntervalMs });
  }

  private async announceCrossings(alerts: LimitAlerts, keyId: string): Promise<void> {
    try {
      const key = await this.keys.byId(keyId);
      if (key) await alerts.check(key);
    } catch (err) {
      this.log.warn({ err, keyId }, 'limit crossings not checked');
    }
  }

  hasAccount(accountId: string): boolean {
    return [...this.pools.values()].some((pool) => pool.find(accountId));
  }

  /** What selection of an account for this authenticated request must respect (see `Scope`). */
  scopeOf(request: FastifyRequest, body: ParsedBody | undefined): Scope {
    const key = request.principal!.key;
    return { affinityKey: affinityKeyOf(request.headers, body, key.id), accounts: this.accountsOf(key) };
  }

  /** The accounts a key is limited to (its `accounts`, or its `pool` of the config); undefined = any. */
  accountsOf(key: KeyRecord): ReadonlySet<string> | undefined {
    if (key.accounts) return new Set(key.accounts);
    // a pool the config no longer has serves nothing rather than everything
    if (key.pool) return new Set(this.config.pools[key.pool] ?? []);
    return undefined;
  }

  /** The first configured provider of `preference`; 404 when none is configured. */
  poolFor(preference: readonly ProviderName[]): ProviderPool {
    for (const provider of preference) {
      const pool = this.pools.get(provider);
      if (pool) return pool;
    }
    throw new GatewayError('not_found', `No ${preference.join(' or ')} provider is configured on this gateway.`);
  }

  /**
   * The metered call of an authenticated request. Recording its usage also tells the pool
   * (usage-weighted selection), the token metrics and the request's access-log line.
   */
  meteredCall(request: FastifyRequest): MeteredCall {
    const { tracing } = this;
    return new MeteredCall({
      recorder: this.usage,
      key: () => request.principal!.key,
      model: () => bodyModel(request),
      onRecorded: (usage, served) => {
        request.facts.tokens = usage;
        this.pools.get(served.provider)?.noteTokens(served.accountId, usage.total_tokens);
        this.metrics.per.tokens(served.provider, 'input').inc(usage.input_tokens);
        this.metrics.per.tokens(served.provider, 'output').inc(usage.output_tokens);
      },
      costOf: (usage, model) => this.cost.of(usage, model),
      traceAdmission: tracing && ((admit) => tracing.around(ADMISSION_SPAN, request.span, admit)),
    });
  }

  /**
   * A model call (a body naming a model) of a known key answered with an error: one request and
   * its error class in the usage history. Called once per answered request, so it covers refusals
   * made before a metered call admitted anything (limits, model checks) as well as upstream errors.
   */
  recordFailure(request: FastifyRequest, status: number): void {
    const { keyId, accountId } = request.facts ?? {};
    const model = bodyModel(request);
    if (!keyId || model === undefined || status < 400) return;
    const error: ErrorClass = status === 429 ? 'rate_limited' : status < 500 ? 'client_error' : 'server_error';
    this.usage.recordFailure(keyId, { model, account: accountId ?? '', error });
  }

  async close(): Promise<void> {
    this.usage.stop();
    for (const pool of this.pools.values()) pool.close();
    await this.usage.flush().catch(() => {});
    await this.agent.close();
    await this.store.close();
    // last: the spans of the requests drained above are exported
    await this.tracing?.shutdown();
  }
}
