import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { adminAuth, sameSecret } from '../admin/routes.js';
import { GatewayError } from '../errors.js';
import type { Gateway } from '../gateway.js';
import { usageReport } from '../metering/routes.js';
import type { ParsedBody } from '../server/types.js';
import type { DashboardSessions } from './session.js';

/** Where `npm run build` (scripts/build-ui.mjs) puts the bundle: the same from src/ and dist/. */
export const UI_DIR = fileURLToPath(new URL('../../dist/ui/', import.meta.url));
const ASSETS = { 'app.js': 'text/javascript; charset=utf-8', 'app.css': 'text/css; charset=utf-8' } as const;
export const DASHBOARD_PAGES = ['/dashboard', '/dashboard/keys', '/dashboard/accounts', '/dashboard/usage', '/dashboard/me'];
const REPLICA_METRICS_TIMEOUT_MS = 1_000;

/** Everything is served from here: no inline script, nothing from elsewhere (uPlot sets inline styles). */
const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
};

function loadAssets(): Record<'index.html' | keyof typeof ASSETS, Buffer> {
  const names = ['index.html', ...Object.keys(ASSETS)] as const;
  const missing = names.filter((name) => !existsSync(UI_DIR + name));
  if (missing.length) throw new Error(`dashboard.enabled, but the dashboard bundle is missing (${UI_DIR}${missing[0]}): run \`npm run build\`.`);
  return Object.fromEntries(names.map((name) => [name, readFileSync(UI_DIR + name)])) as Record<(typeof names)[number], Buffer>;
}

/** The figures a replica's own /metrics (internal listener) gives of what it serves right now. */
const LIVE_GAUGES = { tollgate_in_flight_streams: 'in_flight_streams', tollgate_bridge_owned_sessions: 'bridge_sessions', tollgate_websocket_sessions: 'websocket_sessions' } as const;

async function liveFigures(advertiseUrl: string): Promise<Record<(typeof LIVE_GAUGES)[keyof typeof LIVE_GAUGES], number> | null> {
  try {
    const res = await fetch(`${advertiseUrl}/metrics`, { signal: AbortSignal.timeout(REPLICA_METRICS_TIMEOUT_MS) });
    if (!res.ok) return null;
    const figures = { in_flight_streams: 0, bridge_sessions: 0, websocket_sessions: 0 };
    for (const line of (await res.text()).split('\n')) {
      const match = /^(\w+)(?:\{[^}]*\})? (\S+)$/.exec(line);
      const name = match && LIVE_GAUGES[match[1] as keyof typeof LIVE_GAUGES];
      if (name) figures[name] += Number(match[2]);
    }
    return figures;
  } catch {
    return null; // a replica gone or unreachable shows as such
  }
}

/**
 * `/dashboard`: the web pages (one bundle, built by `npm run build`) and their login. The pages
 * call the admin API with the session cookie; `/dashboard/me` calls `/v1/usage` with a key.
 */
export function registerDashboard(app: FastifyInstance, gateway: Gateway, sessions: DashboardSessions | undefined): void {
  const assets = loadAssets();
  const page = (_request: FastifyRequest, reply: FastifyReply) =>
    reply.headers({ ...SECURITY_HEADERS, 'cache-control': 'no-store' }).type('text/html; charset=utf-8').send(assets['index.html']);
  for (const path of DASHBOARD_PAGES) app.get(path, page);
  for (const [name, type] of Object.entries(ASSETS)) {
    app.get(`/dashboard/assets/${name}`, (_request, reply) => reply.headers({ ...SECURITY_HEADERS, 'cache-control': 'no-cache' }).type(type).send(assets[name as keyof typeof ASSETS]));
  }

  const token = gateway.config.adminToken;
  const requireSessions = (): DashboardSessions => {
    if (!sessions) throw new GatewayError('not_found', 'The admin pages need an admin token (TOLLGATE_ADMIN_TOKEN); /dashboard/me works without.');
    return sessions;
  };

  app.post('/dashboard/api/login', async (request, reply) => {
    const live = requireSessions();
    const presented = ((request.body as ParsedBody | undefined)?.json() as { token?: unknown } | undefined)?.token;
    if (typeof presented !== 'string' || !sameSecret(presented, token!)) throw new GatewayError('invalid_admin_token', 'Dashboard login: that is not the admin token.');
    return live.start(request, reply);
  });

  // 200 either way: the page asks this first, and a logged-out visitor is not an error
  app.get('/dashboard/api/session', async (request) => ({ admin_enabled: Boolean(sessions), session: sessions?.current(request) ?? null }));

  app.post('/dashboard/api/logout', async (request, reply) => {
    if (!requireSessions().admits(request)) throw new GatewayError('invalid_admin_token', 'Dashboard: not logged in.');
    sessions!.end(reply);
    return reply.code(204).send();
  });

  if (!token) return;
  app.register(async (admin) => {
    admin.addHook('onRequest', adminAuth(token, sessions));

    admin.get('/dashboard/api/replicas', async () => {
      const replicas = await gateway.store.listReplicas();
      const data = await Promise.all(
        replicas.map(async (replica) => ({
          instance_id: replica.instanceId,
          last_seen: new Date(replica.lastSeen).toISOString(),
          live: await liveFigures(replica.advertiseUrl),
        })),
      );
      return { data };
    });

    admin.get<{ Params: { id: string } }>('/dashboard/api/keys/:id/usage', async (request) => {
      const key = await gateway.store.getKeyById(request.params.id);
      if (!key) throw new GatewayError('not_found', `No key with id ${request.params.id}.`);
      return usageReport(gateway.store, key);
    });
  });
}
