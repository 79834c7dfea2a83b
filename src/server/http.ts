import { randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { SpanContext } from '@opentelemetry/api';
import Fastify, { LogController, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { GatewayError, renderError, shapeForPath, type ErrorShape } from '../errors.js';
import { pathOf } from '../http/headers.js';
import { endRequestSpan } from '../telemetry/spans.js';
import { decodedBody, requestEncoding } from './body-decoding.js';
import { MAX_JSON_DEPTH, scanJson, topLevelOf } from './json-depth.js';
import type { TopLevel } from './json-depth.js';
import type { ParsedBody } from './types.js';
import './types.js';

const REQUEST_ID = /^[\w.-]{1,128}$/;

export function requestIdOf(headers: Record<string, unknown>): string {
  const presented = headers['x-request-id'];
  return typeof presented === 'string' && REQUEST_ID.test(presented) ? presented : randomUUID();
}

export function sendError(reply: FastifyReply, err: GatewayError, shape: ErrorShape = shapeForPath(reply.request.url)) {
  const rendered = renderError(err, shape);
  (reply.request.facts ??= {}).errorCode = err.code;
  return reply.code(rendered.status).headers(rendered.headers).send(rendered.body);
}

/** Node sets `upgrade` (untyped) on a request it gave to the server's 'upgrade' listener instead of its parser. */
function handedToUpgradeListener(request: FastifyRequest): boolean {
  return (request.raw as { upgrade?: boolean }).upgrade === true;
}

/** Fastify's own failures (body limit, bad content) in the gateway's terms. */
function asGatewayError(err: FastifyError, bodyLimit: number): GatewayError {
  if (err instanceof GatewayError) return err;
  switch (err.statusCode) {
    case 413:
      return new GatewayError('request_too_large', `Request body is larger than the limit of ${bodyLimit} bytes.`);
    case 415:
      return new GatewayError('unsupported_media_type', err.message);
    case 400:
      return new GatewayError('invalid_request', err.message);
    default:
      return new GatewayError('internal_error', 'Internal gateway error.', { cause: err });
  }
}

/**
 * The Fastify instance both listeners share: request ids, the raw-body parser, errors in the
 * route's provider shape, 404/405, and one access-log line per request.
 */
export interface HttpServerOptions {
  logger: Logger;
  bodyLimit: number;
  /** the whole request body must arrive within this many ms of the request's start */
  requestBodyTimeoutMs: number;
  /** called once per answered request, next to its access-log line (metrics) */
  onAnswered?: (request: FastifyRequest, reply: FastifyReply) => void;
}

/** Routes check their input with zod, never with JSON schemas: a route given one fails to register. */
function noJsonSchemas(): never {
  throw new Error('Tollgate routes take no JSON schemas (their input is checked with zod)');
}

export function buildHttpServer(opts: HttpServerOptions): FastifyInstance {
  const app = Fastify({
    // so Fastify's default schema compilers (ajv, fast-json-stringify: ~2 MB of heap) are never loaded
    schemaController: { compilersFactory: { buildValidator: noJsonSchemas, buildSerializer: noJsonSchemas } },
    loggerInstance: opts.logger,
    // one access line of our own (onResponse) instead of Fastify's two
    logController: new LogController({ disableRequestLogging: true }),
    // no child logger per request (a measurable share of a proxied request's CPU): log lines
    // that concern a request carry its reqId themselves
    childLoggerFactory: (logger) => logger,
    bodyLimit: opts.bodyLimit,
    genReqId: (req) => requestIdOf(req.headers),
    requestIdHeader: false,
    return503OnClosing: false,
  }) as unknown as FastifyInstance;

  app.decorateRequest('principal', null);
  app.decorateRequest('facts', null as never);
  app.decorateRequest('span', null);
  // hooks on every request are callback-style: no promise per request for synchronous work
  app.addHook('onRequest', (request, reply, done) => {
    request.facts = {};
    reply.header('x-request-id', request.id);
    // An `Upgrade` request answered over HTTP (refused, or a route without WebSocket) ends its connection.
    if (handedToUpgradeListener(request)) reply.header('connection', 'close');
    // 404 and 405 are known from the request line: answered before the body is read
    const unserved = unservedRequest(request, reply);
    if (unserved) return sendError(reply, unserved);
    done();
  });

  // preParsing runs after every onRequest hook, so after authentication: only an authenticated
  // caller's body is decoded or waited for.
  app.addHook('preParsing', (request, reply, payload, done) => {
    if (!carriesBody(request)) return done(null, payload);
    let body: Readable = payload;
    try {
      const encoding = requestEncoding(request.headers['content-encoding']);
      if (encoding) {
        body = decodedBody(payload, encoding, opts.bodyLimit);
        // the body is plain from here on: what is forwarded must not claim otherwise
        delete request.raw.headers['content-encoding'];
      }
    } catch (err) {
      return done(err as Error);
    }
    if (!request.raw.complete) body = withBodyDeadline(request, body, opts.requestBodyTimeoutMs, opts.requestBodyTimeoutMs - reply.elapsedTime);
    done(null, body);
  });

  // An answer given before the body was fully read (refused, too large, too slow) ends the
  // connection: the rest of the body is never read, and the socket is not kept for another request.
  app.addHook('onSend', (request, reply, _payload, done) => {
    if (!request.raw.complete) reply.header('connection', 'close');
    done();
  });

  // The raw bytes are forwarded upstream unchanged; the gateway reads model and stream. A large
  // body (a coding agent's whole conversation) is not parsed for that: parsing was most of the
  // gateway's CPU for it. Bad JSON in one is the upstream's to refuse.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (request, raw: Buffer, done) => {
    const type = request.headers['content-type'] ?? '';
    const looksJson = /\bjson\b/i.test(type) || type === '';
    if (raw.length === 0) return done(null, notJson(raw));
    const scan = scanJson(raw, MAX_JSON_DEPTH);
    if (scan.tooDeep) {
      if (!looksJson) return done(null, notJson(raw));
      return done(new GatewayError('invalid_json', `Request body nests deeper than ${MAX_JSON_DEPTH} levels.`), undefined);
    }
    if (raw.length >= LAZY_PARSE_BYTES) return done(null, lazilyParsed(raw, scan.top));
    try {
      const json: unknown = JSON.parse(raw.toString('utf8'));
      done(null, { raw, top: topLevelOf(json), json: () => json } satisfies ParsedBody);
    } catch (err) {
      if (!looksJson) return done(null, notJson(raw));
      done(new GatewayError('invalid_json', `Request body is not valid JSON: ${(err as Error).message}`), undefined);
    }
  });

  app.setErrorHandler((err: FastifyError, request, reply) => {
    const gatewayError = asGatewayError(err, opts.bodyLimit);
    if (gatewayError.status >= 500) request.log.error({ reqId: request.id, err }, 'request failed');
    return sendError(reply, gatewayError);
  });

  // answered in onRequest (above); Fastify requires a handler all the same
  app.setNotFoundHandler((request, reply) => sendError(reply, unservedRequest(request, reply)!));

  answerWrongMethods(app);

  app.addHook('onResponse', (request, reply, done) => {
    // With an 'upgrade' listener (WebSocket routes) Node detaches its HTTP parser from such a
    // connection: nothing more can be read on it, and left open it would hold off server.close().
    if (handedToUpgradeListener(request)) request.raw.socket.end(() => request.raw.socket.destroy());
    const span = request.span;
    if (span) endRequestSpan(span, request, reply);
    // not even built when the level leaves access lines out
    if (opts.logger.isLevelEnabled('info')) request.log.info(accessLine(request, reply, span?.spanContext()), 'request');
    opts.onAnswered?.(request, reply);
    done();
  });
  return app;
}

