import type { Config } from '../config/schema.js';
import type { Lease, ReplicaInfo, Store } from '../store/types.js';

export type Ownership = { kind: 'local'; lease: Lease } | { kind: 'remote'; lease: Lease; owner: ReplicaInfo };

export function isStale(replica: ReplicaInfo | null, bounds: Config['bridge'], now: number): boolean {
  return !replica || now - replica.lastSeen > bounds.staleAfterMs;
}

/**
 * The one place ownership of a bridge session is decided. The lease in the store says who
 * owns it; an owner whose heartbeat is stale is taken over with a new epoch, so no session
 * stays stuck on a dead replica. `chooseAccount` runs only when a new session is claimed.
 */
export async function decideOwnership(
  store: Store,
  sessionKey: string,
  instanceId: string,
  chooseAccount: () => Promise<string>,
  bounds: Config['bridge'],
  now = Date.now(),
): Promise<Ownership> {
  for (let round = 0; round < 3; round++) {
    let lease = await store.getLease(sessionKey);
    if (!lease) {
      const claim = await store.claimLease(sessionKey, { instanceId, accountId: await chooseAccount() }, bounds.leaseMs);
      if (claim.claimed) return { kind: 'local', lease: claim.lease };
      lease = claim.lease;
    }
    if (lease.instanceId === instanceId) return { kind: 'local', lease };
    const owner = await store.getReplica(lease.instanceId);
    if (owner && !isStale(owner, bounds, now)) return { kind: 'remote', lease, owner };
    const taken = await takeOver(store, sessionKey, lease, instanceId, bounds);
    if (taken) return { kind: 'local', lease: taken };
    // someone else moved first: look again
  }
  throw new Error(`ownership of session ${sessionKey} keeps changing`);
}

/** Takes a session from a dead owner, keeping its account (upstream prompt caches). */
function takeOver(store: Store, sessionKey: string, stale: Lease, instanceId: string, bounds: Config['bridge']) {
  return store.takeOverLease(sessionKey, stale.epoch, { instanceId, accountId: stale.accountId }, bounds.leaseMs);
}
