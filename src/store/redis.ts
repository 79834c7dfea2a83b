import { Cluster, Redis, type ChainableCommander, type RedisOptions } from 'ioredis';
import { DEFAULTS } from '../config/schema.js';
import { GatewayError } from '../errors.js';
import { LIMIT_WINDOWS, windowBounds, type LimitWindow } from '../usage/windows.js';
import { MICROUSD_PER_USD, emptyCounters, type Limit, type UsageCounters } from '../usage/counters.js';
import { HOUR_MS, historyRows, hourStart } from './history.js';
import { batchTotals } from './usage-batch.js';
import type {
  AccountState,
  Admission,
  CredentialUpdate,
  AdmissionTicket,
  HistoryRow,
  KeyRecord,
  Lease,
  ProbeRecord,
  ProbeVerdict,
  QuotaSnapshot,
  ReplicaInfo,
  Store,
  StoredCredential,
  UsageBatch,
  UsageSnapshot,
} from './types.js';
import { ADMISSION_MEMORY, StoreNotReached } from './types.js';

/**
 * How to reach Redis. `url` (redis:// or rediss://) always gives credentials and TLS; with
 * `sentinels` the master named `sentinelName` (default "mymaster") is found through them, with
 * `cluster` these seed nodes are used instead of the URL's host. `keyPrefix` goes before every key
 * (several deployments or test runs in one Redis); it must not contain `{` or `}`.
 */
export interface RedisStoreOptions {
  sentinels?: { host: string; port: number }[];
  sentinelName?: string;
  cluster?: { host: string; port: number }[];
  keyPrefix?: string;
  /** how long an hour's usage history is kept after it ends (default `DEFAULTS.historyRetentionDays`) */
  historyRetentionMs?: number;
}

type Client = Redis | Cluster;

const READY_TIMEOUT_MS = 5_000;
/** Buckets stay a day past their window's end (late refunds, clock skew), then Redis drops them. */
const BUCKET_GRACE_MS = 24 * 3_600_000;
/** Epoch counters must outlive their leases so a session's epochs keep growing; refreshed on use. */
const EPOCH_TTL_MS = 7 * 24 * 3_600_000;
/**
 * A writer's mark outlives its last write by this much. A batch is only ever re-sent by its own
 * writer until acknowledged, so the mark must outlast the longest store outage a retry spans.
 */
const WRITER_MARK_TTL_MS = 7 * 24 * 3_600_000;
/** A replica silent this long is certainly gone: forgotten even if it never deregistered. */
const REPLICA_FORGET_MS = 24 * 3_600_000;

/*
 * Key layout. A `{…}` hash tag groups the keys one script, MULTI or pipeline touches into one
 * Redis Cluster slot; tags start with a letter so a `}` at the start of an id cannot empty them.
 *   tg:{keys}:key:<id>            KeyRecord JSON
 *   tg:{keys}:hash:<sha256>       → key id
 *   tg:{keys}:ids                 set of key ids
 *   tg:{u:<keyId>}:<window>:<start>  usage hash of one window bucket (expires after the window)
 *   tg:{u:<keyId>}:all            all-time usage hash
 *   tg:{u:<keyId>}:h:<hourStart>  usage history of one UTC hour: field JSON [model, account,
 *                                 counter] → count (see store/history.ts); PEXPIREAT the hour's
 *                                 end + history retention. Per account history is the sum over
 *                                 keys at read time: an account's own bucket would be another slot.
 *   tg:{u:<keyId>}:w:<writer>     seq of the writer's last usage batch applied to this key
 *   tg:{u:<keyId>}:a:<writer>     the writer's highest admission number settled for this key
 *   tg:{u:<keyId>}:a:<writer>:bits  bitmap (ADMISSION_MEMORY bits): which of those are counted
 *                                 (these three PX WRITER_MARK_TTL_MS: per key and live replica process)
 *   tg:{acct}:<accountId>         hash: cooldownUntil, disabled, reauthRequired, quota (QuotaSnapshot JSON); every change published, see below
 *   tg:{acct}probe:<accountId>    last probe: "pending" or its verdict, PX ttl
 *   tg:{slot:<accountId>}         sorted set: concurrency slot holders by expiry (ms, Redis clock)
 *   tg:{acct}cred:<accountId>     hash: record (StoredCredential JSON without generation), generation
 *   tg:{acct}credlock:<accountId> refresh lock: the fence (generation) of its holder, PX ttl
 *   tg:{acct}creds                set of account ids with a stored credential
 *   tg:{replicas}:r:<instanceId>  hash: advertiseUrl, lastSeen
 *   tg:{replicas}:index           sorted set: instanceId by lastSeen
 *   tg:{s:<sessionKey>}:lease     Lease JSON, PX leaseMs
 *   tg:{s:<sessionKey>}:epoch     epoch counter of the session
 *   tg:nonce:<nonce>              "1", PX ttl
 * Pub/sub channel (not a key):
 *   tg:acct-changed               message: the id of an account whose state just changed
 */

/**
 * Account states are read on every pick, so each replica keeps them in memory and Redis pushes
 * every change (PUBLISH in the same MULTI as the write) to every replica's subscriber connection,
 * which drops its copy: a change reaches the others within a round trip. Copies are only trusted
 * while the subscription is live; a replica whose subscriber is (re)connecting reads Redis every
 * time. This bounds what a lost message could cost.
 */
const ACCOUNT_STATE_MAX_AGE_MS = 5_000;

/*
 * A writer's admissions of one key (KEYS top, bits): every number up to `top` is settled; bit
 * n % size is set while admission n is counted. settle() returns false for a number settled
 * already (an admission arriving after it was given up); takeBack() returns true when admission
 * n was counted, and clears it. An admission `size` or more numbers older than `top` is forgotten.
 */
