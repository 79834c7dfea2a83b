import type { IncomingMessage } from 'node:http';
import fastifyWebsocket from '@fastify/websocket';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import WebSocket, { type RawData } from 'ws';
import { keyProblem, modelAllowed } from '../auth/keys.js';
import type { ProviderName } from '../config/schema.js';
import { GatewayError, renderError } from '../errors.js';
import type { Gateway } from '../gateway.js';
import { sendError } from '../server/http.js';
import type { KeyRecord } from '../store/types.js';
import { HandshakeRefused, MAX_WEBSOCKET_MESSAGE_BYTES, type UpstreamSocket } from '../upstream/client.js';
import { admitRequest } from '../usage/limits.js';
import { usageFromResponsesEvent } from '../usage/meter.js';
import type { TokenUsage } from '../usage/tokens.js';
import { scrubSecrets } from './forward.js';
import { WEBSOCKET_HANDSHAKE, firstValue, queryOf, upstreamRequestHeaders, upstreamResponseHeaders } from './headers.js';
import { MODEL_ROUTES, type ModelRoute } from './routes.js';

/** A receiving side holding more than this pauses its sender; below the low mark it resumes. */
export const HIGH_WATER_BYTES = 1024 * 1024;
export const LOW_WATER_BYTES = 256 * 1024;
/** Both sides are pinged this often; a side that did not answer the previous ping is terminated. */
export const KEEPALIVE_INTERVAL_MS = 30_000;

/** The Responses routes, with the same provider preference as their POST twins. */
const WEBSOCKET_ROUTES = MODEL_ROUTES.filter((route) => route.format === 'openai-responses');

/** Client handshake headers that concern only the client's hop: `ws` negotiates the upstream's itself. */
const CLIENT_HANDSHAKE = new Set([...WEBSOCKET_HANDSHAKE, 'sec-websocket-protocol']);
const WEBSOCKET_KEY = /^[+/0-9A-Za-z]{22}==$/;

