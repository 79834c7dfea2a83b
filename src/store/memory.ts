import { DEFAULTS } from '../config/schema.js';
import { GatewayError } from '../errors.js';
import { LIMIT_WINDOWS, windowBounds, type LimitWindow } from '../usage/windows.js';
import { addCounters, counterFor, emptyCounters, limitDenies, type Limit, type UsageCounters } from '../usage/counters.js';
import { HOUR_MS, historyRows, hourStart } from './history.js';
import { batchTotals } from './usage-batch.js';
import {
  ADMISSION_MEMORY,
  type AccountState,
  type Admission,
  type AdmissionTicket,
  type KeyRecord,
  type Lease,
  type CredentialUpdate,
  type ProbeRecord,
  type ProbeVerdict,
  type QuotaSnapshot,
  type StoredCredential,
  type ReplicaInfo,
  type HistoryRow,
  type Store,
  type UsageBatch,
  type UsageSnapshot,
} from './types.js';

interface Bucket {
  start: number;
  counters: UsageCounters;
}

/** A writer's admissions of one key: every number up to `top` is settled, counted or not. */
interface AdmissionRing {
  top: number;
  /** the numbers counted, at most ADMISSION_MEMORY of the latest, in increasing order */
  counted: Set<number>;
}

interface KeyUsage {
  allTime: UsageCounters;
  windows: Map<LimitWindow, Bucket>;
  /** writer → seq of the last batch applied (one writer per process here, but the same contract) */
  applied: Map<string, number>;
  admissions: Map<string, AdmissionRing>;
  /** hour start → history field (see store/history.ts) → count */
  history: Map<number, Map<string, number>>;
}

export interface MemoryStoreOptions {
  /** how long an hour's history is kept after it ends */
  historyRetentionMs?: number;
}

interface HeldLease {
  lease: Lease;
  /** ms since epoch (wall clock, `Date.now()`) */
  expiresAt: number;
}

/** Expired leases and nonces are checked on read; this sweep only keeps the maps from growing. */
const SWEEP_INTERVAL_MS = 30_000;

/** Single-process store: for one replica, development and tests. */
export class MemoryStore implements Store {
  readonly kind = 'memory' as const;
  private readonly keys = new Map<string, KeyRecord>();
  private readonly keyIdByHash = new Map<string, string>();
  private readonly usage = new Map<string, KeyUsage>();
  private readonly accounts = new Map<string, AccountState>();
  private readonly replicas = new Map<string, ReplicaInfo>();
  private readonly leases = new Map<string, HeldLease>();
  private readonly probes = new Map<string, { record: ProbeRecord; expiresAt: number }>();
  /** accountId → holder → expiresAt */
  private readonly slots = new Map<string, Map<string, number>>();
  private readonly credentials = new Map<string, StoredCredential>();
  /** account id → refresh lock: the fence that holds it */
  private readonly refreshLocks = new Map<string, { fence: number; expiresAt: number }>();
  /** nonce → expiresAt */
  private readonly nonces = new Map<string, number>();
  /** Shared by all sessions: epochs only ever grow, which is all fencing needs. */
  private lastEpoch = 0;
  private lastSweep = Date.now();
  private readonly historyRetentionMs: number;

  constructor(options: MemoryStoreOptions = {}) {
    this.historyRetentionMs = options.historyRetentionMs ?? DEFAULTS.historyRetentionDays * 24 * HOUR_MS;
  }

  async putKey(record: KeyRecord): Promise<void> {
    const previous = this.keys.get(record.id);
    if (previous) this.keyIdByHash.delete(previous.sha256);
    this.keys.set(record.id, structuredClone(record));
    this.keyIdByHash.set(record.sha256, record.id);
  }

  async getKeyById(id: string): Promise<KeyRecord | null> {
    const record = this.keys.get(id);
    return record ? structuredClone(record) : null;
  }

  async getKeyByHash(sha256: string): Promise<KeyRecord | null> {
    const id = this.keyIdByHash.get(sha256);
    return id ? this.getKeyById(id) : null;
  }

  async listKeys(): Promise<KeyRecord[]> {
    return [...this.keys.values()].map((k) => structuredClone(k));
  }

  async deleteKey(id: string): Promise<boolean> {
    const record = this.keys.get(id);
    if (!record) return false;
    this.keys.delete(id);
    this.keyIdByHash.delete(record.sha256);
    return true;
  }

