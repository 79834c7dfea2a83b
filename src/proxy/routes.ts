import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { requireModelAllowed } from '../auth/keys.js';
import type { ProviderName } from '../config/schema.js';
import type { Bridge } from '../bridge/bridge.js';
import { TURN_STATE_HEADER, sessionOf, withoutGatewayTurnState } from '../bridge/session-key.js';
import type { Gateway } from '../gateway.js';
import type { ParsedBody } from '../server/types.js';
import { affinityKeyOf } from '../upstream/cache-affinity.js';
import type { Scope } from '../upstream/pool.js';
import { admitRequest, refundRequest } from '../usage/limits.js';
import type { WireFormat } from '../usage/tokens.js';
import { clientGoneSignal, relayUpstreamReply } from './forward.js';
import { queryOf, upstreamRequestHeaders } from './headers.js';

export interface ModelRoute {
  url: string;
  /** providers that can serve it, in order of preference */
  providers: ProviderName[];
  /** the canonical upstream API path */
  upstreamPath: string;
  /** how to read usage; null = not a metered model call */
  format: WireFormat | null;
}

export const RESPONSES_PROVIDERS: ProviderName[] = ['openai', 'chatgpt'];

export const MODEL_ROUTES: ModelRoute[] = [
  { url: '/v1/responses', providers: RESPONSES_PROVIDERS, upstreamPath: '/v1/responses', format: 'openai-responses' },
  { url: '/backend-api/codex/responses', providers: ['chatgpt', 'openai'], upstreamPath: '/v1/responses', format: 'openai-responses' },
  { url: '/v1/chat/completions', providers: ['openai'], upstreamPath: '/v1/chat/completions', format: 'openai-chat' },
  { url: '/v1/messages', providers: ['anthropic'], upstreamPath: '/v1/messages', format: 'anthropic-messages' },
  { url: '/v1/messages/count_tokens', providers: ['anthropic'], upstreamPath: '/v1/messages/count_tokens', format: null },
];

export function modelOf(json: unknown): string | undefined {
  const model = (json as { model?: unknown } | undefined)?.model;
  return typeof model === 'string' ? model : undefined;
}

export function isJsonObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Streamed Chat Completions report usage only when asked; ask for it so a streamed call is
 * never metered as zero. The extra final chunk (`choices: []`) is part of the public API.
 */
function upstreamBody(route: ModelRoute, body: ParsedBody): Buffer {
  const json = body.json as { stream?: unknown; stream_options?: { include_usage?: unknown } } | undefined;
  if (route.format !== 'openai-chat' || json?.stream !== true || json.stream_options?.include_usage === true) return body.raw;
  return Buffer.from(JSON.stringify({ ...json, stream_options: { ...json.stream_options, include_usage: true } }));
}

/**
 * A model call: route -> auth (hook) -> limits -> account selection -> upstream -> usage.
 * Responses calls that name a session go through the bridge instead.
 */
async function proxyModelCall(gateway: Gateway, bridge: Bridge, route: ModelRoute, request: FastifyRequest, reply: FastifyReply) {
  const pool = gateway.poolFor(route.providers);
  const body = (request.body as ParsedBody | undefined) ?? { raw: Buffer.alloc(0), json: undefined };
  const key = request.principal!.key;
  requireModelAllowed(key, modelOf(body.json));
  request.facts.provider = pool.provider;

  const scope: Scope = { affinityKey: affinityKeyOf(request.headers, body.json, key.id), accounts: gateway.accountsOf(key) };
  const session = route.format === 'openai-responses' && isJsonObject(body.json) ? sessionOf(request.headers, key.id) : null;
  let accountId: string | undefined;
  if (session) {
    if (pool.websocket) return bridge.serve(request, reply, { pool, session, body, forwarded: false, scope });
    accountId = await bridge.affinityAccount(session, pool, scope);
    reply.header(TURN_STATE_HEADER, session.turnState);
  }

  const admittedAt = route.format ? await admitRequest(gateway.usage, key, Date.now()) : undefined;
  const signal = clientGoneSignal(reply);
  const { metrics } = gateway;
  const sentAt = performance.now();
  let upstream;
  try {
    upstream = await gateway.upstream.send(pool, {
      method: 'POST',
      path: route.upstreamPath + queryOf(request.url),
      headers: { ...withoutGatewayTurnState(upstreamRequestHeaders(pool.provider, request.headers)), 'accept-encoding': 'identity' },
      body: upstreamBody(route, body),
      signal,
      accountId,
      scope,
    });
  } catch (err) {
    if (admittedAt !== undefined) refundRequest(gateway.usage, key.id, admittedAt);
    throw err;
  }
  request.facts.accountId = upstream.account.id;
  metrics.ttfb.observe({ provider: pool.provider }, (performance.now() - sentAt) / 1000);
  metrics.inFlightStreams.inc({ provider: pool.provider });
  return relayUpstreamReply(request, reply, upstream, {
    format: route.format,
    scrubber: gateway.scrubber,
    onDone: (usage) => {
      metrics.inFlightStreams.dec({ provider: pool.provider });
      if (route.format) gateway.recordUsage(request, pool.provider, upstream.account.id, usage);
    },
  });
}

/** `GET /v1/models` from the upstream, filtered to the models the caller's key may use. */
async function listModels(gateway: Gateway, request: FastifyRequest, reply: FastifyReply) {
  const pool = gateway.poolFor(['openai', 'chatgpt', 'anthropic']);
  const upstream = await gateway.upstream.send(pool, {
    method: 'GET',
    path: '/v1/models',
    headers: { ...upstreamRequestHeaders(pool.provider, request.headers), 'accept-encoding': 'identity' },
  });
  const allowed = request.principal!.key.allowed_models;
  if (upstream.statusCode >= 400 || !allowed) {
    return relayUpstreamReply(request, reply, upstream, { format: null, scrubber: gateway.scrubber, onDone: () => {} });
  }
  const list = (await upstream.body.json()) as { data?: Array<{ id?: string }> };
  upstream.release();
  return reply.code(200).send({ ...list, data: (list.data ?? []).filter((m) => m.id && allowed.includes(m.id)) });
}

export function registerModelRoutes(app: FastifyInstance, gateway: Gateway, bridge: Bridge): void {
  for (const route of MODEL_ROUTES) {
    app.post(route.url, (request, reply) => proxyModelCall(gateway, bridge, route, request, reply));
  }
  app.get('/v1/models', (request, reply) => listModels(gateway, request, reply));
}

