import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { generateKey } from '../auth/keys.js';
import { limitsSchema } from '../config/schema.js';
import { GatewayError } from '../errors.js';
import type { Gateway } from '../gateway.js';
import type { AccountState, QuotaWindow, StoredCredential } from '../store/types.js';
import type { KeyRecord } from '../store/types.js';
import { unavailability } from '../upstream/accounts.js';
import { parseHistoryQuery, sendHistory, usageHistory } from '../metering/history.js';
import { authFileSchema, loginFromAuthFile } from '../upstream/chatgpt/auth-file.js';
import { storeLogin } from '../upstream/chatgpt/import.js';
import { MalformedToken } from '../upstream/chatgpt/jwt.js';

const keyFields = {
  allowed_models: z.array(z.string().min(1)).nullable().optional(),
  expires_at: z.iso.datetime({ offset: true }).nullable().optional(),
  limits: limitsSchema.optional(),
  accounts: z.array(z.string().min(1)).min(1).nullable().optional(),
  pool: z.string().min(1).nullable().optional(),
  webhook_url: z.url().nullable().optional(),
};
const createKeySchema = z.object({ name: z.string().min(1).max(200), ...keyFields }).strict();
const patchKeySchema = z.object({ disabled: z.boolean().optional(), ...keyFields }).strict();
/** A Codex auth.json plus the account's id (and optional label); other auth.json fields are ignored. */
const importAccountSchema = authFileSchema.extend({
  id: z.string().regex(/^[\w.-]{1,64}$/, 'must be 1-64 letters, digits, _, . or -'),
  label: z.string().min(1).max(200).optional(),
  provider: z.literal('chatgpt').optional(),
});

const iso = (ms: number | null | undefined) => (ms ? new Date(ms).toISOString() : null);
const quotaWindow = (window: QuotaWindow | undefined) =>
  window ? { used_percent: window.usedPercent, window_minutes: window.windowMinutes, resets_at: iso(window.resetsAt) } : null;

/** What the admin API shows of a ChatGPT login: facts and state, never a token. */
function loginView(login: StoredCredential | undefined, state: AccountState) {
  return {
    label: login?.label ?? null,
    chatgpt_account_id: login?.chatgptAccountId ?? null,
    plan_type: login?.planType ?? null,
    email: login?.email ?? null,
    token_expires_at: iso(login?.expiresAt),
    last_refresh: iso(login?.lastRefresh),
    reauth_reason: state.reauthRequired ?? null,
    quota: { primary: quotaWindow(state.quota?.primary), secondary: quotaWindow(state.quota?.secondary), observed_at: iso(state.quota?.observedAt) },
  };
}

/** A key's account scope must name what exists: an unknown id or pool would silently serve nothing. */
function checkScope(gateway: Gateway, scope: { accounts?: string[] | null; pool?: string | null }): void {
  if (scope.accounts && scope.pool) throw new GatewayError('invalid_request', 'accounts, pool: a key names accounts or a pool, not both', { param: 'pool' });
  if (scope.pool && !gateway.config.pools[scope.pool]) throw new GatewayError('invalid_request', `pool: no pool named ${scope.pool}`, { param: 'pool' });
  const unknown = scope.accounts?.find((id) => !gateway.hasAccount(id));
  if (unknown !== undefined) throw new GatewayError('invalid_request', `accounts: no account with id ${unknown}`, { param: 'accounts' });
}

/** The record as the admin API shows it: everything but the hash. */
export function publicKey(record: KeyRecord) {
  const { sha256: _hash, origin: _origin, ...rest } = record;
  return rest;
}

function parseBody<T>(schema: z.ZodType<T>, request: FastifyRequest): T {
  // the shared body parser's ParsedBody
  const result = schema.safeParse((request.body as { json(): unknown } | undefined)?.json() ?? {});
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  throw new GatewayError('invalid_request', `${issue.path.join('.') || 'body'}: ${issue.message}`, { param: issue.path.join('.') });
}

const digest = (secret: string) => createHash('sha256').update(secret).digest();

/** Who acted, in the audit log: a short id of the admin token that does not reveal it. */
export function adminTokenId(token: string): string {
  return digest(token).toString('hex').slice(0, 8);
}

/** A key as the audit log shows it: the fields an admin sets, never the secret or its hash. */
function auditedKey(record: KeyRecord) {
  const { name, disabled, allowed_models, expires_at, limits, accounts = null, pool = null, webhook_url = null } = record;
  return { name, disabled, allowed_models, expires_at, limits, accounts, pool, webhook_url };
}

