import type { IncomingMessage } from 'node:http';
import fastifyWebsocket from '@fastify/websocket';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { RawData } from 'ws';
import { GatewayError } from '../errors.js';
import { sendHandshakeRefusal } from '../http/handshake-refusal.js';
import { firstValue, queryOf, upstreamRequestHeaders, upstreamResponseHeaders } from '../http/headers.js';
import type { SecretScrubber } from '../http/scrubber.js';
import type { Gateway } from '../gateway.js';
import { sendError } from '../server/http.js';
import { HandshakeRefused, MAX_WEBSOCKET_MESSAGE_BYTES, type UpstreamSocket } from '../upstream/client.js';
import { RESPONSES_ROUTES, type ModelRoute } from '../upstream/routes.js';
import { asBuffer, closeWith, relay, type PendingSession } from './websocket-relay.js';

const WEBSOCKET_KEY = /^[+/0-9A-Za-z]{22}==$/;

/**
 * An upgrade request, even one refused before the plugin's own onRequest hook set `request.ws`
 * (proxy-key auth runs first); Node flags the requests it handed to the 'upgrade' listener.
 */
function upgradeRequested(request: FastifyRequest): boolean {
  return request.ws === true || (request.raw as { upgrade?: boolean }).upgrade === true;
}

/** Why a request cannot be upgraded to a WebSocket (the checks `ws` makes), or null. */
function handshakeProblem(request: FastifyRequest): string | null {
  if (firstValue(request.headers.upgrade)?.toLowerCase() !== 'websocket') return 'Only WebSocket upgrades are supported on this path.';
  if (!WEBSOCKET_KEY.test(firstValue(request.headers['sec-websocket-key'])?.trim() ?? '')) return 'Missing or invalid Sec-WebSocket-Key header.';
  const version = firstValue(request.headers['sec-websocket-version']);
  if (version !== '13' && version !== '8') return 'Missing or unsupported Sec-WebSocket-Version header.';
  return null;
}

/** The upstream's handshake headers the client's 101 carries: not hop-by-hop, handshake or cookies. */
function handshakeHeaderLines(upstreamHeaders: UpstreamSocket['headers'], requestId: string, scrubber: SecretScrubber): string[] {
  const lines: string[] = [];
  for (const [name, value] of Object.entries(scrubber.headers(upstreamResponseHeaders(upstreamHeaders)))) {
    if (name.startsWith('sec-websocket-') || name === 'set-cookie') continue;
    for (const item of Array.isArray(value) ? value : [value]) lines.push(`${name}: ${item}`);
  }
  lines.push(`x-request-id: ${requestId}`);
  return lines;
}

/**
 * `GET /v1/responses` (and `/backend-api/codex/responses`) upgraded to a WebSocket: one upstream
 * WebSocket per client WebSocket, opened before the client's upgrade so a refusal reaches the
 * client as an HTTP status. Register inside the scope whose preHandler authenticates proxy keys.
 */
