import type { Lease, Store } from '../store/types.js';
import type { ProviderPool, Scope } from './pool.js';

/**
 * The lease, moved to another account when its own is cooling down or disabled: affinity
 * matters only while the account can serve. Call it where no upstream connection is lost by it.
 */
export async function usableLease(store: Store, sessionKey: string, lease: Lease, pool: ProviderPool, instanceId: string, leaseMs: number, scope: Scope): Promise<Lease> {
  const account = await pool.choose(new Set(), Date.now(), lease.accountId, scope);
  if (account.id === lease.accountId) return lease;
  const moved = await store.takeOverLease(sessionKey, lease.epoch, { instanceId, accountId: account.id }, leaseMs);
  return moved ?? lease;
}

/**
 * Account affinity for providers without WebSocket support: the session's account, on any
 * replica. The lease has no owner (empty instance id): there is no upstream connection to own.
 */
export async function affinityAccount(store: Store, sessionKey: string, pool: ProviderPool, leaseMs: number, scope: Scope): Promise<string> {
  const lease = await store.getLease(sessionKey);
  if (!lease) {
    const claim = await store.claimLease(sessionKey, { instanceId: '', accountId: (await pool.choose(new Set(), Date.now(), undefined, scope)).id }, leaseMs);
    return claim.lease.accountId;
  }
  const bound = await usableLease(store, sessionKey, lease, pool, '', leaseMs, scope);
  await store.renewLease(sessionKey, '', bound.epoch, leaseMs);
  return bound.accountId;
}