/** The fields that differ between two audited records, as { before, after }. */
function changedFields<T extends Record<string, unknown>>(before: T, after: T) {
  const changed = Object.keys(after).filter((k) => JSON.stringify(before[k]) !== JSON.stringify(after[k]));
  const pick = (r: T) => Object.fromEntries(changed.map((k) => [k, r[k]]));
  return { before: pick(before), after: pick(after) };
}

/** Compares fixed-length digests, so neither the time taken nor an early exit tells the token's length. */
export function sameSecret(presented: string, expected: string): boolean {
  return timingSafeEqual(digest(presented), digest(expected));
}

/**
 * Logins that admit a request besides the token (the dashboard's): `admits` is false without
 * one and throws for a refused change. An interface here, so admin/ need not import the dashboard.
 */
export interface AdminLogins {
  admits(request: FastifyRequest): boolean;
}

/** onRequest hook of admin routes: the admin token as Bearer, or a dashboard login (with CSRF token on changes). */
export function adminAuth(token: string, sessions?: AdminLogins) {
  return async (request: FastifyRequest): Promise<void> => {
    const presented = /^\s*bearer\s+(.+)$/i.exec(request.headers.authorization ?? '')?.[1]?.trim() ?? '';
    if (sameSecret(presented, token) || sessions?.admits(request)) return;
    throw new GatewayError('invalid_admin_token', 'Admin API: send "Authorization: Bearer <TOLLGATE_ADMIN_TOKEN>".');
  };
}