export async function registerResponsesWebSocket(app: FastifyInstance, gateway: Gateway): Promise<void> {
  await app.register(fastifyWebsocket, {
    options: { perMessageDeflate: true, maxPayload: MAX_WEBSOCKET_MESSAGE_BYTES },
    errorHandler: (err, socket, request) => {
      request.log.warn({ reqId: request.id, err }, 'client websocket failed');
      socket.terminate();
    },
    preClose: (done) => {
      for (const client of app.websocketServer.clients) closeWith(client, 1001, 'server shutting down');
      done();
    },
  });

  const pending = new WeakMap<IncomingMessage, PendingSession>();
  const failureReason = new WeakMap<IncomingMessage, string>();

  app.websocketServer.on('headers', (headers: string[], req: IncomingMessage) => {
    const session = pending.get(req);
    if (session) headers.push(...session.headerLines);
  });

  /** Before the upgrade: the provider must speak WebSocket and an upstream must accept one. */
  async function openUpstream(route: ModelRoute, request: FastifyRequest, reply: FastifyReply) {
    const problem = handshakeProblem(request);
    if (problem) throw new GatewayError('invalid_request', problem);
    if (gateway.draining) throw new GatewayError('shutting_down', 'This replica is draining; connect again to reach another one.');
    const pool = gateway.poolFor(route.providers);
    request.facts.provider = pool.provider;
    if (!pool.websocket) {
      throw new GatewayError(
        'websocket_not_supported',
        `The ${pool.provider} provider of this gateway does not support WebSocket; use POST ${route.url}.`,
      );
    }

    const clientSocket = request.raw.socket;
    let upstream: UpstreamSocket;
    try {
      upstream = await gateway.upstream.openSocket(pool, {
        path: route.upstreamPath + queryOf(request.url),
        headers: upstreamRequestHeaders(pool.provider, request.headers),
        // one upstream socket per client socket: its handshake headers name the conversation
        scope: gateway.scopeOf(request, undefined),
      });
    } catch (err) {
      if (!(err instanceof HandshakeRefused)) throw err;
      failureReason.set(request.raw, `upstream_${err.statusCode}`);
      return sendHandshakeRefusal(reply, err, gateway.scrubber);
    }
    request.facts.accountId = upstream.account.id;

    const abandon = () => {
      pending.delete(request.raw);
      closeWith(upstream.socket, 1001, 'client went away');
      upstream.release();
    };
    if (clientSocket.destroyed) {
      abandon();
      reply.hijack();
      return;
    }

    // Listeners before anything else can happen: the upstream may speak or fail before the client is upgraded.
    const session: PendingSession = {
      pool,
      upstream,
      early: [],
      headerLines: handshakeHeaderLines(upstream.headers, request.id, gateway.scrubber),
      handOver: () => {
        upstream.socket.off('message', onEarlyMessage);
        upstream.socket.off('close', onEarlyClose);
        clientSocket.off('close', abandon);
      },
    };
    const onEarlyMessage = (data: RawData, isBinary: boolean) => session.early.push({ data: asBuffer(data), isBinary });
    const onEarlyClose = (code: number, reason: Buffer) => (session.earlyClose = { code, reason });
    upstream.socket.on('message', onEarlyMessage);
    upstream.socket.on('close', onEarlyClose);
    upstream.socket.on('error', (err) => request.log.warn({ reqId: request.id, err, accountId: upstream.account.id }, 'upstream websocket failed'));
    // a client that leaves before its upgrade completes (ws refuses, or the socket dies) frees the upstream
    clientSocket.once('close', abandon);
    pending.set(request.raw, session);
  }

  // the Responses routes, with the same provider preference as their POST twins
  for (const route of RESPONSES_ROUTES) {
    const withoutUpgrade = (request: FastifyRequest, reply: FastifyReply) =>
      sendError(
        reply,
        new GatewayError('method_not_allowed', `${request.method} ${route.url} needs a WebSocket upgrade; use POST or a WebSocket upgrade.`),
        'openai',
      );
    app.route({
      method: 'GET',
      url: route.url,
      // runs after proxy-key auth (an onRequest hook of the enclosing scope): a plain GET with a key is a wrong method
      onRequest: async (request, reply) => {
        if (!request.ws) return withoutUpgrade(request, reply);
      },
      preHandler: (request, reply) => openUpstream(route, request, reply),
      onError: async (request, _reply, err) => {
        if (upgradeRequested(request)) failureReason.set(request.raw, err instanceof GatewayError ? err.code : 'error');
      },
      // an upgrade answered over HTTP is a refused handshake
      onResponse: async (request, reply) => {
        if (!upgradeRequested(request)) return;
        gateway.metrics.wsHandshakeFailures.inc({ reason: failureReason.get(request.raw) ?? String(reply.statusCode) });
      },
      handler: withoutUpgrade,
      wsHandler: (socket, request) => {
        const session = pending.get(request.raw);
        pending.delete(request.raw);
        if (!session) {
          socket.close(1011, 'upstream not connected');
          return;
        }
        session.handOver();
        relay(gateway, request, socket, session);
      },
    });
  }
}
