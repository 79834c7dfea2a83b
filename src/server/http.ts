import { randomUUID } from 'node:crypto';
import Fastify, { LogController, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { GatewayError, renderError, shapeForPath, type ErrorShape } from '../errors.js';
import type { ParsedBody } from './types.js';
import './types.js';

const REQUEST_ID = /^[\w.-]{1,128}$/;

export function requestIdOf(headers: Record<string, unknown>): string {
  const presented = headers['x-request-id'];
  return typeof presented === 'string' && REQUEST_ID.test(presented) ? presented : randomUUID();
}

export function sendError(reply: FastifyReply, err: GatewayError, shape: ErrorShape = shapeForPath(reply.request.url)) {
  const rendered = renderError(err, shape);
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
  /** called once per answered request, next to its access-log line (metrics) */
  onAnswered?: (request: FastifyRequest, reply: FastifyReply) => void;
}

export function buildHttpServer(opts: HttpServerOptions): FastifyInstance {
  const app = Fastify({
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
  // hooks on every request are callback-style: no promise per request for synchronous work
  app.addHook('onRequest', (request, reply, done) => {
    request.facts = {};
    reply.header('x-request-id', request.id);
    // An `Upgrade` request answered over HTTP (refused, or a route without WebSocket) ends its connection.
    if (handedToUpgradeListener(request)) reply.header('connection', 'close');
    done();
  });

  // The raw bytes are forwarded upstream unchanged; the parsed copy is only read (model, stream).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (request, raw: Buffer, done) => {
    const type = request.headers['content-type'] ?? '';
    const looksJson = /\bjson\b/i.test(type) || type === '';
    if (raw.length === 0) return done(null, { raw, json: undefined } satisfies ParsedBody);
    try {
      done(null, { raw, json: JSON.parse(raw.toString('utf8')) } satisfies ParsedBody);
    } catch (err) {
      if (!looksJson) return done(null, { raw, json: undefined } satisfies ParsedBody);
      done(new GatewayError('invalid_json', `Request body is not valid JSON: ${(err as Error).message}`), undefined);
    }
  });

  app.setErrorHandler((err: FastifyError, request, reply) => {
    const gatewayError = asGatewayError(err, opts.bodyLimit);
    if (gatewayError.status >= 500) request.log.error({ reqId: request.id, err }, 'request failed');
    return sendError(reply, gatewayError);
  });

  app.setNotFoundHandler((request, reply) =>
    sendError(reply, new GatewayError('not_found', `No route ${request.method} ${request.url.split('?')[0]}.`)),
  );

  answerWrongMethods(app);

  app.addHook('onResponse', (request, reply, done) => {
    // With an 'upgrade' listener (WebSocket routes) Node detaches its HTTP parser from such a
    // connection: nothing more can be read on it, and left open it would hold off server.close().
    if (handedToUpgradeListener(request)) request.raw.socket.end(() => request.raw.socket.destroy());
    const facts = request.facts ?? {};
    request.log.info(
      {
        reqId: request.id,
        method: request.method,
        url: request.url.split('?')[0],
        status: reply.statusCode,
        durationMs: Math.round(reply.elapsedTime),
        keyId: facts.keyId,
        provider: facts.provider,
        accountId: facts.accountId,
        tokens: facts.tokens,
      },
      'request',
    );
    opts.onAnswered?.(request, reply);
    done();
  });
  return app;
}

/** Registers a 405 for the methods a known path does not serve (Fastify would say 404). */
function answerWrongMethods(app: FastifyInstance): void {
  const served = new Map<string, Set<string>>();
  app.addHook('onRoute', (route) => {
    if (route.config && (route.config as { wrongMethod?: boolean }).wrongMethod) return;
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
        config: { wrongMethod: true },
        handler: (request: FastifyRequest, reply: FastifyReply) => {
          const allowed = [...methods].filter((m) => m !== 'HEAD').join(', ');
          reply.header('allow', allowed);
          return sendError(reply, new GatewayError('method_not_allowed', `${request.method} is not allowed on ${url}; use ${allowed}.`));
        },
      });
    }
  });
}

declare module 'fastify' {
  interface FastifyInstance {
    /** call once after every route is registered */
    answerWrongMethods(): void;
  }
}
