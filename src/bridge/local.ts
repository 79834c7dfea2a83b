import type { ModelCall } from '../dispatch/call.js';
import { GatewayError } from '../errors.js';
import { sendHandshakeRefusal } from '../http/handshake-refusal.js';
import { upstreamRequestHeaders } from '../http/headers.js';
import type { SecretScrubber } from '../http/scrubber.js';
import { TURN_STATE_HEADER, withoutGatewayTurnState } from '../http/session-key.js';
import type { Store } from '../store/types.js';
import { usableLease } from '../upstream/affinity.js';
import { HandshakeRefused, type UpstreamClient } from '../upstream/client.js';
import type { Lease } from '../store/types.js';
import { BRIDGE_TURN_SPAN, TOLLGATE_ACCOUNT_ID, usageAttributes } from '../telemetry/attributes.js';
import { noteFirstByte, startModelCallSpan } from '../telemetry/spans.js';
import { endFailed, errorTypeOf, type Tracing } from '../telemetry/tracing.js';
import type { SessionRegistry } from './registry.js';
import { BridgeSession } from './session.js';

export interface LocalDeps {
  store: Store;
  upstream: UpstreamClient;
  scrubber: SecretScrubber;
  tracing?: Tracing;
}

/** The owner's side of a bridged call: the turn runs on this replica's session of its upstream WebSocket. */
export class BridgeLocal {
  constructor(private readonly deps: LocalDeps, private readonly registry: SessionRegistry) {}

  async serve(call: ModelCall, lease: Lease): Promise<unknown> {
    const { request, reply } = call;
    const sessionKey = call.session!.key;
    const { leaseMs } = this.registry.bounds;
    let session = this.registry.get(sessionKey);
    if (session && session.lease.epoch !== lease.epoch) {
      this.registry.drop(session);
      session = undefined;
    }
    if (!session) {
      if (this.registry.isDraining) throw new GatewayError('shutting_down', 'This replica is draining and takes no new bridge sessions.');
      const handshake = withoutGatewayTurnState(upstreamRequestHeaders(call.pool.provider, request.headers));
      session = new BridgeSession(sessionKey, lease, this.deps.upstream, call.pool, call.route.upstreamPath, handshake, leaseMs, this.deps.scrubber);
      this.registry.add(session);
    }
    // one pool per session: the one it was opened with, whichever route a later turn came by
    const { pool } = session;
    // the key's pool changed under a live session: its account must not serve it any more
    if (!pool.find(session.lease.accountId, call.scope)) session.close();
    if (!session.connected) {
      // a new upstream connection either way: it may as well go to an account that can serve
      session.lease = await usableLease(this.deps.store, sessionKey, session.lease, pool, this.registry.identity.instanceId, leaseMs, call.scope);
    }
    request.facts.provider = pool.provider;
    request.facts.accountId = session.lease.accountId;
    const admitted = await call.metered!.admit();
    const { tracing } = this.deps;
    // the turn: the wait for the session's previous turn, a handshake if needed, and the exchange
    const span = tracing && startModelCallSpan(tracing, request.span, pool.provider, request.facts.model, 'chat', BRIDGE_TURN_SPAN);
    span?.setAttribute(TOLLGATE_ACCOUNT_ID, session.lease.accountId);
    let reachedUpstream = false;
    let sentAt = 0;
    try {
      await session.run({
        body: call.body.json() as Record<string, unknown>,
        reply,
        responseHeaders: { [TURN_STATE_HEADER]: call.session!.turnState },
        onUsage: (usage) => {
          admitted.record(usage, { provider: pool.provider, accountId: session.lease.accountId });
          span?.setAttributes(usageAttributes(usage));
        },
        onSent: () => {
          reachedUpstream = true;
          sentAt = performance.now();
        },
        onFirstEvent: span && (() => noteFirstByte(span, sentAt)),
      });
    } catch (err) {
      if (span) endFailed(span, errorTypeOf(err));
      if (!reachedUpstream) admitted.refund();
      // the session's account refused the WebSocket (429, 401, 5xx…): the caller gets its answer
      if (err instanceof HandshakeRefused) return sendHandshakeRefusal(reply, err, this.deps.scrubber);
      throw err;
    }
    span?.end();
    return reply;
  }
}
