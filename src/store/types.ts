import type { Limit, UsageCounters } from '../usage/counters.js';
import type { LimitWindow } from '../usage/windows.js';

/** A proxy API key as stored: the secret itself is never kept, only its SHA-256. */
export interface KeyRecord {
  id: string;
  name: string;
  sha256: string;
  allowed_models: string[] | null;
  expires_at: string | null;
  limits: Limit[];
  disabled: boolean;
  /** the upstream accounts this key may use (ids), or a named `pool` of the config; absent = any */
  accounts?: string[] | null;
  pool?: string | null;
  /** where this key's limit crossings are POSTed, instead of the config's `webhook.url` */
  webhook_url?: string | null;
  created_at: string;
  /** `config` keys come from the config file and are re-seeded at every start. */
  origin: 'config' | 'admin';
}

/**
 * The cause of a store failure known to have changed nothing: the call was never sent (no
 * connection). Any other failure may have been applied.
 */
export class StoreNotReached extends Error {
  override name = 'StoreNotReached';
}

/** One admission of one writer (one replica process), numbered per key by that writer from 1 up. */
export interface AdmissionTicket {
  writer: string;
  number: number;
}

/**
 * How many of a writer's latest admissions per key the store remembers as counted or not, so an
 * admission whose reply was lost can be taken back exactly (see `UsageEntry.lostAdmission`).
 */
export const ADMISSION_MEMORY = 4096;

/**
 * One usage record, at the time the request happened (picks the window buckets): counter deltas,
 * or the taking back of an admission of the batch's writer whose reply was lost — one request
 * less if, and only if, that admission was counted. Its number is settled either way: the
 * admission, should it still arrive, is refused. An admission more than `ADMISSION_MEMORY`
 * admissions of that writer and key old stays counted.
 */
export type UsageEntry = { at: number; deltas: Partial<UsageCounters>; history?: HistoryTag } | { at: number; lostAdmission: number };

/** How a request that got no usage failed, as usage history counts it. */
export const ERROR_CLASSES = ['rate_limited', 'client_error', 'server_error'] as const;
export type ErrorClass = (typeof ERROR_CLASSES)[number];

/**
 * What usage history needs of one record: the model and upstream account that served it ('' when
 * none was chosen), and for a failed request its class. A tagged entry is one request in history.
 */
export interface HistoryTag {
  model: string;
  account: string;
  error?: ErrorClass;
}

/** One hour of one key's history for one (model, account). */
export interface HistoryRow {
  /** ms since epoch: the hour's start (UTC) */
  hour: number;
  model: string;
  account: string;
  counters: UsageCounters;
  errors: Record<ErrorClass, number>;
}

/**
 * Usage records of one key from one writer (one replica process), numbered by that writer. The
 * store applies a batch at most once: it remembers per (key, writer) the last `seq` applied and
 * skips a batch whose `seq` is not above it, so a write whose reply was lost can be sent again.
 */
export interface UsageBatch {
  writer: string;
  /** strictly increasing per writer and key */
  seq: number;
  entries: UsageEntry[];
}

export interface LimitDenial {
  limit: Limit;
  current: number;
  /** ms since epoch when the window's bucket ends */
  resetAt: number;
}

export type Admission = { admitted: true } | { admitted: false; denial: LimitDenial };

export interface UsageSnapshot {
  allTime: UsageCounters;
  /** counters of the bucket containing `now`, per window */
  windows: Record<LimitWindow, UsageCounters>;
}

export interface AccountState {
  /** ms since epoch; absent or past = not cooling down */
  cooldownUntil?: number;
  disabled?: boolean;
  /** why the account's OAuth login can no longer be refreshed (e.g. `refresh_token_reused`); cleared by a new import */
  reauthRequired?: string;
  /** the upstream's last report of the account's rate-limit windows */
  quota?: QuotaSnapshot;
}

/** One rate-limit window of a ChatGPT account as its backend reports it. */
export interface QuotaWindow {
  usedPercent: number;
  windowMinutes: number | null;
  /** ms since epoch */
  resetsAt: number | null;
}

export interface QuotaSnapshot {
  primary?: QuotaWindow;
  secondary?: QuotaWindow;
  /** ms since epoch */
  observedAt: number;
}

