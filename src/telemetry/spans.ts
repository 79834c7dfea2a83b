import { SpanKind, SpanStatusCode, type Span } from '@opentelemetry/api';
import type { FastifyReply, FastifyRequest, onRequestHookHandler } from 'fastify';
import type { ProviderName } from '../config/schema.js';
import { pathOf } from '../http/headers.js';
import {
  ERROR_TYPE,
  FIRST_BYTE_EVENT,
  GEN_AI_OPERATION_NAME,
  GEN_AI_REQUEST_MODEL,
  GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
  HTTP_REQUEST_METHOD,
  HTTP_RESPONSE_STATUS_CODE,
  HTTP_ROUTE,
  TOLLGATE_ACCOUNT_ID,
  TOLLGATE_KEY_ID,
  TOLLGATE_REQUEST_ID,
  URL_PATH,
  providerAttributes,
  usageAttributes,
} from './attributes.js';
import type { TraceCarrier, Tracing } from './tracing.js';

/**
 * Starts the request's server span (`request.span`), a child of the trace the caller sent in
 * `traceparent` — or, on the owner of a forwarded turn, of the one in the signed context.
 */
export function startRequestSpan(tracing: Tracing, request: FastifyRequest, parent: TraceCarrier | FastifyRequest['headers'] = request.headers): Span {
  const route = request.routeOptions.url;
  const span = tracing.startServerSpan(route ? `${request.method} ${route}` : request.method, parent, {
    [HTTP_REQUEST_METHOD]: request.method,
    [URL_PATH]: pathOf(request.url),
    [TOLLGATE_REQUEST_ID]: request.id,
  });
  if (route) span.setAttribute(HTTP_ROUTE, route);
  request.span = span;
  return span;
}

/** An onRequest hook giving every request of a scope its server span. */
export function traceRequests(tracing: Tracing): onRequestHookHandler {
  return (request, _reply, done) => {
    startRequestSpan(tracing, request);
    done();
  };
}

/**
 * Ends the server span with what the request learned on its way (the access line's facts):
 * key, provider, account, model, tokens, status. A 5xx is the span's error; a 4xx only names its
 * gateway error code, as the HTTP conventions ask of a server.
 */
export function endRequestSpan(span: Span, request: FastifyRequest, reply: FastifyReply): void {
  const facts = request.facts ?? {};
  span.setAttribute(HTTP_RESPONSE_STATUS_CODE, reply.statusCode);
  if (facts.keyId) span.setAttribute(TOLLGATE_KEY_ID, facts.keyId);
  if (facts.provider) span.setAttributes(providerAttributes(facts.provider));
  if (facts.accountId) span.setAttribute(TOLLGATE_ACCOUNT_ID, facts.accountId);
  if (facts.model) span.setAttribute(GEN_AI_REQUEST_MODEL, facts.model);
  if (facts.tokens) span.setAttributes(usageAttributes(facts.tokens));
  if (facts.errorCode) span.setAttribute(ERROR_TYPE, facts.errorCode);
  if (reply.statusCode >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
  span.end();
}

/**
 * The span of one call to the model provider, named as the GenAI conventions ask (`chat gpt-5`):
 * the upstream HTTP request of a direct call, or the WebSocket exchange of a bridged turn.
 */
export function startModelCallSpan(
  tracing: Tracing,
  parent: Span | null | undefined,
  provider: ProviderName,
  model: string | undefined,
  operation = 'chat',
  name = model ? `${operation} ${model}` : operation,
): Span | undefined {
  const span = tracing.startSpan(name, parent, SpanKind.CLIENT, {
    ...providerAttributes(provider),
    [GEN_AI_OPERATION_NAME]: operation,
  });
  if (model) span?.setAttribute(GEN_AI_REQUEST_MODEL, model);
  return span;
}

/** The first byte (or event) of the upstream's answer, `startedAt` (performance.now()) after the call went out. */
export function noteFirstByte(span: Span, startedAt: number): void {
  span.addEvent(FIRST_BYTE_EVENT);
  span.setAttribute(GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, (performance.now() - startedAt) / 1000);
}