  async admitRequest(keyId: string, limits: Limit[], now: number, ticket: AdmissionTicket): Promise<Admission> {
    const usage = this.usageOf(keyId);
    const ring = this.ringOf(usage, ticket.writer);
    if (!settle(ring, ticket.number)) throw new GatewayError('store_unavailable', 'This admission arrived after it was given up.');
    for (const limit of limits) {
      const bucket = this.bucket(usage, limit.limit_window, now);
      const current = counterFor(bucket.counters, limit.limit_type);
      if (limitDenies(limit, current)) {
        return { admitted: false, denial: { limit, current, resetAt: windowBounds(limit.limit_window, now).end } };
      }
    }
    this.countRequest(usage, now, 1);
    ring.counted.add(ticket.number);
    if (ring.counted.size > ADMISSION_MEMORY) ring.counted.delete(ring.counted.values().next().value!);
    return { admitted: true };
  }

  async recordUsage(keyId: string, batch: UsageBatch): Promise<boolean> {
    const usage = this.usageOf(keyId);
    if (batch.seq <= (usage.applied.get(batch.writer) ?? 0)) return false;
    usage.applied.set(batch.writer, batch.seq);
    const { hours, lost } = batchTotals(batch.entries);
    for (const entry of lost) {
      if (takeBack(this.ringOf(usage, batch.writer), entry.lostAdmission)) this.countRequest(usage, entry.at, -1);
    }
    for (const hour of hours) {
      addCounters(usage.allTime, hour.deltas);
      for (const window of LIMIT_WINDOWS) addCounters(this.bucket(usage, window, hour.at).counters, hour.deltas);
      if (hour.history.size > 0) this.addHistory(usage, hour.at, hour.history);
    }
    return true;
  }

  async getUsageHistory(keyId: string, from: number, to: number): Promise<HistoryRow[]> {
    const usage = this.usage.get(keyId);
    if (!usage) return [];
    this.dropExpiredHistory(usage);
    return [...usage.history]
      .filter(([hour]) => hour >= from && hour < to)
      .sort(([a], [b]) => a - b)
      .flatMap(([hour, fields]) => historyRows(hour, fields));
  }

  async getUsage(keyId: string, now: number): Promise<UsageSnapshot> {
    const usage = this.usageOf(keyId);
    const windows = {} as Record<LimitWindow, UsageCounters>;
    for (const window of LIMIT_WINDOWS) windows[window] = { ...this.bucket(usage, window, now).counters };
    return { allTime: { ...usage.allTime }, windows };
  }

  async getAccountStates(accountIds: string[]): Promise<Map<string, AccountState>> {
    const states = new Map<string, AccountState>();
    for (const id of accountIds) {
      const state = this.accounts.get(id);
      if (state) states.set(id, { ...state });
    }
    return states;
  }

  async setAccountCooldown(accountId: string, until: number): Promise<void> {
    this.accounts.set(accountId, { ...this.accounts.get(accountId), cooldownUntil: until });
  }

  async setAccountDisabled(accountId: string, disabled: boolean): Promise<void> {
    this.accounts.set(accountId, { ...this.accounts.get(accountId), disabled });
    if (!disabled) this.probes.delete(accountId);
  }

  async claimAccountProbe(accountId: string, ttlMs: number): Promise<ProbeRecord | null> {
    const now = Date.now();
    const held = this.probes.get(accountId);
    if (held && held.expiresAt > now) return held.record;
    this.probes.set(accountId, { record: 'pending', expiresAt: now + ttlMs });
    return null;
  }

  async setAccountProbeVerdict(accountId: string, verdict: ProbeVerdict, ttlMs: number): Promise<void> {
    this.probes.set(accountId, { record: verdict, expiresAt: Date.now() + ttlMs });
  }

  async acquireAccountSlot(accountId: string, holder: string, max: number, ttlMs: number): Promise<boolean> {
    const now = Date.now();
    const slots = this.liveSlots(accountId, now);
    if (!slots.has(holder) && slots.size >= max) return false;
    slots.set(holder, now + ttlMs);
    return true;
  }

  async renewAccountSlots(accountId: string, holders: string[], ttlMs: number): Promise<void> {
    const now = Date.now();
    const slots = this.liveSlots(accountId, now);
    for (const holder of holders) if (slots.has(holder)) slots.set(holder, now + ttlMs);
  }

  async releaseAccountSlot(accountId: string, holder: string): Promise<void> {
    this.slots.get(accountId)?.delete(holder);
  }

  async setAccountQuota(accountId: string, quota: QuotaSnapshot): Promise<void> {
    this.accounts.set(accountId, { ...this.accounts.get(accountId), quota: structuredClone(quota) });
  }