const ADMISSION_RING = `
  local function settle(top, bits, n, size, ttl)
    local last = tonumber(redis.call('GET', top) or '0')
    if n <= last then return false end
    if n - last >= size then
      redis.call('DEL', bits)
    else
      for m = last + 1, n do redis.call('SETBIT', bits, m % size, 0) end
      redis.call('PEXPIRE', bits, ttl)
    end
    redis.call('SET', top, n, 'PX', ttl)
    return true
  end
  local function takeBack(top, bits, n, size, ttl)
    if settle(top, bits, n, size, ttl) then return false end
    if tonumber(redis.call('GET', top)) - n >= size then return false end
    return redis.call('SETBIT', bits, n % size, 0) == 1
  end
`;

const SCRIPTS = {
  /*
   * KEYS: one bucket hash per window, the all-time hash, then the writer's admission top and bits.
   * ARGV: each bucket's PEXPIREAT, admission number, ring size, ring TTL ms, then per limit:
   * bucket index (1-based), counter field, max.
   * Returns {-1} when admitted, {-2} for an admission settled already, else {index of the
   * denying limit, its current value}.
   */
  tgAdmit: `${ADMISSION_RING}
    local buckets = #KEYS - 3
    local n, size, ttl = tonumber(ARGV[buckets + 1]), tonumber(ARGV[buckets + 2]), ARGV[buckets + 3]
    local top, bits = KEYS[#KEYS - 1], KEYS[#KEYS]
    if not settle(top, bits, n, size, ttl) then return {-2} end
    for i = buckets + 4, #ARGV, 3 do
      local field, max = ARGV[i + 1], tonumber(ARGV[i + 2])
      local raw = redis.call('HGET', KEYS[tonumber(ARGV[i])], field) or '0'
      local current = tonumber(raw)
      local denies
      if field == 'requests' then denies = current + 1 > max else denies = current >= max end
      if denies then return {(i - buckets - 4) / 3, raw} end
    end
    for b = 1, buckets do
      redis.call('HINCRBY', KEYS[b], 'requests', 1)
      redis.call('PEXPIREAT', KEYS[b], ARGV[b])
    end
    redis.call('HINCRBY', KEYS[buckets + 1], 'requests', 1)
    redis.call('SETBIT', bits, n % size, 1)
    redis.call('PEXPIRE', bits, ttl)
    return {-1}`,
  /*
   * Applies one writer's usage batch once: skipped when its seq is not above the writer's mark,
   * which is set in the same script, so counters and mark change together (also in the AOF).
   * KEYS: the writer's mark, the all-time hash, the writer's admission top and bits, then every
   * window bucket and history hash the batch touches.
   * ARGV: seq, TTL ms of mark and ring, ring size, count of lost admissions, each bucket's
   * PEXPIREAT, then per lost admission: its number, how many hashes, their KEYS indexes; then
   * (KEYS index, field, delta) triples.
   * Returns 1 when applied, 0 when skipped.
   */
  tgAddUsage: `${ADMISSION_RING}
    if tonumber(ARGV[1]) <= tonumber(redis.call('GET', KEYS[1]) or '0') then return 0 end
    local ttl, size = ARGV[2], tonumber(ARGV[3])
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
    local buckets = #KEYS - 4
    local i = 5 + buckets
    for _ = 1, tonumber(ARGV[4]) do
      local counted = takeBack(KEYS[3], KEYS[4], tonumber(ARGV[i]), size, ttl)
      local hashes = tonumber(ARGV[i + 1])
      if counted then
        for h = i + 2, i + 1 + hashes do redis.call('HINCRBY', KEYS[tonumber(ARGV[h])], 'requests', -1) end
      end
      i = i + 2 + hashes
    end
    for t = i, #ARGV, 3 do
      redis.call('HINCRBY', KEYS[tonumber(ARGV[t])], ARGV[t + 1], ARGV[t + 2])
    end
    -- also for a bucket already past: a past PEXPIREAT deletes what was just created
    for b = 1, buckets do redis.call('PEXPIREAT', KEYS[4 + b], ARGV[4 + b]) end
    return 1`,
  /*
   * Claim (staleEpoch '') or compare-and-set takeover of a lease, with a fresh epoch.
   * KEYS: lease, epoch counter. ARGV: instanceId, accountId, leaseMs, epoch TTL, staleEpoch.
   * Returns {1, lease} when granted, {0, current lease} or {0} otherwise.
   */
  tgGrantLease: `
    local current = redis.call('GET', KEYS[1])
    if ARGV[5] == '' then
      if current then return {0, current} end
    elseif not current or cjson.decode(current).epoch ~= tonumber(ARGV[5]) then
      return {0}
    end
    local epoch = redis.call('INCR', KEYS[2])
    redis.call('PEXPIRE', KEYS[2], ARGV[4])
    local lease = cjson.encode({instanceId = ARGV[1], accountId = ARGV[2], epoch = epoch})
    redis.call('SET', KEYS[1], lease, 'PX', ARGV[3])
    return {1, lease}`,
  /*
   * Renews (leaseMs given) or releases (leaseMs '') a lease still held by instanceId at epoch.
   * KEYS: lease, epoch counter. ARGV: instanceId, epoch, leaseMs, epoch TTL. Returns 1 or 0.
   */
  /*
   * Claims an account probe: the current record, or nil after setting it to 'pending'.
   * KEYS: probe record. ARGV: ttlMs.
   */
  tgClaimProbe: `
    local current = redis.call('GET', KEYS[1])
    if current then return current end
    redis.call('SET', KEYS[1], 'pending', 'PX', ARGV[1])
    return false`,
  /*
   * Concurrency slots of one account (KEYS[1], sorted set holder → expiry). Times come from the
   * Redis clock, so replicas' clock skew cannot cut another's slot short.
   *   tgAcquireSlot ARGV: holder, max, ttlMs → 1 taken (or renewed), 0 all held
   *   tgRenewSlots  ARGV: ttlMs, holder... → extends the holders still present
   */
  tgAcquireSlot: `
    local t = redis.call('TIME')
    local now = t[1] * 1000 + math.floor(t[2] / 1000)
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
    if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return 1`,
  tgRenewSlots: `
    local t = redis.call('TIME')
    local now = t[1] * 1000 + math.floor(t[2] / 1000)
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
    for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i]) end
    if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
    return 1`,
  /*
   * Stores an imported login unless the stored one is newer and fine (see Store.importCredential).
   * KEYS: credential hash, credential id set, account hash. ARGV: record JSON, its lastRefresh, id.
   * Returns the new generation, or 0 when refused.
   */
  tgImportCredential: `
    local generation = tonumber(redis.call('HGET', KEYS[1], 'generation') or '0')
    if generation > 0 and redis.call('HEXISTS', KEYS[3], 'reauthRequired') == 0
      and cjson.decode(redis.call('HGET', KEYS[1], 'record')).lastRefresh >= tonumber(ARGV[2]) then
      return 0
    end
    redis.call('HSET', KEYS[1], 'record', ARGV[1], 'generation', generation + 1)
    redis.call('SADD', KEYS[2], ARGV[3])
    redis.call('HDEL', KEYS[3], 'reauthRequired')
    return generation + 1`,
  /*
   * Takes a refresh lock if the credential is at the fence and nobody holds the lock.
   * KEYS: credential hash, lock. ARGV: fence, ttl ms. Returns 1 when taken.
   */
  tgClaimRefresh: `
    if tonumber(redis.call('HGET', KEYS[1], 'generation') or '0') ~= tonumber(ARGV[1]) then return 0 end
    if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
    return 0`,
  /*
   * Ends a refresh held at a fence, if the credential is still at it: a result (ARGV[2] the new
   * record JSON, ARGV[3] '') becomes the next generation and clears reauthRequired; a permanent
   * failure (ARGV[2] '', ARGV[3] the reason) sets reauthRequired. The lock is released either way.
   * KEYS: credential hash, lock, account hash. Returns 1, or 0 when fenced out.
   */
  tgEndRefresh: `
    local fence = tonumber(ARGV[1])
    if tonumber(redis.call('HGET', KEYS[1], 'generation') or '0') ~= fence then return 0 end
    if ARGV[3] == '' then
      redis.call('HSET', KEYS[1], 'record', ARGV[2], 'generation', fence + 1)
      redis.call('HDEL', KEYS[3], 'reauthRequired')
    else
      redis.call('HSET', KEYS[3], 'reauthRequired', ARGV[3])
    end
    if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
    return 1`,
  /* Keeps a refresh lock held by the fence for ARGV[2] ms more. KEYS: lock. ARGV: fence, ms. */
  tgBackOffRefresh: `
    if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
    return 1`,
  tgHeldLease: `
    local current = redis.call('GET', KEYS[1])
    if not current then return 0 end
    local lease = cjson.decode(current)
    if lease.instanceId ~= ARGV[1] or lease.epoch ~= tonumber(ARGV[2]) then return 0 end
    if ARGV[3] == '' then
      redis.call('DEL', KEYS[1])
    else
      redis.call('PEXPIRE', KEYS[1], ARGV[3])
      redis.call('PEXPIRE', KEYS[2], ARGV[4])
    end
    return 1`,
} as const;

