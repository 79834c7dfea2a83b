import { PassThrough } from 'node:stream';
import type { FastifyReply } from 'fastify';
import type WebSocket from 'ws';
import { GatewayError, renderError } from '../errors.js';
import type { HeaderMap } from '../http/headers.js';
import type { SecretScrubber } from '../http/scrubber.js';
import type { Lease } from '../store/types.js';
import type { UpstreamClient, UpstreamSocket } from '../upstream/client.js';
import type { ProviderPool } from '../upstream/pool.js';
import { endsTurn, usageFromResponsesEvent } from '../usage/responses-events.js';
import type { TokenUsage } from '../usage/tokens.js';

export interface BridgeTurn {
  /** the HTTP request body (a Responses create request) */
  body: Record<string, unknown>;
  reply: FastifyReply;
  /** headers for the client's response (request id, turn state) */
  responseHeaders: Record<string, string>;
  onUsage(usage: TokenUsage): void;
  /** the turn's request went out on the upstream socket */
  onSent(): void;
  /** the upstream's first event of the turn arrived */
  onFirstEvent?(): void;
}

/**
 * One bridge session held by this replica: a persistent upstream Responses WebSocket bound to
 * one account, opened lazily by the first turn. Turns run strictly one after another; each
 * turn's events go back to its HTTP caller as SSE, or as one JSON response.
 */
export class BridgeSession {
  private upstream: UpstreamSocket | undefined;
  private queue: Promise<void> = Promise.resolve();
  private active = 0;
  lastUsed = Date.now();
  /** until when the lease is known to be ours: its last grant or renewal plus its length */
  leaseValidUntil: number;

  constructor(
    readonly key: string,
    public lease: Lease,
    private readonly client: UpstreamClient,
    readonly pool: ProviderPool,
    /** the canonical upstream path of the session's route */
    private readonly upstreamPath: string,
    /** handshake headers of the first request (session-id, OpenAI-Beta, …), already cleaned */
    private readonly handshakeHeaders: HeaderMap,
    leaseMs: number,
    /** failure events may echo an account secret */
    private readonly scrubber: SecretScrubber,
  ) {
    this.leaseValidUntil = Date.now() + leaseMs;
  }

  get busy(): boolean {
    return this.active > 0;
  }

  get connected(): boolean {
    return this.upstream !== undefined;
  }

  run(turn: BridgeTurn): Promise<void> {
    this.active++;
    const next = this.queue.then(() => this.runTurn(turn));
    this.queue = next.catch(() => {});
    return next.finally(() => {
      this.active--;
      this.lastUsed = Date.now();
    });
  }

  close(code = 1000, reason = 'session closed'): void {
    const upstream = this.upstream;
    this.upstream = undefined;
    if (!upstream) return;
    upstream.release();
    upstream.socket.close(code, reason);
  }

  private async socket(): Promise<WebSocket> {
    if (this.upstream && this.upstream.socket.readyState === this.upstream.socket.OPEN) return this.upstream.socket;
    this.close();
    const opened = await this.client.openSocket(this.pool, {
      path: this.upstreamPath,
      headers: this.handshakeHeaders,
      accountId: this.lease.accountId,
    });
    this.upstream = opened;
    opened.socket.once('close', () => {
      if (this.upstream === opened) this.close();
    });
    return opened.socket;
  }

  private async runTurn(turn: BridgeTurn): Promise<void> {
    const wantsStream = turn.body.stream === true;
    const { stream: _stream, background: _background, ...request } = turn.body;
    // before the socket is touched: a body that cannot be sent fails its turn and nothing else
    const frame = responseCreateFrame(request);
    const socket = await this.socket();
    let sse: PassThrough | undefined;
    let answered = false;

    await new Promise<void>((resolve) => {
      const finish = () => {
        socket.off('message', onMessage);
        socket.off('close', onClose);
        resolve();
      };
      const onMessage = (data: WebSocket.RawData, isBinary: boolean) => {
        if (isBinary) return;
        if (!answered) {
          answered = true;
          turn.onFirstEvent?.();
        }
        const text = this.scrubber.failureFrame(data as Buffer).toString();
        let event: { type?: string; status?: number; error?: unknown; response?: unknown };
        try {
          event = JSON.parse(text);
        } catch {
          return;
        }
        const type = event.type ?? 'message';
        if (text.includes('"usage"')) {
          const usage = usageFromResponsesEvent(event);
          if (usage) turn.onUsage(usage);
        }
        const terminal = endsTurn(type);
        if (type === 'error' && !sse) {
          // an upstream refusal (e.g. previous_response_not_found) passes through as an HTTP error
          sendJson(turn, event.status ?? 400, { error: event.error });
          return finish();
        }
        if (wantsStream) {
          sse ??= startSse(turn);
          // a caller that went away stops reading, but the turn still runs to its end so the
          // upstream connection stays in step for the next turn
          if (!sse.destroyed) sse.write(`event: ${type}\ndata: ${text}\n\n`);
          if (terminal) {
            sse.end();
            finish();
          }
        } else if (terminal) {
          sendJson(turn, 200, event.response);
          finish();
        }
      };
      const onClose = (code: number) => {
        // the upstream went away mid-turn: the session starts over on its next turn
        const failure = new GatewayError('upstream_unreachable', `The upstream WebSocket closed mid-response (code ${code}).`);
        const rendered = renderError(failure, 'openai');
        if (sse) sse.end(`event: error\ndata: ${JSON.stringify({ type: 'error', ...rendered.body })}\n\n`);
        else sendJson(turn, rendered.status, rendered.body);
        finish();
      };
      socket.on('message', onMessage);
      socket.on('close', onClose);
      socket.send(frame);
      turn.onSent();
    });
  }
}

/** The turn's `response.create` frame; JSON.stringify recurses, so a body nested thousands deep is refused here. */
function responseCreateFrame(request: Record<string, unknown>): string {
  try {
    return JSON.stringify({ ...request, type: 'response.create' });
  } catch (err) {
    if (!(err instanceof RangeError)) throw err;
    throw new GatewayError('invalid_request', 'Request body is nested too deeply to forward.', { cause: err });
  }
}

function startSse(turn: BridgeTurn): PassThrough {
  const sse = new PassThrough();
  sse.on('error', () => {});
  turn.reply.code(200).headers({ ...turn.responseHeaders, 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' });
  void turn.reply.send(sse);
  return sse;
}

function sendJson(turn: BridgeTurn, status: number, body: unknown): void {
  if (turn.reply.sent) return;
  void turn.reply.code(status).headers(turn.responseHeaders).send(body);
}
