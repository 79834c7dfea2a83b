import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { Bridge } from './bridge/bridge.js';
import { registerInternalRoutes } from './bridge/internal-routes.js';
import { BridgeLocal } from './bridge/local.js';
import { PeerClient } from './bridge/peer-client.js';
import { SessionRegistry, type ReplicaIdentity } from './bridge/registry.js';
import { withSessionAffinity } from './dispatch/affinity.js';
import type { Dispatchers } from './dispatch/choose.js';
import { DirectDispatcher } from './dispatch/direct.js';
import { registerAdminRoutes } from './admin/routes.js';
import { proxyKeyAuth } from './auth/hook.js';
import type { Config } from './config/schema.js';
import { registerDashboard } from './dashboard/routes.js';
import { DashboardSessions } from './dashboard/session.js';
import { GatewayError } from './errors.js';
import { Gateway } from './gateway.js';
import { registerModelRoutes } from './proxy/routes.js';
import { registerResponsesWebSocket } from './proxy/websocket.js';
import { buildHttpServer, sendError } from './server/http.js';
import { pacedStarts } from './server/paced-starts.js';
import { createStore } from './store/index.js';
import type { Store } from './store/types.js';
import { prepareLogins } from './upstream/chatgpt/import.js';
import { registerUsageRoute } from './metering/routes.js';
import { replicaLogger } from './telemetry/logger.js';
import { traceRequests } from './telemetry/spans.js';
import { tracingFor } from './telemetry/tracing.js';

/** connections the kernel may queue for the public listener before it is accepted */
const ACCEPT_BACKLOG = 4096;

export interface App {
  gateway: Gateway;
  bridge: Bridge;
  /** the public listener: model routes, usage, health, admin (metrics only with `server.publicMetrics`) */
  public: FastifyInstance;
  /** the internal listener: owner forwarding and metrics; never exposed publicly */
  internal: FastifyInstance;
  listen(): Promise<{ publicUrl: string; internalUrl: string }>;
  close(): Promise<void>;
}

export interface BuildOptions {
  logger?: Logger;
  /** a ready store; by default one is created from the config */
  store?: Store;
}

const READY_TIMEOUT_MS = 1_000;
/**
 * Requests that start their work in one turn of the event loop; more wait for the next turns.
 * A start costs a few hundred µs of CPU, so one turn stays within tens of milliseconds.
 */
const REQUEST_STARTS_PER_TURN = 64;

/** Config keys are seeded at every start; the file is their source of truth. */
async function seedConfigKeys(config: Config, store: Store): Promise<void> {
  const now = new Date().toISOString();
  for (const key of config.keys) {
    const existing = await store.getKeyById(key.id);
    await store.putKey({ ...key, created_at: existing?.created_at ?? now, origin: 'config' });
  }
}

function registerHealthRoutes(app: FastifyInstance, gateway: Gateway): void {
  app.get('/health/live', async () => ({ status: 'ok' }));
  app.get('/health/ready', async (_request, reply) => {
    if (gateway.draining) return sendError(reply, new GatewayError('shutting_down', 'This replica is draining.'), 'openai');
    try {
      await Promise.race([
        gateway.store.ping(),
        new Promise((_, reject) => setTimeout(() => reject(new Error('store ping timed out')), READY_TIMEOUT_MS).unref()),
      ]);
    } catch (err) {
      return sendError(reply, new GatewayError('store_unavailable', 'The shared store is not reachable.', { cause: err }), 'openai');
    }
    return { status: 'ready', store: gateway.store.kind };
  });
}

/** Prometheus metrics name accounts and traffic: the internal listener's, public only when configured. */
function registerMetricsRoute(app: FastifyInstance, gateway: Gateway): void {
  app.get('/metrics', async (_request, reply) =>
    reply.type(gateway.metrics.registry.contentType).send(await gateway.metrics.registry.metrics()),
  );
}

/** Other replicas need a reachable address, not the wildcard the listener is bound to. */
function advertisedUrl(bindHost: string, listeningUrl: string): string {
  const url = new URL(listeningUrl);
  if (bindHost === '0.0.0.0' || bindHost === '::') url.hostname = hostname();
  return url.origin;
}

/** The bridge and its parts: the sessions held here, the owner's side, and the peer hop. */
function buildBridge(gateway: Gateway, identity: ReplicaIdentity): Bridge {
  const { store, metrics, config } = gateway;
  const registry = new SessionRegistry({ store, metrics, log: gateway.log, bounds: config.bridge }, identity);
  const local = new BridgeLocal(gateway, registry);
  const peers = new PeerClient({
    agent: gateway.agent,
    metrics,
    internalSecret: config.internalSecret,
    contextTtlSec: config.bridge.contextTtlSec,
    identity,
    tracing: gateway.tracing,
  });
  return new Bridge({ store, metrics }, registry, local, peers);
}

