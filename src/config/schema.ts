import { z } from 'zod';
import { isReservedHeader } from './reserved-headers.js';
import { LIMIT_TYPES } from '../usage/counters.js';
import { priceTableSchema } from '../usage/pricing.js';
import { BadEncryptionKey, parseEncryptionKey } from './encryption-key.js';
import { LIMIT_WINDOWS } from '../usage/windows.js';

/** Defaults in one place, named so the README and the code agree. */
export const DEFAULTS = {
  host: '0.0.0.0',
  port: 8080,
  internalHost: '0.0.0.0',
  internalPort: 8081,
  bodyLimitBytes: 16 * 1024 * 1024,
  requestBodyTimeoutMs: 30_000,
  upstreamConnectTimeoutMs: 10_000,
  upstreamHeadersTimeoutMs: 300_000,
  upstreamBodyTimeoutMs: 300_000,
  /** when an upstream 429 gives no Retry-After */
  cooldownMs: 30_000,
  /** how long an account probe's verdict is reused, cluster-wide */
  probeIntervalMs: 5_000,
  probeTimeoutMs: 10_000,
  shutdownGraceMs: 30_000,
  websocketKeepaliveMs: 30_000,
  heartbeatMs: 2_000,
  staleAfterMs: 6_000,
  leaseMs: 15_000,
  contextTtlSec: 30,
  sessionIdleMs: 300_000,
  keyCacheTtlMs: 1_000,
  /** how long a request waits for a concurrency slot when every account is full */
  queueTimeoutMs: 10_000,
  /** ChatGPT logins: OpenAI's auth server and the public client id Codex CLI logs in with */
  oauthIssuer: 'https://auth.openai.com',
  oauthClientId: 'app_EMoamEEZ73f0CkXaXp7hrann',
  /** refresh an access token this long before its expiry */
  refreshMarginMs: 5 * 60_000,
  /** and at the latest this long after the last refresh, as Codex CLI does */
  refreshEveryMs: 8 * 24 * 3_600_000,
  /** one replica refreshes an account at a time: its lock lasts this long (longer than the token call) */
  refreshLockMs: 30_000,
  refreshTimeoutMs: 10_000,
  historyRetentionDays: 90,
  dashboardSessionTtlMs: 8 * 3_600_000,
  /** usage records of a key wait this long for others before one store write carries them all */
  usageFlushIntervalMs: 50,
} as const;

export const PROVIDERS = ['openai', 'anthropic', 'chatgpt'] as const;
export type ProviderName = (typeof PROVIDERS)[number];
export const STRATEGIES = ['round_robin', 'least_in_flight', 'usage_weighted', 'fill_first', 'quota_headroom'] as const;
export type Strategy = (typeof STRATEGIES)[number];

/** A positive whole number with its default (ports, timeouts, sizes). */
const positiveInt = (fallback: number) => z.number().int().positive().default(fallback);
const port = (fallback: number) => z.number().int().min(0).max(65535).default(fallback);
/** A config section: no unknown keys, and absent means every default (each field has one or is optional). */
const section = <Shape extends z.ZodRawShape>(shape: Shape) => z.object(shape).strict().prefault({} as never);

const hostPortSchema = z.object({ host: z.string().min(1), port: z.number().int().min(1).max(65535) }).strict();

const limitSchema = z
  .object({
    limit_type: z.enum(LIMIT_TYPES),
    limit_window: z.enum(LIMIT_WINDOWS),
    max_value: z.number().positive(),
  })
  // USD budgets may have cents; counts are whole
  .refine((l) => l.limit_type === 'cost_usd' || Number.isInteger(l.max_value), { message: 'must be a whole number', path: ['max_value'] });
export const limitsSchema = z.array(limitSchema);