type ScriptName = keyof typeof SCRIPTS;
type ScriptCommand = (numKeys: number, ...keysAndArgs: (string | number)[]) => Promise<unknown>;

/** How long a store call may take before its caller gets a 503 (the README's "within about 1 s"). */
export const COMMAND_DEADLINE_MS = 1_000;

/**
 * `work`, or a rejection once `ms` have passed. A timer is due in the event loop's timers phase,
 * before the poll phase reads the replies that arrived while the loop was stalled (a CPU-starved
 * replica): the deadline is checked again after them, so a reply that is already here is never
 * turned into a timeout. (ioredis's own `commandTimeout` fires first and does exactly that.)
 */
function withDeadline<T>(work: Promise<T>, ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => setImmediate(() => reject(new Error(`Redis did not answer within ${ms} ms`))), ms);
    work.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}

const reconnectDelay = (attempt: number): number => Math.min(100 * attempt, 1_000);

/** The one place a client is built: fail fast on every call, reconnect forever in the background. */
function createClient(url: string, options: RedisStoreOptions): Client {
  const failFast: RedisOptions = {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    // a backstop that frees the commands of a server that stopped answering; callers get their
    // answer (or a 503) within COMMAND_DEADLINE_MS through `run`
    commandTimeout: 10 * COMMAND_DEADLINE_MS,
    connectTimeout: 2_000,
    retryStrategy: reconnectDelay,
    // A command in flight when its connection dropped may have run: sending it again on the new
    // connection could count an admission twice. It fails (503) instead; usage batches are
    // re-sent by the usage recorder, whose numbering makes that safe.
    autoResendUnfulfilledCommands: false,
    // commands of concurrent requests issued in the same tick share one write and round trip
    enableAutoPipelining: true,
  };
  if (options.cluster?.length) {
    const { username, password, protocol } = new URL(url);
    return new Cluster(options.cluster, {
      enableOfflineQueue: false,
      enableAutoPipelining: true,
      clusterRetryStrategy: reconnectDelay,
      redisOptions: {
        ...failFast,
        username: decodeURIComponent(username) || undefined,
        password: decodeURIComponent(password) || undefined,
        tls: protocol === 'rediss:' ? {} : undefined,
      },
    });
  }
  if (options.sentinels?.length) {
    return new Redis(url, { ...failFast, sentinels: options.sentinels, name: options.sentinelName ?? 'mymaster' });
  }
  return new Redis(url, failFast);
}