  async importCredential(record: Omit<StoredCredential, 'generation'>): Promise<StoredCredential | null> {
    const stored = this.credentials.get(record.id);
    const state = this.accounts.get(record.id);
    if (stored && !state?.reauthRequired && stored.lastRefresh >= record.lastRefresh) return null;
    const next = { ...record, generation: (stored?.generation ?? 0) + 1 };
    this.credentials.set(record.id, next);
    if (state) delete state.reauthRequired;
    return { ...next };
  }

  async getCredential(accountId: string): Promise<StoredCredential | null> {
    const stored = this.credentials.get(accountId);
    return stored ? { ...stored } : null;
  }

  async listCredentials(): Promise<StoredCredential[]> {
    return [...this.credentials.values()].map((c) => ({ ...c }));
  }

  async claimCredentialRefresh(accountId: string, fence: number, ttlMs: number): Promise<boolean> {
    const now = Date.now();
    const lock = this.refreshLocks.get(accountId);
    if ((lock && lock.expiresAt > now) || this.credentials.get(accountId)?.generation !== fence) return false;
    this.refreshLocks.set(accountId, { fence, expiresAt: now + ttlMs });
    return true;
  }

  async commitCredentialRefresh(accountId: string, fence: number, update: CredentialUpdate): Promise<StoredCredential | null> {
    const stored = this.credentials.get(accountId);
    if (stored?.generation !== fence) return null;
    const next = { ...stored, ...update, generation: fence + 1 };
    this.credentials.set(accountId, next);
    const state = this.accounts.get(accountId);
    if (state) delete state.reauthRequired;
    this.releaseRefreshLock(accountId, fence);
    return { ...next };
  }

  async markCredentialReauth(accountId: string, fence: number, reason: string): Promise<boolean> {
    if (this.credentials.get(accountId)?.generation !== fence) return false;
    this.accounts.set(accountId, { ...this.accounts.get(accountId), reauthRequired: reason });
    this.releaseRefreshLock(accountId, fence);
    return true;
  }

  async backOffCredentialRefresh(accountId: string, fence: number, ms: number): Promise<void> {
    const lock = this.refreshLocks.get(accountId);
    if (lock?.fence === fence) lock.expiresAt = Date.now() + ms;
  }

  async heartbeat(replica: Omit<ReplicaInfo, 'lastSeen'>, now: number): Promise<void> {
    this.replicas.set(replica.instanceId, { instanceId: replica.instanceId, advertiseUrl: replica.advertiseUrl, lastSeen: now });
  }

  async getReplica(instanceId: string): Promise<ReplicaInfo | null> {
    const replica = this.replicas.get(instanceId);
    return replica ? { ...replica } : null;
  }

  async listReplicas(): Promise<ReplicaInfo[]> {
    return [...this.replicas.values()].map((r) => ({ ...r }));
  }

  async removeReplica(instanceId: string): Promise<void> {
    this.replicas.delete(instanceId);
  }

  async claimLease(sessionKey: string, owner: Omit<Lease, 'epoch'>, leaseMs: number): Promise<{ lease: Lease; claimed: boolean }> {
    const held = this.liveLease(sessionKey);
    if (held) return { lease: { ...held.lease }, claimed: false };
    return { lease: this.grantLease(sessionKey, owner, leaseMs), claimed: true };
  }

  async takeOverLease(sessionKey: string, staleEpoch: number, owner: Omit<Lease, 'epoch'>, leaseMs: number): Promise<Lease | null> {
    const held = this.liveLease(sessionKey);
    if (!held || held.lease.epoch !== staleEpoch) return null;
    return this.grantLease(sessionKey, owner, leaseMs);
  }

  async renewLease(sessionKey: string, instanceId: string, epoch: number, leaseMs: number): Promise<boolean> {
    const held = this.heldBy(sessionKey, instanceId, epoch);
    if (held) held.expiresAt = Date.now() + leaseMs;
    return held !== undefined;
  }

  async releaseLease(sessionKey: string, instanceId: string, epoch: number): Promise<boolean> {
    const held = this.heldBy(sessionKey, instanceId, epoch);
    if (held) this.leases.delete(sessionKey);
    return held !== undefined;
  }

  async getLease(sessionKey: string): Promise<Lease | null> {
    const held = this.liveLease(sessionKey);
    return held ? { ...held.lease } : null;
  }

  async useNonce(nonce: string, ttlMs: number): Promise<boolean> {
    const now = Date.now();
    const expiresAt = this.nonces.get(nonce);
    if (expiresAt !== undefined && expiresAt > now) return false;
    this.sweepExpired(now);
    this.nonces.set(nonce, now + ttlMs);
    return true;
  }