export async function buildApp(config: Config, options: BuildOptions = {}): Promise<App> {
  const logger = options.logger ?? replicaLogger(process.env.LOG_LEVEL ?? 'info');
  const store = options.store ?? (await createStore(config));
  await seedConfigKeys(config, store);
  const identity: ReplicaIdentity = {
    instanceId: config.server.instanceId ?? `${hostname()}-${randomBytes(3).toString('hex')}`,
    advertiseUrl: config.server.advertiseUrl ?? '', // known once the internal port listens
  };
  const tracing = await tracingFor(config.telemetry.tracing, { instanceId: identity.instanceId });
  const gateway = new Gateway(config, store, logger, tracing);
  await prepareLogins(config, store, gateway.vault).catch(async (err) => {
    await gateway.close();
    throw err;
  });
  const bridge = buildBridge(gateway, identity);
  const direct = new DirectDispatcher(gateway);
  const dispatchers: Dispatchers = { direct, affinity: withSessionAffinity(direct, store, config.bridge.leaseMs), bridge };

  const bodyBounds = { bodyLimit: config.server.bodyLimitBytes, requestBodyTimeoutMs: config.server.requestBodyTimeoutMs };
  const app = buildHttpServer({
    logger,
    ...bodyBounds,
    onAnswered: (request, reply) => {
      const route = request.routeOptions.url ?? 'unknown';
      gateway.metrics.per.request(route, reply.statusCode).inc();
      gateway.metrics.per.duration(route).observe(reply.elapsedTime / 1000);
      const code = request.facts?.errorCode;
      if (code) gateway.metrics.per.error(route, code).inc();
      gateway.recordFailure(request, reply.statusCode);
    },
  });
  registerHealthRoutes(app, gateway);
  if (config.server.publicMetrics) registerMetricsRoute(app, gateway);
  const { dashboard, adminToken } = config;
  const sessions = dashboard.enabled && adminToken ? new DashboardSessions(adminToken, dashboard.sessionTtlMs) : undefined;
  registerAdminRoutes(app, gateway, sessions);
  if (dashboard.enabled) registerDashboard(app, gateway, sessions);
  app.register(async (proxied) => {
    // first: a burst of streams starts over several turns of the loop, health probes in between
    proxied.addHook('onRequest', pacedStarts(REQUEST_STARTS_PER_TURN));
    // model traffic is traced (refusals included); health probes and admin calls are not
    if (tracing) proxied.addHook('onRequest', traceRequests(tracing));
    // before the body is read: an unauthenticated caller cannot make us read 16 MiB
    proxied.addHook('onRequest', proxyKeyAuth(gateway.keys, (source, reason) => gateway.metrics.authFailures.inc({ source, reason })));
    registerModelRoutes(proxied, gateway, dispatchers);
    registerUsageRoute(proxied, gateway.store);
    // a scope of its own: the WebSocket plugin's per-request hooks stay off the HTTP routes
    proxied.register((scope) => registerResponsesWebSocket(scope, gateway));
  });
  app.after(() => app.answerWrongMethods());

  const internal = buildHttpServer({ logger, ...bodyBounds });
  internal.get('/health/live', async () => ({ status: 'ok' }));
  registerMetricsRoute(internal, gateway);
  registerInternalRoutes(internal, gateway, bridge);
  internal.after(() => internal.answerWrongMethods());

  const urlOf = (server: FastifyInstance) => {
    const address = server.server.address();
    if (!address || typeof address === 'string') throw new Error('server is not listening on TCP');
    const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    return `http://${host}:${address.port}`;
  };

  return {
    gateway,
    bridge,
    public: app,
    internal,
    async listen() {
      // Node's default accept queue (511) overflows in a burst of thousands of streams opened at
      // once, and the kernel then resets connections; it caps this at net.core.somaxconn
      await app.listen({ host: config.server.host, port: config.server.port, backlog: ACCEPT_BACKLOG });
      await internal.listen({ host: config.server.internalHost, port: config.server.internalPort });
      const internalUrl = urlOf(internal);
      identity.advertiseUrl ||= advertisedUrl(config.server.internalHost, internalUrl);
      bridge.registry.start();
      return { publicUrl: urlOf(app), internalUrl };
    },
    async close() {
      gateway.draining = true;
      await bridge.registry.drain();
      // Node closes only the connections idle at close time; ones that finish a response while
      // draining would otherwise linger for the keep-alive timeout
      const sweep = setInterval(() => [app, internal].forEach((s) => s.server.closeIdleConnections()), 100);
      await Promise.all([app.close(), internal.close()]).finally(() => clearInterval(sweep));
      await bridge.registry.close();
      await gateway.close();
    },
  };
}