/** Where we tried to connect, for error messages: never the password. */
function describeTarget(url: string, options: RedisStoreOptions): string {
  if (options.cluster?.length) return `cluster ${options.cluster.map((n) => `${n.host}:${n.port}`).join(',')}`;
  if (options.sentinels?.length) return `sentinel master "${options.sentinelName ?? 'mymaster'}"`;
  const { protocol, host } = new URL(url);
  return `${protocol}//${host}`;
}

function waitReady(client: Client, timeoutMs: number): Promise<void> {
  if (client.status === 'ready') return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      client.off('ready', onReady);
      reject(new Error(`not ready after ${timeoutMs} ms`));
    }, timeoutMs);
    const onReady = (): void => {
      clearTimeout(timer);
      resolve();
    };
    client.once('ready', onReady);
  });
}

/** Runs a MULTI or pipeline; any failed command fails the whole call. */
async function execAll(batch: ChainableCommander): Promise<unknown[]> {
  const results = await batch.exec();
  if (!results) throw new Error('transaction aborted');
  return results.map(([err, value]) => {
    if (err) throw err;
    return value;
  });
}

function parseCounters(hash: Record<string, string>): UsageCounters {
  const counters = emptyCounters();
  for (const field of Object.keys(counters) as (keyof UsageCounters)[]) counters[field] = Number(hash[field] ?? 0);
  return counters;
}

function parseLease(json: string): Lease {
  const { instanceId, accountId, epoch } = JSON.parse(json) as Lease;
  return { instanceId, accountId, epoch: Number(epoch) };
}

/** The shared store of a multi-replica deployment. */
export class RedisStore implements Store {
  readonly kind = 'redis' as const;
  /** this replica's copy of account states (`{}`: none set), trusted only while `subscribed` */
  private readonly accountStates = new Map<string, { state: AccountState; at: number }>();
  /** bumped by every invalidation: a read that started before one must not fill the copy */
  private accountGeneration = 0;
  private subscribed = false;
  private readonly subscriber: Client;
  /** reads under way, by account ids: requests that find the copy missing or old share one */
  private readonly accountReads = new Map<string, Promise<Map<string, AccountState>>>();

  private constructor(
    private readonly client: Client,
    /** keyPrefix + "tg:" */
    private readonly prefix: string,
    private readonly historyRetentionMs: number,
  ) {
    for (const [name, lua] of Object.entries(SCRIPTS)) client.defineCommand(name, { lua });
    this.subscriber = this.subscribeToAccountChanges();
  }

  /** The connection that hears of account changes; see ACCOUNT_STATE_MAX_AGE_MS. */
  private subscribeToAccountChanges(): Client {
    const subscriber = this.client.duplicate();
    const channel = this.accountChannel();
    const forgetAll = () => {
      this.subscribed = false;
      this.accountStates.clear();
      this.accountGeneration += 1;
      this.accountReads.clear(); // a read under way may predate the change
    };
    subscriber.on('error', () => {}); // the command connection reports failures to callers
    subscriber.on('close', forgetAll);
    subscriber.on('ready', () => {
      forgetAll();
      subscriber.subscribe(channel).then(
        () => {
          // what changed before the subscription took effect is not in the copy: it starts empty
          this.accountStates.clear();
          this.accountGeneration += 1;
          this.accountReads.clear(); // a read under way may predate the change
          this.subscribed = true;
        },
        () => {},
      );
    });
    subscriber.on('message', (from: string, accountId: string) => {
      if (from !== channel) return;
      this.accountStates.delete(accountId);
      this.accountGeneration += 1;
      this.accountReads.clear(); // a read under way may predate the change
    });
    return subscriber;
  }

  static async connect(url: string, options: RedisStoreOptions = {}): Promise<RedisStore> {
    const keyPrefix = options.keyPrefix ?? '';
    if (/[{}]/.test(keyPrefix)) throw new Error('RedisStore keyPrefix must not contain "{" or "}" (Redis Cluster hash tags).');
    const client = createClient(url, options);
    let lastError: unknown;
    // Without a listener ioredis prints every connection error; callers see failures as GatewayErrors.
    client.on('error', (err: unknown) => {
      lastError = err;
    });
    try {
      await waitReady(client, READY_TIMEOUT_MS);
    } catch (timeout) {
      client.disconnect();
      const reason = lastError instanceof Error ? `: ${lastError.message.replace(/\.+$/, '')}` : '';
      throw new GatewayError(
        'store_unavailable',
        `The shared store (Redis, ${describeTarget(url, options)}) was not reachable within ${READY_TIMEOUT_MS / 1000} s${reason}.`,
        { cause: lastError ?? timeout },
      );
    }
    return new RedisStore(client, `${keyPrefix}tg:`, options.historyRetentionMs ?? DEFAULTS.historyRetentionDays * 24 * HOUR_MS);
  }

  // --- keys -------------------------------------------------------------------

  async putKey(record: KeyRecord): Promise<void> {
    await this.run(async () => {
      const previous = await this.client.get(this.keyRecordKey(record.id));
      const previousHash = previous ? (JSON.parse(previous) as KeyRecord).sha256 : null;
      const tx = this.client
        .multi()
        .set(this.keyRecordKey(record.id), JSON.stringify(record))
        .set(this.keyHashKey(record.sha256), record.id)
        .sadd(this.keyIdsKey(), record.id);
      if (previousHash && previousHash !== record.sha256) tx.del(this.keyHashKey(previousHash));
      await execAll(tx);
    });
  }