const HAS_USAGE = /"usage"\s*:\s*\{/;

interface Frame {
  data: Buffer;
  isBinary: boolean;
}

/** What the preHandler opened for a client whose upgrade has not completed yet. */
interface PendingSession {
  pool: { provider: ProviderName };
  upstream: UpstreamSocket;
  /** upstream frames and close that arrived before the client's upgrade */
  early: Frame[];
  earlyClose?: { code: number; reason: Buffer };
  /** extra lines for the client's 101 */
  headerLines: string[];
  /** removes the pre-upgrade listeners; the relay takes over */
  handOver(): void;
}

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
function handshakeHeaderLines(upstreamHeaders: UpstreamSocket['headers'], requestId: string): string[] {
  const lines: string[] = [];
  for (const [name, value] of Object.entries(upstreamResponseHeaders(upstreamHeaders))) {
    if (name.startsWith('sec-websocket-') || name === 'set-cookie') continue;
    for (const item of Array.isArray(value) ? value : [value]) lines.push(`${name}: ${item}`);
  }
  lines.push(`x-request-id: ${requestId}`);
  return lines;
}

/** ws cannot send 1005 (no status), 1006 (abnormal) or 1015 (TLS); those become 1000 / 1011. */
export function sendableCloseCode(code: number): number {
  if (code === 1005) return 1000;
  const sendable = (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) || (code >= 3000 && code <= 4999);
  return sendable ? code : 1011;
}

function closeWith(socket: WebSocket, code: number, reason: Buffer | string = ''): void {
  if (socket.readyState !== WebSocket.OPEN && socket.readyState !== WebSocket.CONNECTING) return;
  const sent = sendableCloseCode(code);
  // a paused socket would never read the peer's close frame back
  if (socket.isPaused) socket.resume();
  socket.close(sent, sent === code ? reason : '');
}

/** The frame as JSON when it is a `response.create`, else null. */
function responseCreate(data: Buffer): Record<string, unknown> | null {
  const first = data.find((byte) => byte !== 0x20 && byte !== 0x09 && byte !== 0x0a && byte !== 0x0d);
  if (first !== 0x7b /* { */) return null;
  try {
    const json = JSON.parse(data.toString('utf8')) as unknown;
    if (typeof json === 'object' && json !== null && (json as { type?: unknown }).type === 'response.create') {
      return json as Record<string, unknown>;
    }
  } catch {
    // not JSON: the upstream answers it
  }
  return null;
}

/** Every model a `response.create` names (top level as Codex sends it, or a nested `response`). */
function modelsOf(frame: Record<string, unknown>): Array<string | undefined> {
  const nested = frame.response as { model?: unknown } | undefined;
  const models = [frame.model, typeof nested === 'object' && nested !== null ? nested.model : undefined].filter(
    (model): model is string => typeof model === 'string',
  );
  return models.length > 0 ? models : [undefined];
}

/** A refused frame's answer: the Responses API's WebSocket `error` event. */
function errorEvent(err: GatewayError): string {
  const { status, headers, body } = renderError(err, 'openai');
  return JSON.stringify({ type: 'error', status, error: body.error, ...(Object.keys(headers).length > 0 ? { headers } : {}) });
}

/** Pauses `source` while `pending()` is above the high-water mark, resumes it below the low one. */
function valve(source: WebSocket, pending: () => number): () => void {
  return () => {
    const amount = pending();
    if (!source.isPaused && amount > HIGH_WATER_BYTES) source.pause();
    else if (source.isPaused && amount < LOW_WATER_BYTES) source.resume();
  };
}

function asBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  return Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
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
      request.log.warn({ err }, 'client websocket failed');
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
        headers: upstreamRequestHeaders(request.headers, CLIENT_HANDSHAKE),
      });
    } catch (err) {
      if (!(err instanceof HandshakeRefused)) throw err;
      failureReason.set(request.raw, `upstream_${err.statusCode}`);
      const secrets = pool.accounts.map((account) => account.secret);
      return reply.code(err.statusCode).headers(upstreamResponseHeaders(err.headers)).send(scrubSecrets(err.body, secrets));
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
      headerLines: handshakeHeaderLines(upstream.headers, request.id),
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
    upstream.socket.on('error', (err) => request.log.warn({ err, accountId: upstream.account.id }, 'upstream websocket failed'));
    // a client that leaves before its upgrade completes (ws refuses, or the socket dies) frees the upstream
    clientSocket.once('close', abandon);
    pending.set(request.raw, session);
  }

  for (const route of WEBSOCKET_ROUTES) {
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

/**
 * Frames both ways in order and of the same type; `response.create` frames checked (model,
 * limits) on the way up, usage read from the terminal events on the way down. Everything here
 * is attached synchronously: no frame can arrive before its listener.
 */
function relay(gateway: Gateway, request: FastifyRequest, client: WebSocket, session: PendingSession): void {
  const { metrics } = gateway;
  const { upstream: opened, pool } = session;
  const upstream = opened.socket;
  const startedAt = Date.now();
  const tokens: TokenUsage = { input_tokens: 0, output_tokens: 0, cached_input_tokens: 0, total_tokens: 0 };
  let requests = 0;
  let finished = false;
  metrics.wsSessions.inc();

  // ---- upstream -> client ----
  const throttleUpstream = valve(upstream, () => client.bufferedAmount);
  const toClient = (data: Buffer | string, isBinary: boolean) => {
    if (client.readyState !== WebSocket.OPEN) return;
    client.send(data, { binary: isBinary }, () => throttleUpstream());
    throttleUpstream();
  };
  const meter = (data: Buffer) => {
    if (!data.includes('"usage"')) return;
    const text = data.toString('utf8');
    if (!HAS_USAGE.test(text)) return;
    let event: unknown;
    try {
      event = JSON.parse(text);
    } catch {
      return;
    }
    const usage = usageFromResponsesEvent(event);
    if (!usage) return;
    for (const name of Object.keys(tokens) as (keyof TokenUsage)[]) tokens[name] += usage[name];
    gateway.recordUsage(request, pool.provider, opened.account.id, usage);
  };
  const fromUpstream = (data: Buffer, isBinary: boolean) => {
    metrics.wsFrames.inc({ direction: 'upstream_to_client' });
    if (!isBinary) meter(data);
    toClient(data, isBinary);
  };
  upstream.on('message', (data, isBinary) => fromUpstream(asBuffer(data), isBinary));

  // ---- client -> upstream, through one promise chain so async checks never reorder frames ----
  let queuedBytes = 0;
  let chain: Promise<void> = Promise.resolve();
  const throttleClient = valve(client, () => queuedBytes + upstream.bufferedAmount);

  /** The key as it is now (revoked, expired or restricted since the upgrade?), or the refusal. */
  const currentKey = async (): Promise<KeyRecord> => {
    const record = await gateway.keys.byHashOf(request.principal!.key.sha256);
    if (!record || keyProblem(record, Date.now())) {
      throw new GatewayError('invalid_api_key', 'This API key is no longer valid.');
    }
    request.principal = { ...request.principal!, key: record };
    return record;
  };

  /** Counts the frame as a request; the admission time, or the refusal sent to the client. */
  const admit = async (frame: Record<string, unknown>): Promise<number | null> => {
    try {
      const key = await currentKey();
      for (const model of modelsOf(frame)) {
        if (!modelAllowed(key, model)) {
          throw new GatewayError('model_not_allowed', `This key may not use model "${model ?? '(none)'}".`, { param: 'model' });
        }
      }
      return await admitRequest(gateway.store, key, Date.now());
    } catch (err) {
      const refusal = asRefusal(err);
      toClient(errorEvent(refusal), false);
      if (refusal.code === 'invalid_api_key') closeWith(client, 1008, 'API key no longer valid');
      return null;
    }
  };

  const forward = async ({ data, isBinary }: Frame) => {
    const create = responseCreate(data);
    let admittedAt: number | undefined;
    if (create) {
      const admitted = await admit(create);
      if (admitted === null) return;
      admittedAt = admitted;
    }
    if (upstream.readyState !== WebSocket.OPEN) {
      if (admittedAt !== undefined) await gateway.store.refundRequest(request.principal!.key.id, admittedAt).catch(() => {});
      return;
    }
    if (admittedAt !== undefined) requests += 1;
    metrics.wsFrames.inc({ direction: 'client_to_upstream' });
    upstream.send(data, { binary: isBinary }, () => throttleClient());
  };

  client.on('message', (raw, isBinary) => {
    const frame = { data: asBuffer(raw), isBinary };
    queuedBytes += frame.data.length;
    throttleClient();
    chain = chain
      .then(() => forward(frame))
      .catch((err: unknown) => request.log.warn({ err }, 'websocket frame not relayed'))
      .finally(() => {
        queuedBytes -= frame.data.length;
        throttleClient();
      });
  });

  // ---- keepalive: a side that missed a pong is gone ----
  const alive = new Map<WebSocket, boolean>([
    [client, true],
    [upstream, true],
  ]);
  for (const side of [client, upstream]) side.on('pong', () => alive.set(side, true));
  const keepalive = setInterval(() => {
    for (const side of [client, upstream]) {
      if (side.readyState !== WebSocket.OPEN) continue;
      // a paused side cannot read its pong: it is not counted as missing
      if (!alive.get(side) && !side.isPaused) {
        side.terminate();
        continue;
      }
      alive.set(side, false);
      side.ping();
    }
  }, KEEPALIVE_INTERVAL_MS);
  keepalive.unref();

  // ---- close: carried across, one end of the session ----
  const finish = () => {
    if (finished) return;
    finished = true;
    clearInterval(keepalive);
    opened.release();
    metrics.wsSessions.dec();
    request.log.info(
      {
        reqId: request.id,
        method: 'GET',
        url: request.url.split('?')[0],
        status: 101,
        durationMs: Date.now() - startedAt,
        keyId: request.principal?.key.id,
        provider: pool.provider,
        accountId: opened.account.id,
        requests,
        tokens,
      },
      'websocket session',
    );
  };
  client.on('close', (code, reason) => {
    finish();
    closeWith(upstream, code, reason);
  });
  upstream.on('close', (code, reason) => {
    finish();
    closeWith(client, code, reason);
  });

  // what the upstream said before the client was upgraded comes first
  for (const frame of session.early) fromUpstream(frame.data, frame.isBinary);
  session.early.length = 0;
  if (session.earlyClose || upstream.readyState === WebSocket.CLOSED) {
    finish();
    closeWith(client, session.earlyClose?.code ?? 1006, session.earlyClose?.reason);
  }
}

/** Gateway refusals as they are; anything else failed in the store. */
function asRefusal(err: unknown): GatewayError {
  if (err instanceof GatewayError) return err;
  return new GatewayError('store_unavailable', 'The shared store is not reachable.', { cause: err });
}
