import type { Dispatcher as UndiciDispatcher } from 'undici';
import type { ModelCall } from '../dispatch/call.js';
import { GatewayError } from '../errors.js';
import { clientGoneSignal } from '../http/client-gone.js';
import { clientResponseHeaders, queryOf, upstreamRequestHeaders } from '../http/headers.js';
import { requestTarget } from '../http/request-target.js';
import type { Metrics } from '../metrics/metrics.js';
import type { ReplicaInfo } from '../store/types.js';
import { HTTP_RESPONSE_STATUS_CODE, OWNER_FORWARD_SPAN, TOLLGATE_OWNER_INSTANCE_ID } from '../telemetry/attributes.js';
import { SpanKind, endFailed, errorTypeOf, type Tracing } from '../telemetry/tracing.js';
import { CONTEXT_HEADER, signContext } from './context.js';

export const INTERNAL_BRIDGE_PATH = '/internal/bridge/responses';

export interface PeerClientDeps {
  agent: UndiciDispatcher;
  metrics: Metrics;
  internalSecret: string | undefined;
  contextTtlSec: number;
  identity: { readonly instanceId: string };
  tracing?: Tracing;
}

/** The owner could not be reached at all (nothing was answered): ownership may be decided again. */
export class OwnerUnreachable extends Error {
  constructor(readonly owner: ReplicaInfo, options: { cause: unknown }) {
    super(`owner ${owner.instanceId} is not reachable`, options);
  }
}

/**
 * The peer hop ("forward"): a bridged call sent to the replica that owns its session, with a
 * signed re-auth context in place of the caller's credential, and the owner's answer relayed.
 */
export class PeerClient {
  constructor(private readonly deps: PeerClientDeps) {}

  /** Throws `OwnerUnreachable` when no answer came back; any answer (503 included) is relayed. */
  async forward(call: ModelCall, owner: ReplicaInfo): Promise<{ statusCode: number }> {
    const { request, reply } = call;
    const { metrics, internalSecret: secret } = this.deps;
    if (!secret) throw new GatewayError('owner_unavailable', 'Owner forwarding needs TOLLGATE_INTERNAL_SECRET.');
    const principal = request.principal!;
    // the hop's span; its trace context travels inside the signed context, covered by the HMAC
    const span = this.deps.tracing?.startSpan(OWNER_FORWARD_SPAN, request.span, SpanKind.CLIENT, { [TOLLGATE_OWNER_INSTANCE_ID]: owner.instanceId });
    const context = signContext(
      {
        keyId: principal.key.id,
        authSource: principal.source,
        originInstance: this.deps.identity.instanceId,
        targetInstance: owner.instanceId,
        sessionKey: call.session!.key,
        route: call.route.url,
        body: call.body.raw,
        ttlSec: this.deps.contextTtlSec,
        trace: span && this.deps.tracing?.carrierOf(span),
      },
      secret,
    );
    const started = performance.now();
    const signal = clientGoneSignal(reply);
    let res;
    try {
      res = await this.deps.agent.request({
        ...requestTarget(owner.advertiseUrl, INTERNAL_BRIDGE_PATH + queryOf(request.url)),
        method: 'POST',
        // the owner needs the session headers and the allow-listed ones; credentials never travel
        headers: { ...upstreamRequestHeaders(call.pool.provider, request.headers), 'x-request-id': request.id, [CONTEXT_HEADER]: context },
        body: call.body.raw,
        signal,
      });
    } catch (err) {
      if (span) endFailed(span, errorTypeOf(err));
      metrics.bridgeForwards.inc({ outcome: 'unreachable' });
      throw new OwnerUnreachable(owner, { cause: err });
    }
    metrics.bridgeForwardLatency.observe((performance.now() - started) / 1000);
    metrics.bridgeForwards.inc({ outcome: res.statusCode < 400 ? 'ok' : `status_${res.statusCode}` });
    request.facts.provider = call.pool.provider;
    span?.setAttribute(HTTP_RESPONSE_STATUS_CODE, res.statusCode);
    try {
      await reply.code(res.statusCode).headers(clientResponseHeaders(res.headers)).send(res.body);
    } finally {
      // the hop lasts until the owner's answer has been relayed
      span?.end();
    }
    return { statusCode: res.statusCode };
  }
}