  async getKeyById(id: string): Promise<KeyRecord | null> {
    return this.run(async () => {
      const json = await this.client.get(this.keyRecordKey(id));
      return json ? (JSON.parse(json) as KeyRecord) : null;
    });
  }

  async getKeyByHash(sha256: string): Promise<KeyRecord | null> {
    return this.run(async () => {
      const id = await this.client.get(this.keyHashKey(sha256));
      const record = id ? await this.getKeyById(id) : null;
      // An index entry left behind by a concurrent re-key must not resolve to another secret.
      return record?.sha256 === sha256 ? record : null;
    });
  }

  async listKeys(): Promise<KeyRecord[]> {
    return this.run(async () => {
      const ids = await this.client.smembers(this.keyIdsKey());
      if (ids.length === 0) return [];
      const jsons = await this.client.mget(ids.map((id) => this.keyRecordKey(id)));
      return jsons.filter((json): json is string => json !== null).map((json) => JSON.parse(json) as KeyRecord);
    });
  }

  async deleteKey(id: string): Promise<boolean> {
    return this.run(async () => {
      const json = await this.client.get(this.keyRecordKey(id));
      if (!json) return false;
      const { sha256 } = JSON.parse(json) as KeyRecord;
      const [deleted] = await execAll(
        this.client.multi().del(this.keyRecordKey(id)).del(this.keyHashKey(sha256)).srem(this.keyIdsKey(), id),
      );
      return deleted === 1;
    });
  }

  // --- usage ------------------------------------------------------------------

  async admitRequest(keyId: string, limits: Limit[], now: number, ticket: AdmissionTicket): Promise<Admission> {
    return this.run(async () => {
      // ioredis would refuse too (no offline queue), but only this says for sure nothing was sent
      if (this.client.status !== 'ready') throw new StoreNotReached(`Redis connection ${this.client.status}`);
      const buckets = this.buckets(keyId, now);
      const args: (string | number)[] = buckets.windows.map((b) => b.expireAt);
      args.push(ticket.number, ADMISSION_MEMORY, WRITER_MARK_TTL_MS);
      for (const limit of limits) {
        // a cost limit is checked against the integer micro-USD counter
        const [field, max] = limit.limit_type === 'cost_usd' ? ['cost_microusd', Math.round(limit.max_value * MICROUSD_PER_USD)] : [limit.limit_type, limit.max_value];
        args.push(LIMIT_WINDOWS.indexOf(limit.limit_window) + 1, field, max);
      }
      const keys = [...buckets.windows.map((b) => b.key), buckets.allTime, ...this.admissionKeys(keyId, ticket.writer)];
      const [index, current] = (await this.script('tgAdmit', keys, args)) as [number, string?];
      if (index === -2) throw new GatewayError('store_unavailable', 'This admission arrived after it was given up.');
      if (index < 0) return { admitted: true };
      const limit = limits[index];
      return {
        admitted: false,
        denial: {
          limit,
          current: limit.limit_type === 'cost_usd' ? Number(current) / MICROUSD_PER_USD : Number(current),
          resetAt: windowBounds(limit.limit_window, now).end,
        },
      };
    });
  }

  async recordUsage(keyId: string, batch: UsageBatch): Promise<boolean> {
    return this.run(async () => {
      const keys = [`${this.usageBase(keyId)}:w:${batch.writer}`, `${this.usageBase(keyId)}:all`, ...this.admissionKeys(keyId, batch.writer)];
      const expiries: number[] = [];
      /** KEYS index (1-based) of a bucket's hash, added with its expiry when new */
      const indexOf = (key: string, expireAt: number): number => {
        let index = keys.indexOf(key, 4);
        if (index < 0) {
          index = keys.push(key) - 1;
          expiries.push(expireAt);
        }
        return index + 1;
      };
      /** KEYS indexes of the all-time hash and the window buckets containing `at` */
      const hashesAt = (at: number): number[] => [2, ...this.buckets(keyId, at).windows.map((bucket) => indexOf(bucket.key, bucket.expireAt))];
      /** KEYS index of the history hash of the hour containing `at` */
      const historyIndex = (at: number): number => {
        const hour = hourStart(at);
        return indexOf(`${this.usageBase(keyId)}:h:${hour}`, hour + HOUR_MS + this.historyRetentionMs);
      };
      const totals = batchTotals(batch.entries);
      const lost: number[] = [];
      for (const entry of totals.lost) {
        const hashes = hashesAt(entry.at);
        lost.push(entry.lostAdmission, hashes.length, ...hashes);
      }
      // one HINCRBY per (hash, field) of each hour the batch touches: its entries summed before they are sent
      const triples: (number | string)[] = [];
      for (const hour of totals.hours) {
        for (const hash of hashesAt(hour.at)) {
          for (const [field, delta] of Object.entries(hour.deltas)) triples.push(hash, field, delta);
        }
        if (hour.history.size === 0) continue;
        const hash = historyIndex(hour.at);
        for (const [field, delta] of hour.history) triples.push(hash, field, delta);
      }
      const args = [batch.seq, WRITER_MARK_TTL_MS, ADMISSION_MEMORY, totals.lost.length, ...expiries, ...lost, ...triples];
      return (await this.script('tgAddUsage', keys, args)) === 1;
    });
  }