const accountSchema = z
  .object({
    id: z.string().min(1),
    apiKey: z.string().min(1).optional(),
    /** a mounted secret file holding the credential */
    apiKeyFile: z.string().min(1).optional(),
    /** ChatGPT accounts: a Codex CLI auth.json, imported into the store at start (then refreshed there) */
    authFile: z.string().min(1).optional(),
    /** ChatGPT accounts: the `ChatGPT-Account-Id` header */
    accountId: z.string().min(1).optional(),
    /** OpenAI accounts: sent as `OpenAI-Organization` / `OpenAI-Project` */
    organization: z.string().min(1).optional(),
    project: z.string().min(1).optional(),
    /** extra headers on every upstream request and handshake of this account; never the credential */
    headers: z
      .record(z.string(), z.string().regex(/^[^\r\n\0]*$/, 'must not contain CR, LF or NUL'))
      .superRefine((headers, ctx) => {
        for (const name of Object.keys(headers)) {
          if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) ctx.addIssue({ code: 'custom', message: 'must be an HTTP header name', path: [name] });
          else if (isReservedHeader(name)) ctx.addIssue({ code: 'custom', message: 'is set by the gateway (credential, framing or internal header)', path: [name] });
        }
      })
      .optional(),
    /** this account's own base URL; the provider's by default */
    baseUrl: z.url().optional(),
    /** streams in flight at once on this account, cluster-wide; absent = no cap */
    maxConcurrent: z.number().int().positive().optional(),
  })
  .strict()
  .refine((a) => [a.apiKey, a.apiKeyFile, a.authFile].filter(Boolean).length === 1, {
    message: 'exactly one of apiKey, apiKeyFile or authFile is required',
    path: ['apiKey'],
  });

const providerSchema = z
  .object({
    baseUrl: z.url(),
    strategy: z.enum(STRATEGIES).default('round_robin'),
    /** whether the upstream accepts the Responses API over WebSocket */
    websocket: z.boolean().default(true),
    /** prompt-cache affinity: calls of one conversation go to one account (rendezvous hashing) */
    affinity: z.boolean().default(true),
    accounts: z.array(accountSchema).min(1),
  })
  .strict();

const chatgptProviderSchema = providerSchema
  .extend({
    /** ChatGPT accounts report their quota: routed by it unless told otherwise */
    strategy: z.enum(STRATEGIES).default('quota_headroom'),
    /** where and how logins are refreshed: `{issuer}/oauth/token` */
    oauth: section({
      issuer: z.url().default(DEFAULTS.oauthIssuer),
      clientId: z.string().min(1).default(DEFAULTS.oauthClientId),
      refreshMarginMs: positiveInt(DEFAULTS.refreshMarginMs),
      refreshEveryMs: positiveInt(DEFAULTS.refreshEveryMs),
      refreshLockMs: positiveInt(DEFAULTS.refreshLockMs),
      refreshTimeoutMs: positiveInt(DEFAULTS.refreshTimeoutMs),
    }).refine((o) => o.refreshTimeoutMs < o.refreshLockMs, { message: 'refreshTimeoutMs must be below refreshLockMs', path: ['refreshTimeoutMs'] }),
  })
  .strict();

/** 32 bytes as hex or base64; checked at start so a typo is not found at the first import. */
const encryptionKey = z.string().superRefine((text, ctx) => {
  try {
    parseEncryptionKey(text, 'key');
  } catch (err) {
    if (!(err instanceof BadEncryptionKey)) throw err;
    ctx.addIssue({ code: 'custom', message: err.message.replace(/^key: /, '') });
  }
});

/** `organization` and `project` are OpenAI API concepts: elsewhere they would be silently ignored. */
const openaiOnly = (provider: z.infer<typeof providerSchema> | undefined, ctx: z.RefinementCtx, name: string) =>
  provider?.accounts.forEach((account, i) => {
    for (const field of ['organization', 'project'] as const) {
      if (account[field] !== undefined) ctx.addIssue({ code: 'custom', message: 'only OpenAI accounts have one', path: [name, 'accounts', i, field] });
    }
  });

