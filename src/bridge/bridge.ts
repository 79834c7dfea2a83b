import { LRUCache } from 'lru-cache';
import type { Dispatcher, ModelCall } from '../dispatch/call.js';
import { GatewayError } from '../errors.js';
import type { Metrics } from '../metrics/metrics.js';
import type { ReplicaInfo, Store } from '../store/types.js';
import type { BridgeLocal } from './local.js';
import { decideOwnership, isStale } from './ownership.js';
import { OwnerUnreachable, type PeerClient } from './peer-client.js';
import type { SessionRegistry } from './registry.js';

/**
 * How long a non-owner forwards to the owner it last reached without asking the store again.
 * Safe because an owner changes only when the old one dies (the forward fails and ownership is
 * looked up afresh) or lets go (it answers 503 and the entry is dropped).
 */
const REMOTE_OWNER_TTL_MS = 1_000;
/** Bounds the remote-owner cache; a session missing from it is looked up in the store. */
const REMOTE_OWNER_ENTRIES = 10_000;

export interface BridgeDeps {
  store: Store;
  metrics: Metrics;
}

/**
 * The dispatcher of bridged sessions: decides (through the store) who owns the call's session,
 * serves the ones this replica owns on their upstream WebSocket (`BridgeLocal`) and forwards the
 * rest to their owner (`PeerClient`).
 */
export class Bridge implements Dispatcher {
  private readonly remoteOwners = new LRUCache<string, ReplicaInfo>({ max: REMOTE_OWNER_ENTRIES, ttl: REMOTE_OWNER_TTL_MS });

  constructor(
    private readonly deps: BridgeDeps,
    readonly registry: SessionRegistry,
    private readonly local: BridgeLocal,
    private readonly peers: PeerClient,
  ) {}

  get identity() {
    return this.registry.identity;
  }

  /** A bridged call from a client: served here or forwarded to its owner. */
  dispatch(call: ModelCall): Promise<unknown> {
    return this.serve(call, false);
  }

  /** A call forwarded by another replica: served here or refused, never forwarded again. */
  serveForwarded(call: ModelCall): Promise<unknown> {
    return this.serve(call, true);
  }

  private async serve(call: ModelCall, forwarded: boolean): Promise<unknown> {
    const key = call.session!.key;
    const held = this.registry.get(key);
    if (held && this.registry.surelyOwns(held)) return this.local.serve(call, held.lease);
    const remote = forwarded ? undefined : this.remoteOwners.get(key);
    if (remote) return this.forward(call, remote);

    const ownership = await this.decide(call);
    if (ownership.kind === 'local') return this.local.serve(call, ownership.lease);
    if (forwarded) {
      this.deps.metrics.bridgeForwards.inc({ outcome: 'loop' });
      throw new GatewayError('forward_loop', `Session is owned by ${ownership.owner.instanceId}; a forwarded request is not forwarded again.`);
    }
    this.remoteOwners.set(key, ownership.owner);
    return this.forward(call, ownership.owner);
  }

  /** Who owns the call's session, claiming it for this replica (on a fresh account) if nobody does. */
  private decide(call: ModelCall) {
    const { store } = this.deps;
    return decideOwnership(store, call.session!.key, this.identity.instanceId, async () => (await call.pool.choose(new Set(), Date.now(), undefined, call.scope)).id, this.registry.bounds);
  }

  private async forward(call: ModelCall, owner: ReplicaInfo, retried = false): Promise<unknown> {
    const sessionKey = call.session!.key;
    try {
      const answer = await this.peers.forward(call, owner);
      // the owner let go of the session (draining, or another replica owns it now): look it up next time
      if (answer.statusCode === 503) this.remoteOwners.delete(sessionKey);
      return call.reply;
    } catch (err) {
      if (!(err instanceof OwnerUnreachable)) throw err;
      this.remoteOwners.delete(sessionKey);
      // an owner that cannot be reached is replaced only once its heartbeat is stale (or it left
      // the registry on drain): then ownership is decided afresh, once
      if (!retried && isStale(await this.deps.store.getReplica(owner.instanceId), this.registry.bounds, Date.now())) {
        const again = await this.decide(call);
        if (again.kind === 'local') return this.local.serve(call, again.lease);
        if (again.owner.instanceId !== owner.instanceId) return this.forward(call, again.owner, true);
      }
      throw new GatewayError('owner_unavailable', `The owner of this session (${owner.instanceId}) is not reachable; retry shortly.`, {
        retryAfter: 1,
        cause: err.cause,
      });
    }
  }
}
