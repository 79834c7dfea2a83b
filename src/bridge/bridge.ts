import type { FastifyReply, FastifyRequest } from 'fastify';
import { request as undiciRequest } from 'undici';
import { GatewayError } from '../errors.js';
import type { Gateway } from '../gateway.js';
import { clientGoneSignal, sendHandshakeRefusal } from '../proxy/forward.js';
import { clientResponseHeaders, queryOf, upstreamRequestHeaders } from '../proxy/headers.js';
import type { ParsedBody } from '../server/types.js';
import type { Lease, ReplicaInfo } from '../store/types.js';
import { HandshakeRefused } from '../upstream/client.js';
import type { ProviderPool, Scope } from '../upstream/pool.js';
import { admitRequest, refundRequest } from '../usage/limits.js';
import { CONTEXT_HEADER, signContext } from './context.js';
import { decideOwnership, isStale } from './ownership.js';
import { BridgeSession } from './session.js';
import { TURN_STATE_HEADER, withoutGatewayTurnState, type SessionIdentity } from './session-key.js';

export const INTERNAL_BRIDGE_PATH = '/internal/bridge/responses';
/**
 * How long a non-owner forwards to the owner it last reached without asking the store again.
 * Safe because an owner changes only when the old one dies (the forward fails and ownership is
 * looked up afresh) or lets go (it answers 503 and the entry is dropped).
 */
const REMOTE_OWNER_TTL_MS = 1_000;

export interface ReplicaIdentity {
  instanceId: string;
  advertiseUrl: string;
}

export interface BridgedCall {
  pool: ProviderPool;
  session: SessionIdentity;
  body: ParsedBody;
  /** the request came over the internal port: it is served here or refused, never forwarded again */
  forwarded: boolean;
  /** the caller's account pool and affinity key: a session's account always comes from it */
  scope: Scope;
}

/**
 * HTTP-bridge sessions of this replica: decides (through the store) who owns a session, serves
 * the ones it owns over their upstream WebSocket, forwards the rest to their owner with a signed
 * re-auth context, keeps the heartbeat and leases fresh, and lets go of everything on drain.
 */
export class Bridge {
  private readonly sessions = new Map<string, BridgeSession>();
  private readonly remoteOwners = new Map<string, { owner: ReplicaInfo; until: number }>();
  private heartbeat: NodeJS.Timeout | undefined;
  private maintenance: NodeJS.Timeout | undefined;
  private draining = false;
  /** when this replica's heartbeat last reached the store */
  private heartbeatOkAt = 0;

  constructor(private readonly gateway: Gateway, readonly identity: ReplicaIdentity) {}

  private get bounds() {
    return this.gateway.config.bridge;
  }

  start(): void {
    const beat = () => {
      const at = Date.now();
      return this.gateway.store.heartbeat(this.identity, at).then(
        () => void (this.heartbeatOkAt = at),
        (err) => this.gateway.log.debug({ err }, 'heartbeat failed'),
      );
    };
    void beat();
    this.heartbeat = setInterval(beat, this.bounds.heartbeatMs).unref();
    this.maintenance = setInterval(() => void this.maintain(), Math.min(this.bounds.leaseMs / 3, 5_000)).unref();
  }

  /** A bridged `POST /v1/responses`, from a client or forwarded by another replica. */
  async serve(request: FastifyRequest, reply: FastifyReply, call: BridgedCall): Promise<unknown> {
    const key = call.session.key;
    const held = this.sessions.get(key);
    if (held && this.surelyOwns(held)) return this.serveLocal(request, reply, call, held.lease);
    const remote = this.remoteOwners.get(key);
    if (remote && remote.until > Date.now() && !call.forwarded) return this.forward(request, reply, call, remote.owner);

    const ownership = await this.decide(call);
    if (ownership.kind === 'local') return this.serveLocal(request, reply, call, ownership.lease);
    if (call.forwarded) {
      this.gateway.metrics.bridgeForwards.inc({ outcome: 'loop' });
      throw new GatewayError('forward_loop', `Session is owned by ${ownership.owner.instanceId}; a forwarded request is not forwarded again.`);
    }
    this.remoteOwners.set(key, { owner: ownership.owner, until: Date.now() + REMOTE_OWNER_TTL_MS });
    return this.forward(request, reply, call, ownership.owner);
  }

