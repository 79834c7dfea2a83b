/** The relay of one client WebSocket and its upstream WebSocket: frames, limits, usage, backpressure, keepalive, close. */
import type { FastifyRequest } from 'fastify';
import WebSocket, { type RawData } from 'ws';
import { keyProblem, requireModelAllowed } from '../auth/keys.js';
import type { ProviderName } from '../config/schema.js';
import { GatewayError, renderError } from '../errors.js';
import type { Gateway } from '../gateway.js';
import type { KeyRecord } from '../store/types.js';
import type { UpstreamSocket } from '../upstream/client.js';
import type { Admitted } from '../metering/metered-call.js';
import { modelOf } from '../http/body.js';
import { pathOf } from '../http/headers.js';
import { HAS_USAGE, usageFromResponsesEvent } from '../usage/responses-events.js';
import { ZERO_USAGE, addUsage, type TokenUsage } from '../usage/tokens.js';

/** A receiving side holding more than this pauses its sender; below the low mark it resumes. */
const HIGH_WATER_BYTES = 1024 * 1024;
const LOW_WATER_BYTES = 256 * 1024;

export interface Frame {
  data: Buffer;
  isBinary: boolean;
}

/** What the preHandler opened for a client whose upgrade has not completed yet. */
export interface PendingSession {
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


/** ws cannot send 1005 (no status), 1006 (abnormal) or 1015 (TLS); those become 1000 / 1011. */
function sendableCloseCode(code: number): number {
  if (code === 1005) return 1000;
  const sendable = (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) || (code >= 3000 && code <= 4999);
  return sendable ? code : 1011;
}

export function closeWith(socket: WebSocket, code: number, reason: Buffer | string = ''): void {
  if (socket.readyState !== WebSocket.OPEN && socket.readyState !== WebSocket.CONNECTING) return;
  const sent = sendableCloseCode(code);
  // a paused socket would never read the peer's close frame back
  if (socket.isPaused) socket.resume();
  socket.close(sent, sent === code ? reason : '');
}

const BOM = Buffer.from([0xef, 0xbb, 0xbf]);

/** A frame's bytes without a leading UTF-8 byte-order mark: what the gateway checks is what goes upstream. */
function withoutBom(data: Buffer): Buffer {
  return data.subarray(0, 3).equals(BOM) ? data.subarray(3) : data;
}

/** The frame as JSON when it is a `response.create`, else null (text and binary frames alike). */
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

export function asBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  return Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
}


/**
 * Frames both ways in order and of the same type; `response.create` frames checked (model,
 * limits) on the way up, usage read from the terminal events on the way down. Everything here
 * is attached synchronously: no frame can arrive before its listener.
 */
export function relay(gateway: Gateway, request: FastifyRequest, client: WebSocket, session: PendingSession): void {
  const { metrics } = gateway;
  const { upstream: opened, pool } = session;
  const upstream = opened.socket;
  const startedAt = Date.now();
  const metered = gateway.meteredCall(request);
  const served = { provider: pool.provider, accountId: opened.account.id };
  let tokens: TokenUsage = ZERO_USAGE;
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
    tokens = addUsage(tokens, usage);
    // a socket carries many turns: each names its model
    metered.record(usage, { ...served, model: modelOf((event as { response?: unknown }).response) });
  };
  const fromUpstream = (data: Buffer, isBinary: boolean) => {
    metrics.wsFrames.inc({ direction: 'upstream_to_client' });
    if (isBinary) return toClient(data, true);
    meter(data);
    toClient(gateway.scrubber.failureFrame(data), false);
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

  /** Counts the frame as a request; its admission, or null once the refusal went to the client. */
  const admit = async (frame: Record<string, unknown>): Promise<Admitted | null> => {
    try {
      const key = await currentKey();
      for (const model of modelsOf(frame)) requireModelAllowed(key, model);
      return await metered.admit();
    } catch (err) {
      const refusal = asRefusal(err);
      toClient(errorEvent(refusal), false);
      if (refusal.code === 'invalid_api_key') closeWith(client, 1008, 'API key no longer valid');
      return null;
    }
  };

  const forward = async ({ data: received, isBinary }: Frame) => {
    const data = withoutBom(received);
    const create = responseCreate(data);
    let admitted: Admitted | null = null;
    if (create) {
      admitted = await admit(create);
      if (admitted === null) return;
    }
    if (upstream.readyState !== WebSocket.OPEN) {
      admitted?.refund();
      return;
    }
    if (admitted) requests += 1;
    metrics.wsFrames.inc({ direction: 'client_to_upstream' });
    upstream.send(data, { binary: isBinary }, () => throttleClient());
  };

  client.on('message', (raw, isBinary) => {
    const frame = { data: asBuffer(raw), isBinary };
    queuedBytes += frame.data.length;
    throttleClient();
    chain = chain
      .then(() => forward(frame))
      .catch((err: unknown) => request.log.warn({ reqId: request.id, err }, 'websocket frame not relayed'))
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
  }, gateway.config.server.websocketKeepaliveMs);
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
        url: pathOf(request.url),
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
    closeWith(client, code, gateway.scrubber.closeReason(reason));
  });

  // what the upstream said before the client was upgraded comes first
  for (const frame of session.early) fromUpstream(frame.data, frame.isBinary);
  session.early.length = 0;
  if (session.earlyClose || upstream.readyState === WebSocket.CLOSED) {
    finish();
    closeWith(client, session.earlyClose?.code ?? 1006, gateway.scrubber.closeReason(session.earlyClose?.reason ?? Buffer.alloc(0)));
  }
}

/** Gateway refusals as they are; anything else failed in the store. */
function asRefusal(err: unknown): GatewayError {
  if (err instanceof GatewayError) return err;
  return new GatewayError('store_unavailable', 'The shared store is not reachable.', { cause: err });
}
