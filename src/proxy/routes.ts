import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { requireModelAllowed } from '../auth/keys.js';
import type { ModelCall } from '../dispatch/call.js';
import { chooseDispatcher, type Dispatchers } from '../dispatch/choose.js';
import { relayUpstreamReply } from '../dispatch/relay.js';
import type { Gateway } from '../gateway.js';
import { upstreamRequestHeaders } from '../http/headers.js';
import { sessionOf } from '../http/session-key.js';
import { notJson } from '../server/http.js';
import type { ParsedBody } from '../server/types.js';
import { MODEL_ROUTES, type ModelRoute } from '../upstream/routes.js';

/** A model call: route -> auth (hook) -> metered call -> the chosen dispatcher. */
function proxyModelCall(gateway: Gateway, dispatchers: Dispatchers, route: ModelRoute, request: FastifyRequest, reply: FastifyReply) {
  const pool = gateway.poolFor(route.providers);
  const body = (request.body as ParsedBody | undefined) ?? notJson(Buffer.alloc(0));
  const key = request.principal!.key;
  request.facts.model = body.top.model;
  requireModelAllowed(key, request.facts.model);
  request.facts.provider = pool.provider;
  const session = route.format === 'openai-responses' && body.top.object ? sessionOf(request.headers, key.id) : null;
  const metered = route.format ? gateway.meteredCall(request) : null;
  const call: ModelCall = { request, reply, route, pool, body, session, metered, scope: gateway.scopeOf(request, body) };
  return chooseDispatcher(call, dispatchers).dispatch(call);
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

export function registerModelRoutes(app: FastifyInstance, gateway: Gateway, dispatchers: Dispatchers): void {
  for (const route of MODEL_ROUTES) {
    app.post(route.url, (request, reply) => proxyModelCall(gateway, dispatchers, route, request, reply));
  }
  app.get('/v1/models', (request, reply) => listModels(gateway, request, reply));
}