  async getUsage(keyId: string, now: number): Promise<UsageSnapshot> {
    return this.run(async () => {
      const buckets = this.buckets(keyId, now);
      const batch = this.client.pipeline();
      for (const bucket of buckets.windows) batch.hgetall(bucket.key);
      batch.hgetall(buckets.allTime);
      const hashes = (await execAll(batch)) as Record<string, string>[];
      const windows = {} as Record<LimitWindow, UsageCounters>;
      LIMIT_WINDOWS.forEach((window, i) => (windows[window] = parseCounters(hashes[i])));
      return { allTime: parseCounters(hashes[LIMIT_WINDOWS.length]), windows };
    });
  }

  async getUsageHistory(keyId: string, from: number, to: number): Promise<HistoryRow[]> {
    return this.run(async () => {
      const hours: number[] = [];
      for (let hour = Math.ceil(from / HOUR_MS) * HOUR_MS; hour < to; hour += HOUR_MS) hours.push(hour);
      if (hours.length === 0) return [];
      const batch = this.client.pipeline();
      for (const hour of hours) batch.hgetall(`${this.usageBase(keyId)}:h:${hour}`);
      const hashes = (await execAll(batch)) as Record<string, string>[];
      return hours.flatMap((hour, i) => historyRows(hour, Object.entries(hashes[i])));
    });
  }

  // --- accounts ---------------------------------------------------------------

  async getAccountStates(accountIds: string[]): Promise<Map<string, AccountState>> {
    const states = new Map<string, AccountState>();
    if (accountIds.length === 0) return states;
    const cached = this.cachedAccountStates(accountIds, states);
    if (cached) return states;
    const readKey = accountIds.join('\n');
    let read = this.accountReads.get(readKey);
    if (!read) {
      const started = this.readAccountStates(accountIds).finally(() => {
        if (this.accountReads.get(readKey) === started) this.accountReads.delete(readKey);
      });
      read = started;
      this.accountReads.set(readKey, read);
    }
    // each caller its own copies, as from the cache
    return new Map([...(await read)].map(([id, state]) => [id, { ...state }]));
  }

  private readAccountStates(accountIds: string[]): Promise<Map<string, AccountState>> {
    const states = new Map<string, AccountState>();
    return this.run(async () => {
      const generation = this.accountGeneration;
      const batch = this.client.pipeline();
      for (const id of accountIds) batch.hgetall(this.accountKey(id));
      const hashes = (await execAll(batch)) as Record<string, string>[];
      const keep = this.subscribed && generation === this.accountGeneration;
      const at = Date.now();
      accountIds.forEach((id, i) => {
        const hash = hashes[i];
        const state: AccountState = {};
        if (hash.cooldownUntil !== undefined) state.cooldownUntil = Number(hash.cooldownUntil);
        if (hash.disabled !== undefined) state.disabled = hash.disabled === '1';
        if (hash.reauthRequired !== undefined) state.reauthRequired = hash.reauthRequired;
        if (hash.quota !== undefined) state.quota = JSON.parse(hash.quota) as QuotaSnapshot;
        if (keep) this.accountStates.set(id, { state, at });
        if (Object.keys(hash).length > 0) states.set(id, state);
      });
      return states;
    });
  }

  /** Fills `into` from this replica's copy; false when any of them is missing or too old. */
  private cachedAccountStates(accountIds: string[], into: Map<string, AccountState>): boolean {
    if (!this.subscribed) return false;
    const oldest = Date.now() - ACCOUNT_STATE_MAX_AGE_MS;
    for (const id of accountIds) {
      const entry = this.accountStates.get(id);
      if (!entry || entry.at < oldest) {
        into.clear();
        return false;
      }
      if (Object.keys(entry.state).length > 0) into.set(id, { ...entry.state });
    }
    return true;
  }

  async setAccountCooldown(accountId: string, until: number): Promise<void> {
    await this.changeAccount(accountId, this.client.multi().hset(this.accountKey(accountId), 'cooldownUntil', until));
  }

  async setAccountDisabled(accountId: string, disabled: boolean): Promise<void> {
    const batch = this.client.multi().hset(this.accountKey(accountId), 'disabled', disabled ? '1' : '0');
    await this.changeAccount(accountId, disabled ? batch : batch.del(this.probeKey(accountId)));
  }

  /** Applies an account change and tells every replica (this one at once, the others by PUBLISH). */
  private async changeAccount(accountId: string, change: ChainableCommander): Promise<void> {
    this.accountStates.delete(accountId);
    this.accountGeneration += 1;
    this.accountReads.clear(); // a read under way may predate the change
    try {
      await this.run(() => execAll(change.publish(this.accountChannel(), accountId)));
    } finally {
      // a read that raced the write may have filled the copy with the old state
      this.accountStates.delete(accountId);
      this.accountGeneration += 1;
      this.accountReads.clear(); // a read under way may predate the change
    }
  }

  async claimAccountProbe(accountId: string, ttlMs: number): Promise<ProbeRecord | null> {
    return this.run(async () => ((await this.script('tgClaimProbe', [this.probeKey(accountId)], [ttlMs])) as ProbeRecord | null) ?? null);
  }

  async setAccountProbeVerdict(accountId: string, verdict: ProbeVerdict, ttlMs: number): Promise<void> {
    await this.run(() => this.client.set(this.probeKey(accountId), verdict, 'PX', ttlMs));
  }

  // --- concurrency slots ------------------------------------------------------

  async acquireAccountSlot(accountId: string, holder: string, max: number, ttlMs: number): Promise<boolean> {
    return this.run(async () => (await this.script('tgAcquireSlot', [this.slotKey(accountId)], [holder, max, ttlMs])) === 1);
  }

  async renewAccountSlots(accountId: string, holders: string[], ttlMs: number): Promise<void> {
    if (holders.length === 0) return;
    await this.run(() => this.script('tgRenewSlots', [this.slotKey(accountId)], [ttlMs, ...holders]));
  }