const staticKeySchema = z
  .object({
    id: z.string().min(1),
    name: z.string().min(1),
    sha256: z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex characters'),
    allowed_models: z.array(z.string()).nullable().default(null),
    expires_at: z.iso.datetime({ offset: true }).nullable().default(null),
    limits: limitsSchema.default([]),
    disabled: z.boolean().default(false),
    accounts: z.array(z.string().min(1)).min(1).nullable().default(null),
    pool: z.string().min(1).nullable().default(null),
    webhook_url: z.url().nullable().default(null),
  })
  .strict()
  .refine((k) => !(k.accounts && k.pool), { message: 'a key names accounts or a pool, not both', path: ['pool'] });

export const configSchema = z
  .object({
    server: section({
      host: z.string().default(DEFAULTS.host),
      port: port(DEFAULTS.port),
      internalHost: z.string().default(DEFAULTS.internalHost),
      internalPort: port(DEFAULTS.internalPort),
      bodyLimitBytes: positiveInt(DEFAULTS.bodyLimitBytes),
      /** the whole request body must arrive within this, from the request's start (else 408) */
      requestBodyTimeoutMs: positiveInt(DEFAULTS.requestBodyTimeoutMs),
      /** also serve /metrics on the public port (it is always on the internal one) */
      publicMetrics: z.boolean().default(false),
      shutdownGraceMs: z.number().int().min(0).default(DEFAULTS.shutdownGraceMs),
      /** WebSocket ping interval, both sides; a side that missed the previous pong is closed */
      websocketKeepaliveMs: positiveInt(DEFAULTS.websocketKeepaliveMs),
      instanceId: z.string().min(1).optional(),
      advertiseUrl: z.url().optional(),
    }),
    upstream: section({
      connectTimeoutMs: positiveInt(DEFAULTS.upstreamConnectTimeoutMs),
      headersTimeoutMs: positiveInt(DEFAULTS.upstreamHeadersTimeoutMs),
      bodyTimeoutMs: positiveInt(DEFAULTS.upstreamBodyTimeoutMs),
      cooldownMs: positiveInt(DEFAULTS.cooldownMs),
      /** after a 401/403 the account is probed alone; the verdict is shared for this long */
      probeIntervalMs: positiveInt(DEFAULTS.probeIntervalMs),
      probeTimeoutMs: positiveInt(DEFAULTS.probeTimeoutMs),
      /**
       * permessage-deflate on upstream WebSockets. Off by default: it costs about 3 ms per
       * bridged turn in zlib round trips (measured on loopback) and saves little on event frames.
       */
      websocketCompression: z.boolean().default(false),
      /** a request that finds every account at its maxConcurrent waits this long for a slot, then 503 */
      queueTimeoutMs: z.number().int().min(0).default(DEFAULTS.queueTimeoutMs),
    }),
    redis: section({
      url: z.string().min(1).optional(),
      /** Sentinel: the master `sentinelName` is found through these */
      sentinels: z.array(hostPortSchema).min(1).optional(),
      sentinelName: z.string().min(1).optional(),
      /** Cluster: seed nodes, used instead of the URL's host */
      cluster: z.array(hostPortSchema).min(1).optional(),
      keyPrefix: z.string().regex(/^[^{}]*$/, 'must not contain { or }').optional(),
      keyCacheTtlMs: z.number().int().min(0).max(1_000).default(DEFAULTS.keyCacheTtlMs),
    }),
    bridge: section({
      heartbeatMs: positiveInt(DEFAULTS.heartbeatMs),
      staleAfterMs: positiveInt(DEFAULTS.staleAfterMs),
      leaseMs: positiveInt(DEFAULTS.leaseMs),
      contextTtlSec: positiveInt(DEFAULTS.contextTtlSec),
      sessionIdleMs: positiveInt(DEFAULTS.sessionIdleMs),
    }),
    telemetry: section({
      /** export OpenTelemetry traces even without OTEL_EXPORTER_OTLP_ENDPOINT (to the OTLP default, localhost:4318) */
      tracing: z.boolean().default(false),
    }),
    usage: section({
      /** hourly usage history is kept this long after each hour, then the store drops it */
      historyRetentionDays: positiveInt(DEFAULTS.historyRetentionDays),
      /** a token limit may be overrun by what completes within one interval (see README) */
      flushIntervalMs: z.number().int().min(0).max(1_000).default(DEFAULTS.usageFlushIntervalMs),
    }),
    dashboard: section({
      /** serve the web dashboard at /dashboard (needs adminToken for the admin pages) */
      enabled: z.boolean().default(false),
      /** how long a dashboard login lasts */
      sessionTtlMs: positiveInt(DEFAULTS.dashboardSessionTtlMs),
    }),
    adminToken: z.string().min(16, 'must be at least 16 characters').optional(),
    internalSecret: z.string().min(16, 'must be at least 16 characters').optional(),
    providers: z
      .object({
        openai: providerSchema.optional(),
        anthropic: providerSchema.optional(),
        chatgpt: chatgptProviderSchema.optional(),
      })
      .strict()
      .refine((p) => Object.values(p).some(Boolean), { message: 'at least one provider is required' })
      .superRefine((p, ctx) => {
        openaiOnly(p.anthropic, ctx, 'anthropic');
        openaiOnly(p.chatgpt, ctx, 'chatgpt');
        for (const name of ['openai', 'anthropic'] as const) {
          p[name]?.accounts.forEach((account, i) => {
            if (account.authFile) ctx.addIssue({ code: 'custom', message: 'only ChatGPT accounts log in with a Codex auth.json', path: [name, 'accounts', i, 'authFile'] });
          });
        }
      }),
    /** POSTed to when a key's usage crosses 80 % and 100 % of a limit, signed with `secret` */
    webhook: z.object({ url: z.url().optional(), secret: z.string().min(16, 'must be at least 16 characters') }).strict().optional(),
    /** USD per 1 M tokens by model name or glob, over the shipped table */
    pricing: priceTableSchema.default({}),
    /** named groups of account ids that keys may be limited to (`pool:`) */
    pools: z.record(z.string().min(1), z.array(z.string().min(1)).min(1)).default({}),
    /** seals ChatGPT logins in the store (AES-256-GCM); `previousKey` still opens them while rotating */
    encryption: section({
      key: encryptionKey.optional(),
      previousKey: encryptionKey.optional(),
    }),
    keys: z.array(staticKeySchema).default([]),
  })
  .strict()
  .superRefine((c, ctx) => {
    const known = new Set(Object.values(c.providers).flatMap((p) => p?.accounts.map((a) => a.id) ?? []));
    for (const [name, ids] of Object.entries(c.pools)) {
      ids.forEach((id, i) => {
        if (!known.has(id)) ctx.addIssue({ code: 'custom', message: `no account with id ${id}`, path: ['pools', name, i] });
      });
    }
    c.keys.forEach((key, i) => {
      if (key.pool && !c.pools[key.pool]) ctx.addIssue({ code: 'custom', message: `no pool named ${key.pool}`, path: ['keys', i, 'pool'] });
      key.accounts?.forEach((id, j) => {
        if (!known.has(id)) ctx.addIssue({ code: 'custom', message: `no account with id ${id}`, path: ['keys', i, 'accounts', j] });
      });
    });
  })
  .refine((c) => !c.redis.url || c.internalSecret, {
    message: 'required when REDIS_URL is set (TOLLGATE_INTERNAL_SECRET)',
    path: ['internalSecret'],
  })
  .refine((c) => c.encryption.key || !c.providers.chatgpt?.accounts.some((a) => a.authFile), {
    message: 'required when a ChatGPT account logs in with an authFile (TOLLGATE_ENCRYPTION_KEY: 32 bytes, e.g. openssl rand -base64 32)',
    path: ['encryption', 'key'],
  });

export type Config = z.infer<typeof configSchema>;
export type ProviderConfig = z.infer<typeof providerSchema> & Partial<Pick<z.infer<typeof chatgptProviderSchema>, 'oauth'>>;
export type OAuthConfig = z.infer<typeof chatgptProviderSchema>['oauth'];
export type AccountConfig = z.infer<typeof accountSchema>;
export type StaticKeyConfig = z.infer<typeof staticKeySchema>;