/**
 * A ChatGPT account's OAuth login as stored: its tokens sealed by the gateway (the store never
 * sees them in clear), the facts read from them in clear. `generation` grows with every write and
 * is the fencing token of refreshes.
 */
export interface StoredCredential {
  /** the gateway's account id */
  id: string;
  label: string | null;
  sealed: string;
  generation: number;
  chatgptAccountId: string;
  planType: string | null;
  email: string | null;
  /** the access token's expiry, ms since epoch */
  expiresAt: number;
  /** ms since epoch */
  lastRefresh: number;
  /** `config` logins come from an `authFile`; `admin` ones from `POST /admin/accounts` */
  origin: 'config' | 'admin';
}

/** What a refresh changes in a stored credential. */
export type CredentialUpdate = Pick<StoredCredential, 'sealed' | 'chatgptAccountId' | 'planType' | 'email' | 'expiresAt' | 'lastRefresh'>;

/** What a probe of an upstream account alone (no client input) found. */
export type ProbeVerdict = 'ok' | 'refused' | 'inconclusive';
/** A probe record: `pending` while one replica runs the probe, then its verdict. */
export type ProbeRecord = ProbeVerdict | 'pending';

export interface ReplicaInfo {
  instanceId: string;
  /** the internal URL other replicas forward to */
  advertiseUrl: string;
  /** ms since epoch of the last heartbeat */
  lastSeen: number;
}

/** Ownership of one bridge session. `epoch` grows with every new owner and fences old ones. */
export interface Lease {
  instanceId: string;
  accountId: string;
  epoch: number;
}

/**
 * Everything the replicas share. One interface, two implementations (memory, Redis);
 * nothing outside `src/store` knows which one runs.
 */
export interface Store {
  readonly kind: 'memory' | 'redis';

  putKey(record: KeyRecord): Promise<void>;
  getKeyById(id: string): Promise<KeyRecord | null>;
  getKeyByHash(sha256: string): Promise<KeyRecord | null>;
  listKeys(): Promise<KeyRecord[]>;
  deleteKey(id: string): Promise<boolean>;

  /**
   * Atomically: if every limit has room, count one request in every window and admit;
   * otherwise count nothing and return the first limit that denies.
   * Request limits deny when the count would exceed max; token limits deny once the
   * window's total has reached max. A ticket whose number is not above the last one of its
   * writer for this key is refused with `store_unavailable` (its caller gave it up already).
   * A failure caused by `StoreNotReached` counted nothing; after any other the admission may
   * have been counted (take it back with a `lostAdmission` entry).
   */
  admitRequest(keyId: string, limits: Limit[], now: number, ticket: AdmissionTicket): Promise<Admission>;
  /**
   * Adds the batch's deltas to every window bucket of each entry and to all time, atomically and
   * at most once per (key, writer, seq). True when applied, false when skipped as already seen.
   * A request counted by `admitRequest` that never reached an upstream is taken back this way
   * too: an entry of `requests: -1` at its admission time. An entry with a `history` tag also
   * counts one request, its token deltas and its error class in the hour's history bucket.
   */
  recordUsage(keyId: string, batch: UsageBatch): Promise<boolean>;
  getUsage(keyId: string, now: number): Promise<UsageSnapshot>;
  /**
   * The key's hourly history of hours starting in [from, to): written by `recordUsage` from
   * tagged entries (same call, same at-most-once rule), kept for the store's history retention.
   */
  getUsageHistory(keyId: string, from: number, to: number): Promise<HistoryRow[]>;

  getAccountStates(accountIds: string[]): Promise<Map<string, AccountState>>;
  setAccountCooldown(accountId: string, until: number): Promise<void>;
  /** Enabling an account also forgets its last probe verdict: the operator's word is newer. */
  setAccountDisabled(accountId: string, disabled: boolean): Promise<void>;
  /**
   * Claims the next probe of an account, atomically: null when the caller won (the record is now
   * `pending` for `ttlMs`) and must probe; otherwise the record someone else left, untouched.
   */
  claimAccountProbe(accountId: string, ttlMs: number): Promise<ProbeRecord | null>;
  /** Records a probe's verdict for `ttlMs`, for other requests and replicas to reuse. */
  setAccountProbeVerdict(accountId: string, verdict: ProbeVerdict, ttlMs: number): Promise<void>;
  /** Replaces the account's last quota report. */
  setAccountQuota(accountId: string, quota: QuotaSnapshot): Promise<void>;

