import { clientGoneSignal } from '../http/client-gone.js';
import { queryOf, upstreamRequestHeaders } from '../http/headers.js';
import type { SecretScrubber } from '../http/scrubber.js';
import { withoutGatewayTurnState } from '../http/session-key.js';
import type { Metrics } from '../metrics/metrics.js';
import type { ParsedBody } from '../server/types.js';
import { HTTP_RESPONSE_STATUS_CODE, TOLLGATE_ACCOUNT_ID, usageAttributes } from '../telemetry/attributes.js';
import { noteFirstByte, startModelCallSpan } from '../telemetry/spans.js';
import { endFailed, errorTypeOf, type Tracing } from '../telemetry/tracing.js';
import type { UpstreamClient } from '../upstream/client.js';
import type { ModelRoute } from '../upstream/routes.js';
import type { Dispatcher, ModelCall } from './call.js';
import { relayUpstreamReply } from './relay.js';

export interface DirectDeps {
  upstream: UpstreamClient;
  scrubber: SecretScrubber;
  metrics: Metrics;
  tracing?: Tracing;
}

/**
 * Streamed Chat Completions report usage only when asked; ask for it so a streamed call is
 * never metered as zero. The extra final chunk (`choices: []`) is part of the public API.
 */
function upstreamBody(route: ModelRoute, body: ParsedBody): Buffer {
  if (route.format !== 'openai-chat' || body.top.stream !== true) return body.raw;
  const json = body.json() as { stream_options?: { include_usage?: unknown } };
  if (json.stream_options?.include_usage === true) return body.raw;
  return Buffer.from(JSON.stringify({ ...json, stream_options: { ...json.stream_options, include_usage: true } }));
}

/** Straight to the provider: limits, the failover client, and the relay of its reply. */
export class DirectDispatcher implements Dispatcher {
  constructor(private readonly deps: DirectDeps) {}

  async dispatch(call: ModelCall): Promise<unknown> {
    const { request, reply, route, pool } = call;
    const { metrics, tracing } = this.deps;
    const admitted = call.metered ? await call.metered.admit() : undefined;
    const signal = clientGoneSignal(reply);
    const span = tracing && startModelCallSpan(tracing, request.span, pool.provider, request.facts.model, route.format ? 'chat' : 'count_tokens');
    const sentAt = performance.now();
    let upstream;
    try {
      upstream = await this.deps.upstream.send(pool, {
        method: 'POST',
        path: route.upstreamPath + queryOf(request.url),
        headers: {
          ...withoutGatewayTurnState(upstreamRequestHeaders(pool.provider, request.headers)),
          'accept-encoding': 'identity',
          // the upstream sees this call's span as its parent, not the caller's
          ...(span && tracing?.carrierOf(span)),
        },
        body: upstreamBody(route, call.body),
        signal,
        accountId: call.accountId,
        scope: call.scope,
      });
    } catch (err) {
      admitted?.refund();
      if (span) endFailed(span, errorTypeOf(err));
      throw err;
    }
    request.facts.accountId = upstream.account.id;
    metrics.per.ttfb(pool.provider).observe((performance.now() - sentAt) / 1000);
    if (span) {
      noteFirstByte(span, sentAt);
      span.setAttributes({ [TOLLGATE_ACCOUNT_ID]: upstream.account.id, [HTTP_RESPONSE_STATUS_CODE]: upstream.statusCode });
    }
    const inFlight = metrics.per.inFlightStreams(pool.provider);
    inFlight.inc();
    return relayUpstreamReply(request, reply, upstream, {
      format: route.format,
      scrubber: this.deps.scrubber,
      onDone: (usage) => {
        inFlight.dec();
        admitted?.record(usage, { provider: pool.provider, accountId: upstream.account.id });
        if (span) {
          if (usage) span.setAttributes(usageAttributes(usage));
          span.end();
        }
      },
    });
  }
}
