import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import type { Metrics } from '../metrics/metrics.js';
import type { Store } from '../store/types.js';
import type { BridgeSession } from './session.js';

export interface ReplicaIdentity {
  instanceId: string;
  advertiseUrl: string;
}

export interface RegistryDeps {
  store: Store;
  metrics: Metrics;
  log: Logger;
  bounds: Config['bridge'];
}

/**
 * The bridge sessions this replica holds, and its standing in the cluster: the heartbeat that
 * keeps it in the replica registry, the upkeep of its sessions' leases, and drain.
 */
export class SessionRegistry {
  private readonly sessions = new Map<string, BridgeSession>();
  private heartbeat: NodeJS.Timeout | undefined;
  private maintenance: NodeJS.Timeout | undefined;
  private draining = false;
  /** when this replica's heartbeat last reached the store */
  private heartbeatOkAt = 0;

  constructor(private readonly deps: RegistryDeps, readonly identity: ReplicaIdentity) {}

  get bounds(): Config['bridge'] {
    return this.deps.bounds;
  }

  get isDraining(): boolean {
    return this.draining;
  }

  start(): void {
    const beat = () => {
      const at = Date.now();
      return this.deps.store.heartbeat(this.identity, at).then(
        () => void (this.heartbeatOkAt = at),
        (err) => this.deps.log.debug({ err }, 'heartbeat failed'),
      );
    };
    void beat();
    this.heartbeat = setInterval(beat, this.bounds.heartbeatMs).unref();
    this.maintenance = setInterval(() => void this.maintain(), Math.min(this.bounds.leaseMs / 3, 5_000)).unref();
  }

  get(sessionKey: string): BridgeSession | undefined {
    return this.sessions.get(sessionKey);
  }

  add(session: BridgeSession): void {
    this.sessions.set(session.key, session);
    this.deps.metrics.bridgeSessions.set(this.sessions.size);
  }

  /**
   * Whether a session held here is still ours without asking the store: its lease has not run
   * out, and our heartbeat is fresh enough that no other replica may take it over yet. A third
   * of each bound is kept as margin for clock skew and the time a turn takes to start.
   */
  surelyOwns(session: BridgeSession, now = Date.now()): boolean {
    return (
      !this.draining &&
      session.leaseValidUntil - now > this.bounds.leaseMs / 3 &&
      this.heartbeatOkAt + this.bounds.staleAfterMs - now > this.bounds.staleAfterMs / 3
    );
  }

  /** Renews the leases of sessions held here, closes idle ones, and drops the ones lost to another owner. */
  async maintain(now = Date.now()): Promise<void> {
    const { store } = this.deps;
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

  drop(session: BridgeSession): void {
    session.close();
    if (this.sessions.get(session.key) === session) this.sessions.delete(session.key);
    this.deps.metrics.bridgeSessions.set(this.sessions.size);
  }

  private async release(session: BridgeSession): Promise<void> {
    this.drop(session);
    await this.deps.store.releaseLease(session.key, this.identity.instanceId, session.lease.epoch).catch(() => false);
  }

  /**
   * SIGTERM: take no new sessions, leave the registry so others stop forwarding here, and
   * release every session as soon as its in-flight turn is done.
   */
  async drain(): Promise<void> {
    this.draining = true;
    // no heartbeat may put this replica back in the registry after it left
    clearInterval(this.heartbeat);
    await this.deps.store.removeReplica(this.identity.instanceId).catch(() => {});
    await this.maintain();
  }

  async close(): Promise<void> {
    this.draining = true;
    clearInterval(this.heartbeat);
    clearInterval(this.maintenance);
    await Promise.all([...this.sessions.values()].map((session) => this.release(session)));
  }
}
