import type { FastifyInstance, FastifyRequest } from 'fastify';
import { keyProblem, requireModelAllowed } from '../auth/keys.js';
import { GatewayError } from '../errors.js';
import type { Gateway } from '../gateway.js';
import { sessionOf } from '../http/session-key.js';
import { notJson } from '../server/http.js';
import type { ParsedBody } from '../server/types.js';
import type { KeyRecord } from '../store/types.js';
import { TOLLGATE_ORIGIN_INSTANCE_ID } from '../telemetry/attributes.js';
import { startRequestSpan } from '../telemetry/spans.js';
import { responsesRoute } from '../upstream/routes.js';
import type { Bridge } from './bridge.js';
import { CONTEXT_HEADER, verifyContextBody, verifyContextHeader, type ReauthContext } from './context.js';
import { INTERNAL_BRIDGE_PATH } from './peer-client.js';

/**
 * The owner side of a forward, on the internal port only. The caller's credential never came
 * along: the signed context stands in for it, and the key is re-validated by id here.
 */
export function registerInternalRoutes(internal: FastifyInstance, gateway: Gateway, bridge: Bridge): void {
  /** Verified contexts by request, with their store checks under way, from the onRequest hook to the handler. */
  const contexts = new WeakMap<FastifyRequest, { context: ReauthContext; checks: Promise<[boolean, KeyRecord | null]> }>();

  internal.post(INTERNAL_BRIDGE_PATH, {
    // the header is checked before the body is read: no body is read for a caller without one
    onRequest: async (request) => {
      const secret = gateway.config.internalSecret;
      if (!secret) throw new GatewayError('context_bad_signature', 'Owner forwarding is off: no internal secret is configured.');
      const header = request.headers[CONTEXT_HEADER];
      const context = verifyContextHeader(Array.isArray(header) ? header[0] : header, secret, bridge.identity.instanceId);
      // the nonce and the key need one store round trip: it runs while the body is read, not
      // after (a verified signature is already needed to spend a nonce)
      const checks = Promise.all([
        gateway.store.useNonce(context.nonce, context.expiresAt * 1000 - Date.now() + 1_000),
        gateway.keys.byId(context.keyId),
      ]);
      // a request whose body never comes is answered without its checks: no unhandled rejection
      checks.catch(() => {});
      contexts.set(request, { context, checks });
      // only a verified context names the parent: an unsigned traceparent header is not trusted here
      if (gateway.tracing) startRequestSpan(gateway.tracing, request, context).setAttribute(TOLLGATE_ORIGIN_INSTANCE_ID, context.originInstance);
    },
    handler: async (request, reply) => {
      const { context, checks } = contexts.get(request)!;
      const body = (request.body as ParsedBody | undefined) ?? notJson(Buffer.alloc(0));
      verifyContextBody(context, body.raw);
      // the nonce is spent either way
      const [fresh, key] = await checks;
      const now = Date.now();
      if (!fresh) throw new GatewayError('context_replayed', 'Internal context was already used.');
      const problem = keyProblem(key, now);
      if (problem) throw new GatewayError('invalid_api_key', `The caller's API key is ${problem === 'unknown' ? 'revoked' : problem}.`);
      request.principal = { key: key!, source: context.authSource };
      request.facts.keyId = key!.id;
      const session = sessionOf(request.headers, key!.id);
      if (!session || session.key !== context.sessionKey) {
        throw new GatewayError('context_malformed', 'Internal context names another session than the request.');
      }
      // the origin only bridges Responses create requests, but a signed context does not make a body one
      if (!body.top.object) throw new GatewayError('invalid_request', 'A bridged request body must be a JSON object.');
      request.facts.model = body.top.model;
      requireModelAllowed(key!, request.facts.model);
      // the caller's route picks the provider here as it did on the origin
      const route = responsesRoute(context.route ?? '/v1/responses');
      if (!route) throw new GatewayError('context_malformed', `Internal context names a route that is not bridged: ${context.route}.`);
      const pool = gateway.poolFor(route.providers);
      request.facts.provider = pool.provider;
      // the scope is the key's as this replica reads it now, like every other check of the key
      return bridge.serveForwarded({ request, reply, route, pool, body, session, metered: gateway.meteredCall(request), scope: gateway.scopeOf(request, body) });
    },
  });
}