  async releaseAccountSlot(accountId: string, holder: string): Promise<void> {
    await this.run(() => this.client.zrem(this.slotKey(accountId), holder));
  }

  async setAccountQuota(accountId: string, quota: QuotaSnapshot): Promise<void> {
    await this.changeAccount(accountId, this.client.multi().hset(this.accountKey(accountId), 'quota', JSON.stringify(quota)));
  }

  // --- ChatGPT logins ---------------------------------------------------------

  async importCredential(record: Omit<StoredCredential, 'generation'>): Promise<StoredCredential | null> {
    return this.run(async () => {
      const keys = [this.credentialKey(record.id), this.credentialIdsKey(), this.accountKey(record.id)];
      const generation = Number(await this.script('tgImportCredential', keys, [JSON.stringify(record), record.lastRefresh, record.id]));
      // the script may have cleared the account's reauth mark: every replica's copy of its state goes
      if (generation > 0) await this.changeAccount(record.id, this.client.multi());
      return generation > 0 ? { ...record, generation } : null;
    });
  }

  async getCredential(accountId: string): Promise<StoredCredential | null> {
    return this.run(async () => credentialFrom(await this.client.hgetall(this.credentialKey(accountId))));
  }

  async listCredentials(): Promise<StoredCredential[]> {
    return this.run(async () => {
      const ids = await this.client.smembers(this.credentialIdsKey());
      if (ids.length === 0) return [];
      const batch = this.client.pipeline();
      for (const id of ids) batch.hgetall(this.credentialKey(id));
      const hashes = (await execAll(batch)) as Record<string, string>[];
      return hashes.map(credentialFrom).filter((c): c is StoredCredential => c !== null);
    });
  }

  async claimCredentialRefresh(accountId: string, fence: number, ttlMs: number): Promise<boolean> {
    return this.run(async () => (await this.script('tgClaimRefresh', [this.credentialKey(accountId), this.refreshLockKey(accountId)], [fence, ttlMs])) === 1);
  }

  async commitCredentialRefresh(accountId: string, fence: number, update: CredentialUpdate): Promise<StoredCredential | null> {
    return this.run(async () => {
      const stored = await this.getCredential(accountId);
      if (stored?.generation !== fence) return null;
      const { generation: _generation, ...record } = { ...stored, ...update };
      return (await this.endRefresh(accountId, fence, JSON.stringify(record), '')) ? { ...record, generation: fence + 1 } : null;
    });
  }

  async markCredentialReauth(accountId: string, fence: number, reason: string): Promise<boolean> {
    return this.run(() => this.endRefresh(accountId, fence, '', reason));
  }

  async backOffCredentialRefresh(accountId: string, fence: number, ms: number): Promise<void> {
    await this.run(() => this.script('tgBackOffRefresh', [this.refreshLockKey(accountId)], [fence, ms]));
  }

  // --- replicas ---------------------------------------------------------------

  async heartbeat(replica: Omit<ReplicaInfo, 'lastSeen'>, now: number): Promise<void> {
    await this.run(() =>
      execAll(
        this.client
          .multi()
          .hset(this.replicaKey(replica.instanceId), { advertiseUrl: replica.advertiseUrl, lastSeen: now })
          .pexpire(this.replicaKey(replica.instanceId), REPLICA_FORGET_MS)
          .zadd(this.replicaIndexKey(), now, replica.instanceId)
          .zremrangebyscore(this.replicaIndexKey(), '-inf', `(${now - REPLICA_FORGET_MS}`),
      ),
    );
  }

  async getReplica(instanceId: string): Promise<ReplicaInfo | null> {
    return this.run(async () => replicaFrom(instanceId, await this.client.hgetall(this.replicaKey(instanceId))));
  }

  async listReplicas(): Promise<ReplicaInfo[]> {
    return this.run(async () => {
      const ids = await this.client.zrange(this.replicaIndexKey(), 0, -1);
      if (ids.length === 0) return [];
      const batch = this.client.pipeline();
      for (const id of ids) batch.hgetall(this.replicaKey(id));
      const hashes = (await execAll(batch)) as Record<string, string>[];
      return ids.map((id, i) => replicaFrom(id, hashes[i])).filter((r): r is ReplicaInfo => r !== null);
    });
  }

  async removeReplica(instanceId: string): Promise<void> {
    await this.run(() =>
      execAll(this.client.multi().del(this.replicaKey(instanceId)).zrem(this.replicaIndexKey(), instanceId)),
    );
  }

  // --- leases -----------------------------------------------------------------

  async claimLease(sessionKey: string, owner: Omit<Lease, 'epoch'>, leaseMs: number): Promise<{ lease: Lease; claimed: boolean }> {
    return this.run(async () => {
      const [granted, json] = await this.grantLease(sessionKey, owner, leaseMs, '');
      return { lease: parseLease(json!), claimed: granted === 1 };
    });
  }

  async takeOverLease(sessionKey: string, staleEpoch: number, owner: Omit<Lease, 'epoch'>, leaseMs: number): Promise<Lease | null> {
    return this.run(async () => {
      const [granted, json] = await this.grantLease(sessionKey, owner, leaseMs, staleEpoch);
      return granted === 1 ? parseLease(json!) : null;
    });
  }

  async renewLease(sessionKey: string, instanceId: string, epoch: number, leaseMs: number): Promise<boolean> {
    return this.run(async () => (await this.script('tgHeldLease', this.leaseKeys(sessionKey), [instanceId, epoch, leaseMs, EPOCH_TTL_MS])) === 1);
  }

  async releaseLease(sessionKey: string, instanceId: string, epoch: number): Promise<boolean> {
    return this.run(async () => (await this.script('tgHeldLease', this.leaseKeys(sessionKey), [instanceId, epoch, '', EPOCH_TTL_MS])) === 1);
  }