  async ping(): Promise<void> {}

  async close(): Promise<void> {}

  /** An account's slots (holder → expiresAt), the expired ones dropped. */
  private liveSlots(accountId: string, now: number): Map<string, number> {
    let slots = this.slots.get(accountId);
    if (!slots) this.slots.set(accountId, (slots = new Map()));
    for (const [holder, expiresAt] of slots) if (expiresAt <= now) slots.delete(holder);
    return slots;
  }

  private releaseRefreshLock(accountId: string, fence: number): void {
    if (this.refreshLocks.get(accountId)?.fence === fence) this.refreshLocks.delete(accountId);
  }

  private usageOf(keyId: string): KeyUsage {
    let usage = this.usage.get(keyId);
    if (!usage) {
      usage = { allTime: emptyCounters(), windows: new Map(), applied: new Map(), admissions: new Map(), history: new Map() };
      this.usage.set(keyId, usage);
    }
    return usage;
  }

  private ringOf(usage: KeyUsage, writer: string): AdmissionRing {
    let ring = usage.admissions.get(writer);
    if (!ring) {
      ring = { top: 0, counted: new Set() };
      usage.admissions.set(writer, ring);
    }
    return ring;
  }

  /** Only the current bucket of each window is kept; a new bucket starts from zero. */
  private bucket(usage: KeyUsage, window: LimitWindow, now: number): Bucket {
    const { start } = windowBounds(window, now);
    let bucket = usage.windows.get(window);
    if (!bucket || bucket.start !== start) {
      if (bucket && bucket.start > start) return { start, counters: emptyCounters() }; // a past bucket, long gone
      bucket = { start, counters: emptyCounters() };
      usage.windows.set(window, bucket);
    }
    return bucket;
  }

  private liveLease(sessionKey: string): HeldLease | undefined {
    const held = this.leases.get(sessionKey);
    if (held && held.expiresAt <= Date.now()) {
      this.leases.delete(sessionKey);
      return undefined;
    }
    return held;
  }

  private heldBy(sessionKey: string, instanceId: string, epoch: number): HeldLease | undefined {
    const held = this.liveLease(sessionKey);
    return held && held.lease.instanceId === instanceId && held.lease.epoch === epoch ? held : undefined;
  }

  private grantLease(sessionKey: string, owner: Omit<Lease, 'epoch'>, leaseMs: number): Lease {
    const now = Date.now();
    this.sweepExpired(now);
    const lease: Lease = { instanceId: owner.instanceId, accountId: owner.accountId, epoch: ++this.lastEpoch };
    this.leases.set(sessionKey, { lease, expiresAt: now + leaseMs });
    return { ...lease };
  }

  private sweepExpired(now: number): void {
    if (now - this.lastSweep < SWEEP_INTERVAL_MS) return;
    this.lastSweep = now;
    for (const [key, held] of this.leases) if (held.expiresAt <= now) this.leases.delete(key);
    for (const [nonce, expiresAt] of this.nonces) if (expiresAt <= now) this.nonces.delete(nonce);
  }

  private addHistory(usage: KeyUsage, at: number, increments: Iterable<[string, number]>): void {
    this.dropExpiredHistory(usage);
    const hour = hourStart(at);
    if (hour + HOUR_MS + this.historyRetentionMs <= Date.now()) return; // past retention: gone already
    let fields = usage.history.get(hour);
    if (!fields) usage.history.set(hour, (fields = new Map()));
    for (const [field, delta] of increments) fields.set(field, (fields.get(field) ?? 0) + delta);
  }

  /** Like the Redis buckets' expiry: an hour is kept `historyRetentionMs` after it ends. */
  private dropExpiredHistory(usage: KeyUsage): void {
    const now = Date.now();
    for (const hour of usage.history.keys()) if (hour + HOUR_MS + this.historyRetentionMs <= now) usage.history.delete(hour);
  }

  private countRequest(usage: KeyUsage, now: number, delta: 1 | -1): void {
    usage.allTime.requests += delta;
    for (const window of LIMIT_WINDOWS) this.bucket(usage, window, now).counters.requests += delta;
  }
}

/** Settles every admission number up to `n`; false when `n` was settled already (a late arrival). */
function settle(ring: AdmissionRing, n: number): boolean {
  if (n <= ring.top) return false;
  ring.top = n;
  return true;
}

/** True when admission `n` was counted (and is no longer); settles it either way. */
function takeBack(ring: AdmissionRing, n: number): boolean {
  if (settle(ring, n)) return false;
  return ring.counted.delete(n);
}