  /** Who owns the call's session, claiming it for this replica (on a fresh account) if nobody does. */
  private decide(call: BridgedCall) {
    return decideOwnership(this.gateway.store, call.session.key, this.identity.instanceId, async () => (await call.pool.choose(new Set(), Date.now(), undefined, call.scope)).id, this.bounds);
  }

  /**
   * Whether a session held here is still ours without asking the store: its lease has not run
   * out, and our heartbeat is fresh enough that no other replica may take it over yet. A third
   * of each bound is kept as margin for clock skew and the time a turn takes to start.
   */
  private surelyOwns(session: BridgeSession, now = Date.now()): boolean {
    return (
      !this.draining &&
      session.leaseValidUntil - now > this.bounds.leaseMs / 3 &&
      this.heartbeatOkAt + this.bounds.staleAfterMs - now > this.bounds.staleAfterMs / 3
    );
  }

  /** Account affinity for providers without WebSocket support: the session's account, any replica. */
  async affinityAccount(session: SessionIdentity, pool: ProviderPool, scope: Scope): Promise<string> {
    const { store } = this.gateway;
    const lease = await store.getLease(session.key);
    if (!lease) {
      const claim = await store.claimLease(session.key, { instanceId: '', accountId: (await pool.choose(new Set(), Date.now(), undefined, scope)).id }, this.bounds.leaseMs);
      return claim.lease.accountId;
    }
    const bound = await this.usableLease(session.key, lease, pool, '', scope);
    await store.renewLease(session.key, '', bound.epoch, this.bounds.leaseMs);
    return bound.accountId;
  }

  /**
   * The lease, moved to another account when its own is cooling down or disabled: affinity
   * matters only while the account can serve. Called where no upstream connection is lost by it.
   */
  private async usableLease(sessionKey: string, lease: Lease, pool: ProviderPool, instanceId: string, scope: Scope): Promise<Lease> {
    const account = await pool.choose(new Set(), Date.now(), lease.accountId, scope);
    if (account.id === lease.accountId) return lease;
    const moved = await this.gateway.store.takeOverLease(sessionKey, lease.epoch, { instanceId, accountId: account.id }, this.bounds.leaseMs);
    return moved ?? lease;
  }

  private async serveLocal(request: FastifyRequest, reply: FastifyReply, call: BridgedCall, lease: Lease): Promise<unknown> {
    const { gateway } = this;
    let session = this.sessions.get(call.session.key);
    if (session && session.lease.epoch !== lease.epoch) {
      this.drop(session);
      session = undefined;
    }
    if (!session) {
      if (this.draining) throw new GatewayError('shutting_down', 'This replica is draining and takes no new bridge sessions.');
      const handshake = withoutGatewayTurnState(upstreamRequestHeaders(call.pool.provider, request.headers));
      session = new BridgeSession(call.session.key, lease, gateway.upstream, call.pool, handshake, this.bounds.leaseMs, gateway.scrubber);
      this.sessions.set(call.session.key, session);
      gateway.metrics.bridgeSessions.set(this.sessions.size);
    }
    // the key's pool changed under a live session: its account must not serve it any more
    if (!call.pool.find(session.lease.accountId, call.scope)) session.close();
    if (!session.connected) {
      // a new upstream connection either way: it may as well go to an account that can serve
      session.lease = await this.usableLease(call.session.key, session.lease, call.pool, this.identity.instanceId, call.scope);
    }
    request.facts.provider = call.pool.provider;
    request.facts.accountId = session.lease.accountId;
    const key = request.principal!.key;
    const admittedAt = await admitRequest(gateway.usage, key);
    let reachedUpstream = false;
    try {
      await session.run({
        body: call.body.json as Record<string, unknown>,
        reply,
        responseHeaders: { [TURN_STATE_HEADER]: call.session.turnState },
        onUsage: (usage) => gateway.recordUsage(request, call.pool.provider, session.lease.accountId, usage),
        onSent: () => (reachedUpstream = true),
      });
    } catch (err) {
      if (!reachedUpstream) refundRequest(gateway.usage, key.id, admittedAt);
      // the session's account refused the WebSocket (429, 401, 5xx…): the caller gets its answer
      if (err instanceof HandshakeRefused) return sendHandshakeRefusal(reply, err, gateway.scrubber);
      throw err;
    }
    return reply;
  }