  async getLease(sessionKey: string): Promise<Lease | null> {
    return this.run(async () => {
      const json = await this.client.get(this.leaseKeys(sessionKey)[0]);
      return json ? parseLease(json) : null;
    });
  }

  async useNonce(nonce: string, ttlMs: number): Promise<boolean> {
    return this.run(async () => (await this.client.set(`${this.prefix}nonce:${nonce}`, '1', 'PX', ttlMs, 'NX')) === 'OK');
  }

  // --- lifecycle --------------------------------------------------------------

  async ping(): Promise<void> {
    await this.run(() => this.client.ping());
  }

  async close(): Promise<void> {
    this.subscriber.disconnect();
    try {
      await this.client.quit();
    } catch {
      // Redis is down: nothing to say goodbye to.
    } finally {
      this.client.disconnect(); // also stops reconnect attempts
    }
  }

  // --- helpers ----------------------------------------------------------------

  /** Every failure of Redis reaches callers as one error they can map to 503. */
  private async run<T>(operation: () => Promise<T>): Promise<T> {
    try {
      return await withDeadline(operation(), COMMAND_DEADLINE_MS);
    } catch (cause) {
      if (cause instanceof GatewayError) throw cause;
      throw new GatewayError('store_unavailable', 'The shared store (Redis) is unreachable.', { cause });
    }
  }

  private script(name: ScriptName, keys: string[], args: (string | number)[]): Promise<unknown> {
    const command = (this.client as unknown as Record<ScriptName, ScriptCommand>)[name].bind(this.client);
    return command(keys.length, ...keys, ...args);
  }

  private async grantLease(
    sessionKey: string,
    owner: Omit<Lease, 'epoch'>,
    leaseMs: number,
    staleEpoch: number | '',
  ): Promise<[number, string?]> {
    const args = [owner.instanceId, owner.accountId, leaseMs, EPOCH_TTL_MS, staleEpoch];
    return (await this.script('tgGrantLease', this.leaseKeys(sessionKey), args)) as [number, string?];
  }

  private async endRefresh(accountId: string, fence: number, record: string, reason: string): Promise<boolean> {
    const keys = [this.credentialKey(accountId), this.refreshLockKey(accountId), this.accountKey(accountId)];
    const ended = (await this.script('tgEndRefresh', keys, [fence, record, reason])) === 1;
    // the account's reauth mark may have changed: every replica's copy of its state goes
    if (ended) await this.changeAccount(accountId, this.client.multi());
    return ended;
  }

  /** [top, bits] of a writer's admissions of one key (see ADMISSION_RING). */
  private admissionKeys(keyId: string, writer: string): [string, string] {
    const base = `${this.usageBase(keyId)}:a:${writer}`;
    return [base, `${base}:bits`];
  }

  /** Every usage key of one API key shares this hash tag: one slot for its scripts. */
  private usageBase(keyId: string): string {
    return `${this.prefix}{u:${keyId}}`;
  }

  /** The bucket hash of every window containing `now`, with its expiry, and the all-time hash. */
  private buckets(keyId: string, now: number): { windows: { key: string; expireAt: number }[]; allTime: string } {
    const base = this.usageBase(keyId);
    const windows = LIMIT_WINDOWS.map((window) => {
      const { start, end } = windowBounds(window, now);
      return { key: `${base}:${window}:${start}`, expireAt: end + BUCKET_GRACE_MS };
    });
    return { windows, allTime: `${base}:all` };
  }

  private keyRecordKey(id: string): string {
    return `${this.prefix}{keys}:key:${id}`;
  }

  private keyHashKey(sha256: string): string {
    return `${this.prefix}{keys}:hash:${sha256}`;
  }

  private keyIdsKey(): string {
    return `${this.prefix}{keys}:ids`;
  }

  private slotKey(accountId: string): string {
    return `${this.prefix}{slot:${accountId}}`;
  }

  private accountChannel(): string {
    return `${this.prefix}acct-changed`;
  }

  private accountKey(accountId: string): string {
    return `${this.prefix}{acct}:${accountId}`;
  }

  /** Beside the account's hash in the `{acct}` slot, so enabling can forget it in the same MULTI. */
  private probeKey(accountId: string): string {
    return `${this.prefix}{acct}probe:${accountId}`;
  }

  /** Credential, lock and id set beside the account's hash in the `{acct}` slot: one slot per script. */
  private credentialKey(accountId: string): string {
    return `${this.prefix}{acct}cred:${accountId}`;
  }

  private refreshLockKey(accountId: string): string {
    return `${this.prefix}{acct}credlock:${accountId}`;
  }

  private credentialIdsKey(): string {
    return `${this.prefix}{acct}creds`;
  }

  private replicaKey(instanceId: string): string {
    return `${this.prefix}{replicas}:r:${instanceId}`;
  }

  private replicaIndexKey(): string {
    return `${this.prefix}{replicas}:index`;
  }

  /** [lease, epoch counter]: one slot, so the lease scripts may touch both. */
  private leaseKeys(sessionKey: string): [string, string] {
    const base = `${this.prefix}{s:${sessionKey}}`;
    return [`${base}:lease`, `${base}:epoch`];
  }
}

function credentialFrom(hash: Record<string, string>): StoredCredential | null {
  if (hash.record === undefined) return null;
  return { ...(JSON.parse(hash.record) as Omit<StoredCredential, 'generation'>), generation: Number(hash.generation) };
}

function replicaFrom(instanceId: string, hash: Record<string, string>): ReplicaInfo | null {
  if (hash.advertiseUrl === undefined) return null;
  return { instanceId, advertiseUrl: hash.advertiseUrl, lastSeen: Number(hash.lastSeen) };
}