/**
 * The fields of a request's access line, in one object of one shape (pino leaves out the
 * undefined ones); the trace ids lead from the line to its trace when tracing is on.
 */
function accessLine(request: FastifyRequest, reply: FastifyReply, trace: SpanContext | undefined) {
  const facts = request.facts ?? {};
  return {
    reqId: request.id,
    trace_id: trace?.traceId,
    span_id: trace?.spanId,
    method: request.method,
    url: pathOf(request.url),
    status: reply.statusCode,
    durationMs: Math.round(reply.elapsedTime),
    keyId: facts.keyId,
    provider: facts.provider,
    accountId: facts.accountId,
    tokens: facts.tokens,
  };
}

/** From this size on a body is parsed only if someone needs more than its model and stream. */
export const LAZY_PARSE_BYTES = 256 * 1024;

export function notJson(raw: Buffer): ParsedBody {
  return { raw, top: { object: false }, json: () => undefined };
}

function lazilyParsed(raw: Buffer, top: TopLevel): ParsedBody {
  let parsed: { json: unknown } | undefined;
  const json = () => {
    if (!parsed) {
      try {
        parsed = { json: JSON.parse(raw.toString('utf8')) };
      } catch {
        parsed = { json: undefined };
      }
    }
    return parsed.json;
  };
  return { raw, top, json };
}