/** `/admin/*`: key and account administration behind the admin token; off when no token is set. */
export function registerAdminRoutes(app: FastifyInstance, gateway: Gateway, sessions?: AdminLogins): void {
  const token = gateway.config.adminToken;
  if (!token) return;
  const { store } = gateway;
  // One line per change made, on a logger of its own name. Kept at info under a quieter LOG_LEVEL
  // (warn, error): only `silent` silences it.
  const audit = gateway.log.child(
    { logger: 'audit', admin: adminTokenId(token) },
    { level: gateway.log.level === 'silent' ? 'silent' : 'info' },
  );
  const audited = (request: FastifyRequest, change: Record<string, unknown>) =>
    audit.info({ reqId: request.id, route: `${request.method} ${request.routeOptions.url}`, ...change }, 'admin change');

  app.register(async (admin) => {
    admin.addHook('onRequest', adminAuth(token, sessions));

    const loadKey = async (id: string) => {
      const record = await store.getKeyById(id);
      if (!record) throw new GatewayError('not_found', `No key with id ${id}.`);
      return record;
    };

    admin.post('/admin/keys', async (request, reply) => {
      const body = parseBody(createKeySchema, request);
      checkScope(gateway, body);
      const { id, secret, sha256 } = generateKey();
      const record: KeyRecord = {
        id,
        name: body.name,
        sha256,
        allowed_models: body.allowed_models ?? null,
        expires_at: body.expires_at ?? null,
        limits: body.limits ?? [],
        disabled: false,
        accounts: body.accounts ?? null,
        pool: body.pool ?? null,
        webhook_url: body.webhook_url ?? null,
        created_at: new Date().toISOString(),
        origin: 'admin',
      };
      await store.putKey(record);
      audited(request, { keyId: id, before: null, after: auditedKey(record) });
      const { id: _id, ...shown } = publicKey(record);
      return reply.code(201).send({ id, key: secret, ...shown });
    });

    admin.get('/admin/keys', async () => ({ data: (await store.listKeys()).map(publicKey) }));

    admin.get<{ Params: { id: string } }>('/admin/keys/:id', async (request) => publicKey(await loadKey(request.params.id)));

    admin.patch<{ Params: { id: string } }>('/admin/keys/:id', async (request) => {
      const changes = parseBody(patchKeySchema, request);
      const record = await loadKey(request.params.id);
      const updated: KeyRecord = {
        ...record,
        ...(changes.disabled !== undefined && { disabled: changes.disabled }),
        ...(changes.allowed_models !== undefined && { allowed_models: changes.allowed_models }),
        ...(changes.expires_at !== undefined && { expires_at: changes.expires_at }),
        ...(changes.limits !== undefined && { limits: changes.limits }),
        ...(changes.accounts !== undefined && { accounts: changes.accounts }),
        ...(changes.pool !== undefined && { pool: changes.pool }),
        ...(changes.webhook_url !== undefined && { webhook_url: changes.webhook_url }),
      };
      checkScope(gateway, updated);
      await store.putKey(updated);
      gateway.keys.forget(record);
      audited(request, { keyId: record.id, ...changedFields(auditedKey(record), auditedKey(updated)) });
      return publicKey(updated);
    });

    admin.delete<{ Params: { id: string } }>('/admin/keys/:id', async (request, reply) => {
      const record = await loadKey(request.params.id);
      await store.deleteKey(record.id);
      gateway.keys.forget(record);
      audited(request, { keyId: record.id, before: auditedKey(record), after: null });
      return reply.code(204).send();
    });

    admin.get('/admin/usage', async (request, reply) => {
      const query = parseHistoryQuery(request);
      const keyIds = (await store.listKeys()).map((key) => key.id);
      return sendHistory(request, reply, query, await usageHistory(store, keyIds, query));
    });

    admin.get('/admin/accounts', async () => {
      const now = Date.now();
      const data = [];
      const logins = gateway.pools.has('chatgpt') ? new Map((await store.listCredentials()).map((c) => [c.id, c])) : new Map();
      for (const pool of gateway.pools.values()) {
        await pool.syncImported(true, now);
        const states = await store.getAccountStates(pool.accounts.map((a) => a.id));
        for (const account of pool.accounts) {
          const state = states.get(account.id) ?? {};
          const blocked = unavailability(state, now);
          data.push({
            id: account.id,
            provider: pool.provider,
            state: blocked?.reason ?? 'active',
            cooldown_until: blocked?.reason === 'cooldown' || blocked?.reason === 'quota_exhausted' ? iso(blocked.until) : null,
            in_flight: pool.inFlightOf(account.id),
            recent_tokens: pool.recentTokensOf(account.id, now),
            ...(account.oauth && loginView(logins.get(account.id), state)),
          });
        }
      }
      return { data };
    });

    admin.post('/admin/accounts', async (request, reply) => {
      const body = parseBody(importAccountSchema, request);
      const pool = gateway.pools.get('chatgpt');
      if (!pool) throw new GatewayError('invalid_request', 'No chatgpt provider is configured on this gateway: add providers.chatgpt first.');
      if (!gateway.vault) throw new GatewayError('encryption_key_missing', 'Importing a ChatGPT login needs TOLLGATE_ENCRYPTION_KEY on every replica.');
      const configured = pool.find(body.id);
      if (configured && !configured.oauth) throw new GatewayError('invalid_request', `Account ${body.id} is configured with a static credential.`, { param: 'id' });
      if ([...gateway.pools.values()].some((p) => p !== pool && p.find(body.id))) throw new GatewayError('invalid_request', `Account id ${body.id} is taken by another provider.`, { param: 'id' });
      let login;
      try {
        login = loginFromAuthFile(body);
      } catch (err) {
        if (err instanceof MalformedToken) throw new GatewayError('invalid_request', err.message, { param: 'tokens' });
        throw err;
      }
      const stored = await storeLogin(store, gateway.vault, { id: body.id, label: body.label ?? null, origin: configured ? 'config' : 'admin' }, login);
      if (!stored) {
        throw new GatewayError('invalid_request', `Account ${body.id} has a newer login in the store (refreshed since this auth.json): log in with Codex again and import the new file.`, { param: 'last_refresh' });
      }
      await pool.syncImported(true);
      const state = (await store.getAccountStates([body.id])).get(body.id) ?? {};
      audited(request, { accountId: body.id, provider: 'chatgpt', before: null, after: { label: stored.label, plan_type: stored.planType, generation: stored.generation } });
      return reply.code(201).send({ id: body.id, provider: 'chatgpt', state: unavailability(state, Date.now())?.reason ?? 'active', ...loginView(stored, state) });
    });

    for (const action of ['enable', 'disable'] as const) {
      admin.post<{ Params: { id: string } }>(`/admin/accounts/:id/${action}`, async (request) => {
        const { id } = request.params;
        const pool = [...gateway.pools.values()].find((p) => p.find(id));
        if (!pool) throw new GatewayError('not_found', `No account with id ${id}.`);
        const before = unavailability((await store.getAccountStates([id])).get(id) ?? {}, Date.now())?.reason ?? 'active';
        await store.setAccountDisabled(id, action === 'disable');
        // enabling also ends a cooldown: the operator says the account is good
        if (action === 'enable') await store.setAccountCooldown(id, 0);
        const state = action === 'enable' ? 'active' : 'disabled';
        audited(request, { accountId: id, provider: pool.provider, before: { state: before }, after: { state } });
        return { id, provider: pool.provider, state };
      });
    }
  });
}