  private async forward(request: FastifyRequest, reply: FastifyReply, call: BridgedCall, owner: ReplicaInfo, retried = false): Promise<unknown> {
    const { gateway } = this;
    const secret = gateway.config.internalSecret;
    if (!secret) throw new GatewayError('owner_unavailable', 'Owner forwarding needs TOLLGATE_INTERNAL_SECRET.');
    const principal = request.principal!;
    const context = signContext(
      {
        keyId: principal.key.id,
        authSource: principal.source,
        originInstance: this.identity.instanceId,
        targetInstance: owner.instanceId,
        sessionKey: call.session.key,
        body: call.body.raw,
        ttlSec: this.bounds.contextTtlSec,
      },
      secret,
    );
    const started = performance.now();
    const signal = clientGoneSignal(reply);
    let res;
    try {
      res = await undiciRequest(owner.advertiseUrl + INTERNAL_BRIDGE_PATH + queryOf(request.url), {
        dispatcher: gateway.agent,
        method: 'POST',
        // the owner needs the session headers and the allow-listed ones; credentials never travel
        headers: { ...upstreamRequestHeaders(call.pool.provider, request.headers), 'x-request-id': request.id, [CONTEXT_HEADER]: context },
        body: call.body.raw,
        signal,
      });
    } catch (err) {
      this.remoteOwners.delete(call.session.key);
      gateway.metrics.bridgeForwards.inc({ outcome: 'unreachable' });
      // an owner that cannot be reached is replaced only once its heartbeat is stale (or it left
      // the registry on drain): then ownership is decided afresh, once
      if (!retried && isStale(await gateway.store.getReplica(owner.instanceId), this.bounds, Date.now())) {
        const again = await this.decide(call);
        if (again.kind === 'local') return this.serveLocal(request, reply, call, again.lease);
        if (again.owner.instanceId !== owner.instanceId) return this.forward(request, reply, call, again.owner, true);
      }
      throw new GatewayError('owner_unavailable', `The owner of this session (${owner.instanceId}) is not reachable; retry shortly.`, {
        retryAfter: 1,
        cause: err,
      });
    }
    gateway.metrics.bridgeForwardLatency.observe((performance.now() - started) / 1000);
    gateway.metrics.bridgeForwards.inc({ outcome: res.statusCode < 400 ? 'ok' : `status_${res.statusCode}` });
    // the owner let go of the session (draining, or another replica owns it now): look it up next time
    if (res.statusCode === 503) this.remoteOwners.delete(call.session.key);
    request.facts.provider = call.pool.provider;
    return reply.code(res.statusCode).headers(clientResponseHeaders(res.headers)).send(res.body);
  }

  /** Renews the leases of sessions held here, closes idle ones, and drops the ones lost to another owner. */
  private async maintain(now = Date.now()): Promise<void> {
    const { store } = this.gateway;
    for (const [key, remote] of this.remoteOwners) if (remote.until <= now) this.remoteOwners.delete(key);
    for (const session of [...this.sessions.values()]) {
      if (!session.busy && (this.draining || now - session.lastUsed > this.bounds.sessionIdleMs)) {
        await this.release(session);
        continue;
      }
      const renewedAt = Date.now();
      const renewed = await store.renewLease(session.key, this.identity.instanceId, session.lease.epoch, this.bounds.leaseMs).catch(() => undefined);
      if (renewed) session.leaseValidUntil = renewedAt + this.bounds.leaseMs;
      // lost to another owner: let go; a store that did not answer is asked again next round
      else if (renewed === false && !session.busy) this.drop(session);
    }
  }

  private drop(session: BridgeSession): void {
    session.close();
    if (this.sessions.get(session.key) === session) this.sessions.delete(session.key);
    this.gateway.metrics.bridgeSessions.set(this.sessions.size);
  }

  private async release(session: BridgeSession): Promise<void> {
    this.drop(session);
    await this.gateway.store.releaseLease(session.key, this.identity.instanceId, session.lease.epoch).catch(() => false);
  }

  /**
   * SIGTERM: take no new sessions, leave the registry so others stop forwarding here, and
   * release every session as soon as its in-flight turn is done.
   */
  async drain(): Promise<void> {
    this.draining = true;
    // no heartbeat may put this replica back in the registry after it left
    clearInterval(this.heartbeat);
    await this.gateway.store.removeReplica(this.identity.instanceId).catch(() => {});
    await this.maintain();
  }

  async close(): Promise<void> {
    this.draining = true;
    clearInterval(this.heartbeat);
    clearInterval(this.maintenance);
    await Promise.all([...this.sessions.values()].map((session) => this.release(session)));
  }
}