/** Whether the request announces a body (the test Fastify makes before parsing one). */
function carriesBody(request: FastifyRequest): boolean {
  const length = request.headers['content-length'];
  return request.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/** The route config of a path's 405 route: the methods the path does serve. */
interface WrongMethodConfig {
  allowedMethods?: string;
}

/** 404 for an unknown path, 405 (with `Allow`) for a known path's other methods; null when a route serves it. */
function unservedRequest(request: FastifyRequest, reply: FastifyReply): GatewayError | null {
  const path = pathOf(request.url);
  if (request.is404) return new GatewayError('not_found', `No route ${request.method} ${path}.`);
  const allowed = (request.routeOptions.config as WrongMethodConfig).allowedMethods;
  if (allowed === undefined) return null;
  reply.header('allow', allowed);
  return new GatewayError('method_not_allowed', `${request.method} is not allowed on ${request.routeOptions.url}; use ${allowed}.`);
}

/** Registers a 405 for the methods a known path does not serve (Fastify would say 404). */
function answerWrongMethods(app: FastifyInstance): void {
  const served = new Map<string, Set<string>>();
  app.addHook('onRoute', (route) => {
    if ((route.config as WrongMethodConfig | undefined)?.allowedMethods !== undefined) return;
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    const known = served.get(route.url) ?? new Set<string>();
    methods.forEach((m) => known.add(m));
    served.set(route.url, known);
  });
  app.decorate('answerWrongMethods', () => {
    for (const [url, methods] of served) {
      const missing = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'].filter((m) => !methods.has(m));
      if (missing.length === 0) continue;
      app.route({
        method: missing as ('GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE')[],
        url,
        config: { allowedMethods: [...methods].filter((m) => m !== 'HEAD').join(', ') } satisfies WrongMethodConfig,
        // answered in onRequest; Fastify requires a handler all the same
        handler: (request: FastifyRequest, reply: FastifyReply) => sendError(reply, unservedRequest(request, reply)!),
      });
    }
  });
}

/**
 * `body`, failing with 408 `request_timeout` unless the request's body has fully arrived by
 * `remainingMs` from now. A body still arriving after the deadline is not read further (onSend
 * then closes the connection); a response, streamed or not, is not bounded by it.
 */
function withBodyDeadline(request: FastifyRequest, body: Readable, timeoutMs: number, remainingMs: number): Readable {
  const timer = setTimeout(() => {
    if (request.raw.complete || request.raw.destroyed) return;
    const late = new GatewayError('request_timeout', `The request body did not arrive within ${timeoutMs} ms.`);
    // A decoding stream of our own can simply fail. The request itself must stay intact to be
    // answered: its reader gets the error as an event (no stream piped in between, per request).
    if (body !== request.raw) body.destroy(late);
    else request.raw.emit('error', late);
  }, Math.max(0, remainingMs));
  // a request cut off before its end leaves the timer to fire into nothing (its reader is gone)
  request.raw.once('end', () => clearTimeout(timer));
  // a reader that already stopped (the request was answered, or handed to the WebSocket upgrade)
  // must not leave the timeout uncaught
  body.on('error', () => {});
  return body;
}

declare module 'fastify' {
  interface FastifyInstance {
    /** call once after every route is registered */
    answerWrongMethods(): void;
  }
}