  /**
   * Stores an imported login (next generation) unless the stored one is newer: imported when
   * there is none, when it needs re-authentication, or when `lastRefresh` is later than the
   * stored one's (a refreshed login is never replaced by the older file it came from). Clears
   * `reauthRequired`. The stored record, or null when refused.
   */
  importCredential(record: Omit<StoredCredential, 'generation'>): Promise<StoredCredential | null>;
  getCredential(accountId: string): Promise<StoredCredential | null>;
  listCredentials(): Promise<StoredCredential[]>;
  /**
   * Takes the account's refresh lock for `ttlMs` with the credential's generation `fence` as
   * fencing token; false when the lock is held or the credential is no longer at `fence`.
   */
  claimCredentialRefresh(accountId: string, fence: number, ttlMs: number): Promise<boolean>;
  /**
   * Stores a refresh's result if the credential is still at generation `fence` (then the next
   * generation, `reauthRequired` cleared, lock released); null when fenced out.
   */
  commitCredentialRefresh(accountId: string, fence: number, update: CredentialUpdate): Promise<StoredCredential | null>;
  /** Marks the account `reauthRequired` with `reason` if its login is still at generation `fence` (lock released). */
  markCredentialReauth(accountId: string, fence: number, reason: string): Promise<boolean>;
  /** A transient refresh failure: keeps the lock held by `fence` for `ms` more, so nobody retries before. */
  backOffCredentialRefresh(accountId: string, fence: number, ms: number): Promise<void>;

  /**
   * Takes one of an account's `max` concurrency slots for `holder` (unique per request) for
   * `ttlMs`, atomically and cluster-wide; false when all are held. A holder that has one keeps
   * it (renewed). Slots expire unless renewed, so a dead replica's slots free themselves.
   */
  acquireAccountSlot(accountId: string, holder: string, max: number, ttlMs: number): Promise<boolean>;
  /** Extends the slots these holders still have for another `ttlMs`; an expired one is not revived. */
  renewAccountSlots(accountId: string, holders: string[], ttlMs: number): Promise<void>;
  releaseAccountSlot(accountId: string, holder: string): Promise<void>;

  /** Heartbeat: records this replica as alive now. */
  heartbeat(replica: Omit<ReplicaInfo, 'lastSeen'>, now: number): Promise<void>;
  getReplica(instanceId: string): Promise<ReplicaInfo | null>;
  listReplicas(): Promise<ReplicaInfo[]>;
  removeReplica(instanceId: string): Promise<void>;

  /**
   * Claims `sessionKey` for `owner` if nobody holds it (atomic, with a fresh epoch), else
   * returns the current lease untouched. `claimed` says which happened.
   */
  claimLease(sessionKey: string, owner: Omit<Lease, 'epoch'>, leaseMs: number): Promise<{ lease: Lease; claimed: boolean }>;
  /** Replaces the lease only if it is still at `staleEpoch` (compare-and-set); a new epoch. */
  takeOverLease(sessionKey: string, staleEpoch: number, owner: Omit<Lease, 'epoch'>, leaseMs: number): Promise<Lease | null>;
  /** Extends the lease if `instanceId` still holds it at `epoch`. */
  renewLease(sessionKey: string, instanceId: string, epoch: number, leaseMs: number): Promise<boolean>;
  /** Deletes the lease if `instanceId` still holds it at `epoch`. */
  releaseLease(sessionKey: string, instanceId: string, epoch: number): Promise<boolean>;
  getLease(sessionKey: string): Promise<Lease | null>;

  /** True the first time a nonce is seen; it is remembered for `ttlMs`. */
  useNonce(nonce: string, ttlMs: number): Promise<boolean>;

  /** Resolves when the store answers; rejects otherwise. */
  ping(): Promise<void>;
  close(): Promise<void>;
}
