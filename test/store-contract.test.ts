import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { GatewayError } from '../src/errors.js';
import { MemoryStore } from '../src/store/memory.js';
import { RedisStore } from '../src/store/redis.js';
import type { KeyRecord, Store, UsageBatch, UsageEntry } from '../src/store/types.js';
import { usageDeltas, type Limit, type LimitType } from '../src/usage/counters.js';
import type { TokenUsage } from '../src/usage/tokens.js';
import { LIMIT_WINDOWS, windowBounds, type LimitWindow } from '../src/usage/windows.js';
import { AOF_ALWAYS, startRedis, startSentinel, type TestRedis, type TestSentinel } from './support/redis.js';

let redis: TestRedis;
let cluster: TestRedis;
let sentinel: TestSentinel;
let prefixes = 0;
/** Every Redis-backed store gets its own key prefix: tests never see each other's data. */
const freshPrefix = (): string => `t${process.pid}-${++prefixes}:`;

beforeAll(async () => {
  [redis, cluster] = await Promise.all([startRedis(), startRedis({ cluster: true })]);
  sentinel = await startSentinel(redis);
});

afterAll(async () => {
  await sentinel?.stop();
  await Promise.all([redis?.stop(), cluster?.stop()]);
});

function keyRecord(id: string, overrides: Partial<KeyRecord> = {}): KeyRecord {
  return {
    id,
    name: `key ${id}`,
    sha256: `sha-${id}`,
    allowed_models: null,
    expires_at: null,
    limits: [],
    disabled: false,
    created_at: '2026-11-23T00:00:00.000Z',
    origin: 'admin',
    ...overrides,
  };
}

const limit = (limit_type: LimitType, limit_window: LimitWindow, max_value: number): Limit => ({ limit_type, limit_window, max_value });

const tokens = (input: number, output: number, cached = 0): TokenUsage => ({
  input_tokens: input,
  output_tokens: output,
  cached_input_tokens: cached,
  total_tokens: input + output,
});

let admissions = 0;
/** An admission from the test's writer, numbered in order. */
const admit = (store: Store, keyId: string, limits: Limit[], at: number) =>
  store.admitRequest(keyId, limits, at, { writer: 'test-writer', number: ++admissions });

let seq = 0;
/** One record in a batch of its own from the test's writer, numbered in order. */
const recordUsage = (store: Store, keyId: string, usage: TokenUsage, at: number): Promise<boolean> =>
  store.recordUsage(keyId, { writer: 'test-writer', seq: ++seq, entries: [{ at, deltas: usageDeltas(usage) }] });

const batch = (writer: string, seq: number, ...entries: [at: number, usage: TokenUsage][]): UsageBatch => ({
  writer,
  seq,
  entries: entries.map(([at, usage]) => ({ at, deltas: usageDeltas(usage) })),
});

const owner = (instanceId: string, accountId = 'acct-1') => ({ instanceId, accountId });

const stores: [string, () => Promise<Store>][] = [
  ['memory', async () => new MemoryStore()],
  ['redis', () => RedisStore.connect(redis.url, { keyPrefix: freshPrefix() })],
  // Redis Cluster refuses a multi-key command whose keys are in different slots: this proves the hash tags
  ['redis cluster', () => RedisStore.connect(cluster.url, { keyPrefix: freshPrefix(), cluster: [{ host: '127.0.0.1', port: cluster.port }] })],
  // the master is found through the sentinel: the URL's own host is not used
  ['redis sentinel', () => RedisStore.connect('redis://sentinel-decides', { keyPrefix: freshPrefix(), sentinels: [{ host: '127.0.0.1', port: sentinel.port }], sentinelName: 'mymaster' })],
];

describe.each(stores)('%s store contract', (kind, create) => {
  let store: Store;
  // Real time, not a fixed date: Redis drops buckets a day after their window ended.
  let now: number;

  beforeEach(async () => {
    store = await create();
    now = Date.now();
  });

  afterEach(async () => {
    await store.close();
  });

  it('reports its kind and answers ping', async () => {
    expect(store.kind).toBe(kind.split(' ')[0]);
    await expect(store.ping()).resolves.toBeUndefined();
  });

  describe('keys', () => {
    it('stores, finds by id and by hash, lists and deletes', async () => {
      const a = keyRecord('a', { allowed_models: ['gpt-5'], limits: [limit('requests', 'daily', 10)], expires_at: '2027-01-01T00:00:00.000Z' });
      const b = keyRecord('b', { origin: 'config', disabled: true });
      await store.putKey(a);
      await store.putKey(b);

      expect(await store.getKeyById('a')).toEqual(a);
      expect(await store.getKeyByHash('sha-b')).toEqual(b);
      expect(await store.getKeyById('nope')).toBeNull();
      expect(await store.getKeyByHash('sha-nope')).toBeNull();
      expect((await store.listKeys()).sort((x, y) => x.id.localeCompare(y.id))).toEqual([a, b]);

      expect(await store.deleteKey('a')).toBe(true);
      expect(await store.deleteKey('a')).toBe(false);
      expect(await store.getKeyById('a')).toBeNull();
      expect(await store.getKeyByHash('sha-a')).toBeNull();
      expect(await store.listKeys()).toEqual([b]);
    });

    it('replacing a record moves its hash index and returns copies', async () => {
      await store.putKey(keyRecord('a'));
      const rekeyed = keyRecord('a', { sha256: 'sha-new', name: 'renamed' });
      await store.putKey(rekeyed);

      expect(await store.getKeyByHash('sha-a')).toBeNull();
      expect(await store.getKeyByHash('sha-new')).toEqual(rekeyed);
      expect(await store.listKeys()).toEqual([rekeyed]);

      const copy = (await store.getKeyById('a'))!;
      copy.name = 'mutated';
      copy.limits.push(limit('requests', 'daily', 1));
      expect(await store.getKeyById('a')).toEqual(rekeyed);
    });
  });

  describe('admitRequest', () => {
    it.each(LIMIT_WINDOWS)('a requests limit in the %s window denies past max, with the window reset', async (window) => {
      const limits = [limit('requests', window, 2)];
      expect(await admit(store, 'k', limits, now)).toEqual({ admitted: true });
      expect(await admit(store, 'k', limits, now)).toEqual({ admitted: true });
      expect(await admit(store, 'k', limits, now)).toEqual({
        admitted: false,
        denial: { limit: limits[0], current: 2, resetAt: windowBounds(window, now).end },
      });
      // A denied request counts nothing.
      const usage = await store.getUsage('k', now);
      expect(usage.windows[window].requests).toBe(2);
      expect(usage.allTime.requests).toBe(2);
      // The next window starts from zero.
      expect(await admit(store, 'k', limits, windowBounds(window, now).end)).toEqual({ admitted: true });
    });

    it.each(['input_tokens', 'output_tokens', 'total_tokens'] as const)('a %s limit denies once the total reached max', async (type) => {
      const limits = [limit(type, 'daily', 100)];
      await recordUsage(store, 'k', tokens(30, 30), now); // input 30, output 30, total 60
      expect(await admit(store, 'k', limits, now)).toEqual({ admitted: true });
      await recordUsage(store, 'k', type === 'total_tokens' ? tokens(20, 20) : tokens(70, 70), now);
      expect(await admit(store, 'k', limits, now)).toEqual({
        admitted: false,
        denial: { limit: limits[0], current: 100, resetAt: windowBounds('daily', now).end },
      });
      expect((await store.getUsage('k', now)).windows.daily.requests).toBe(1);
    });

    it('a cost_usd limit (cents allowed) denies once the cost recorded with the usage reached it; a re-sent batch adds no cost', async () => {
      const limits = [{ limit_type: 'cost_usd' as const, limit_window: 'daily' as const, max_value: 0.5 }];
      const costly = (seq: number, usd: number): UsageBatch => ({ writer: 'w-cost', seq, entries: [{ at: now, deltas: usageDeltas(tokens(10, 10), usd) }] });
      expect(await store.recordUsage('k', costly(1, 0.3))).toBe(true);
      expect(await store.recordUsage('k', costly(1, 0.3))).toBe(false);
      expect(await admit(store, 'k', limits, now)).toEqual({ admitted: true });
      expect((await store.getUsage('k', now)).windows.daily.cost_microusd).toBe(300_000);
      expect(await store.recordUsage('k', costly(2, 0.2))).toBe(true);
      expect(await admit(store, 'k', limits, now)).toEqual({
        admitted: false,
        denial: { limit: limits[0], current: 0.5, resetAt: windowBounds('daily', now).end },
      });
      expect((await store.getUsage('k', now)).allTime).toMatchObject({ requests: 1, cost_microusd: 500_000 });
    });

    it('returns the first limit that denies and counts every window at once', async () => {
      const limits = [limit('total_tokens', 'monthly', 1000), limit('requests', 'weekly', 1), limit('requests', '5h', 1)];
      expect(await admit(store, 'k', limits, now)).toEqual({ admitted: true });
      const usage = await store.getUsage('k', now);
      for (const window of LIMIT_WINDOWS) expect(usage.windows[window].requests).toBe(1);

      const second = await admit(store, 'k', limits, now);
      expect(second).toEqual({ admitted: false, denial: { limit: limits[1], current: 1, resetAt: windowBounds('weekly', now).end } });
    });

    it('an admission whose reply was lost is taken back once, only if it was counted', async () => {
      const ticket = (writer: string, number: number) => ({ writer, number });
      const takeBack = (seq: number, ...numbers: number[]): UsageBatch => ({ writer: 'w1', seq, entries: numbers.map((n) => ({ at: now, lostAdmission: n })) });
      const requests = async () => (await store.getUsage('k', now)).allTime.requests;
      expect(await store.admitRequest('k', [], now, ticket('w1', 1))).toEqual({ admitted: true });
      expect(await store.admitRequest('k', [], now, ticket('w1', 2))).toEqual({ admitted: true });
      expect(await store.recordUsage('k', takeBack(1, 2))).toBe(true);
      expect(await requests()).toBe(1);
      // the batch again, and the same admission in another batch: nothing more
      expect(await store.recordUsage('k', takeBack(1, 2))).toBe(false);
      expect(await store.recordUsage('k', takeBack(2, 2))).toBe(true);
      expect(await requests()).toBe(1);
      const windows = (await store.getUsage('k', now)).windows;
      for (const window of LIMIT_WINDOWS) expect(windows[window].requests, window).toBe(1);

      // lost before it reached the store: nothing to take back, and it is refused should it arrive
      expect(await store.recordUsage('k', takeBack(3, 4))).toBe(true);
      expect(await requests()).toBe(1);
      for (const late of [4, 3]) {
        const err = await store.admitRequest('k', [], now, ticket('w1', late)).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(GatewayError);
        expect((err as GatewayError).code).toBe('store_unavailable');
      }
      expect(await store.recordUsage('k', takeBack(4, 3))).toBe(true);
      expect(await requests()).toBe(1);
      // other writers and keys have numbers of their own
      expect(await store.admitRequest('k', [], now, ticket('w2', 1))).toEqual({ admitted: true });
      expect(await store.admitRequest('other', [], now, ticket('w1', 1))).toEqual({ admitted: true });
      expect(await store.admitRequest('k', [], now, ticket('w1', 5))).toEqual({ admitted: true });
      expect(await requests()).toBe(3);
    });

    it('a denied admission is settled, counted nothing, and has nothing to take back', async () => {
      const limits = [limit('requests', 'daily', 1)];
      expect(await store.admitRequest('k', limits, now, { writer: 'w1', number: 1 })).toEqual({ admitted: true });
      expect((await store.admitRequest('k', limits, now, { writer: 'w1', number: 2 })).admitted).toBe(false);
      expect(await store.recordUsage('k', { writer: 'w1', seq: 1, entries: [{ at: now, lostAdmission: 2 }] })).toBe(true);
      expect((await store.getUsage('k', now)).allTime.requests).toBe(1);
    });

    it('admits without limits and keeps keys apart', async () => {
      expect(await admit(store, 'a', [], now)).toEqual({ admitted: true });
      expect(await admit(store, 'b', [limit('requests', 'daily', 1)], now)).toEqual({ admitted: true });
      expect((await store.getUsage('a', now)).allTime.requests).toBe(1);
      expect((await store.getUsage('b', now)).allTime.requests).toBe(1);
    });
  });

  describe('usage', () => {
    it('a requests: -1 entry takes back an admitted request everywhere (a refund)', async () => {
      const limits = [limit('requests', 'daily', 1)];
      await admit(store, 'k', limits, now);
      expect(await store.recordUsage('k', { writer: 'w', seq: 1, entries: [{ at: now, deltas: { requests: -1 } }] })).toBe(true);
      const usage = await store.getUsage('k', now);
      expect(usage.allTime.requests).toBe(0);
      for (const window of LIMIT_WINDOWS) expect(usage.windows[window].requests).toBe(0);
      expect(await admit(store, 'k', limits, now)).toEqual({ admitted: true });
    });

    it('recordUsage adds up in every window and all time; getUsage starts at zero', async () => {
      const zero = { requests: 0, input_tokens: 0, output_tokens: 0, cached_input_tokens: 0, total_tokens: 0, cost_microusd: 0 };
      const empty = await store.getUsage('k', now);
      expect(empty.allTime).toEqual(zero);
      for (const window of LIMIT_WINDOWS) expect(empty.windows[window]).toEqual(zero);

      await admit(store, 'k', [], now);
      await recordUsage(store, 'k', tokens(100, 20, 40), now);
      await recordUsage(store, 'k', tokens(5, 7, 1), now);
      await recordUsage(store, 'other', tokens(1, 1), now);

      const expected = { requests: 1, input_tokens: 105, output_tokens: 27, cached_input_tokens: 41, total_tokens: 132, cost_microusd: 0 };
      const usage = await store.getUsage('k', now);
      expect(usage.allTime).toEqual(expected);
      for (const window of LIMIT_WINDOWS) expect(usage.windows[window]).toEqual(expected);
    });

    it('a batch applies once: the same (writer, seq) again and any lower seq are skipped', async () => {
      const first = batch('w1', 5, [now, tokens(10, 1)], [now, tokens(20, 2, 3)]);
      expect(await store.recordUsage('k', first)).toBe(true);
      // the retry of a write whose reply was lost
      expect(await store.recordUsage('k', first)).toBe(false);
      expect(await store.recordUsage('k', batch('w1', 7, [now, tokens(100, 0)]))).toBe(true);
      // an older batch arriving after a newer one
      expect(await store.recordUsage('k', batch('w1', 6, [now, tokens(1000, 0)]))).toBe(false);

      const expected = { requests: 0, input_tokens: 130, output_tokens: 3, cached_input_tokens: 3, total_tokens: 133, cost_microusd: 0 };
      const usage = await store.getUsage('k', now);
      expect(usage.allTime).toEqual(expected);
      for (const window of LIMIT_WINDOWS) expect(usage.windows[window]).toEqual(expected);
    });

    it('writers and keys are independent: each has its own sequence', async () => {
      expect(await store.recordUsage('k', batch('w1', 3, [now, tokens(1, 0)]))).toBe(true);
      expect(await store.recordUsage('k', batch('w2', 1, [now, tokens(2, 0)]))).toBe(true);
      expect(await store.recordUsage('other', batch('w1', 1, [now, tokens(4, 0)]))).toBe(true);
      expect(await store.recordUsage('k', batch('w2', 1, [now, tokens(8, 0)]))).toBe(false);
      expect((await store.getUsage('k', now)).allTime.input_tokens).toBe(3);
      expect((await store.getUsage('other', now)).allTime.input_tokens).toBe(4);
    });

    it('each entry of a batch lands in the buckets of its own time', async () => {
      const next = windowBounds('5h', now).end;
      expect(await store.recordUsage('k', batch('w1', 1, [now, tokens(1, 0)], [next, tokens(10, 0)], [now, tokens(100, 0)]))).toBe(true);
      const later = await store.getUsage('k', next);
      expect(later.windows['5h'].input_tokens).toBe(10);
      expect(later.allTime.input_tokens).toBe(111);
    });

    it.each(LIMIT_WINDOWS)('the %s bucket rolls over at its end; all time and longer windows keep counting', async (window) => {
      await admit(store, 'k', [], now);
      await recordUsage(store, 'k', tokens(10, 5), now);
      const next = windowBounds(window, now).end;

      const usage = await store.getUsage('k', next);
      expect(usage.windows[window]).toEqual({ requests: 0, input_tokens: 0, output_tokens: 0, cached_input_tokens: 0, total_tokens: 0, cost_microusd: 0 });
      expect(usage.allTime.total_tokens).toBe(15);
      for (const other of LIMIT_WINDOWS) {
        const sameBucket = windowBounds(other, now).end > next;
        expect(usage.windows[other].total_tokens, other).toBe(sameBucket ? 15 : 0);
      }

      await recordUsage(store, 'k', tokens(1, 1), next);
      expect((await store.getUsage('k', next)).windows[window].total_tokens).toBe(2);
    });
  });

  it('account states: cooldown and disabled per account, unknown accounts absent', async () => {
    expect((await store.getAccountStates(['a', 'b'])).size).toBe(0);
    expect((await store.getAccountStates([])).size).toBe(0);

    await store.setAccountCooldown('a', now + 60_000);
    await store.setAccountDisabled('a', true);
    await store.setAccountDisabled('b', false);
    expect(await store.getAccountStates(['a', 'b', 'c'])).toEqual(
      new Map([
        ['a', { cooldownUntil: now + 60_000, disabled: true }],
        ['b', { disabled: false }],
      ]),
    );

    await store.setAccountCooldown('a', 0);
    await store.setAccountDisabled('a', false);
    expect((await store.getAccountStates(['a'])).get('a')).toEqual({ cooldownUntil: 0, disabled: false });
  });

  describe('usage history', () => {
    const HOUR = 3_600_000;
    const hourOf = (at: number) => Math.floor(at / HOUR) * HOUR;
    const zeroErrors = { rate_limited: 0, client_error: 0, server_error: 0 };

    it('tagged entries count per hour, model and account (cost too) in the same exactly-once write', async () => {
      const at = hourOf(now) + 10;
      const written: UsageBatch = {
        writer: 'w1',
        seq: 1,
        entries: [
          { at, deltas: usageDeltas(tokens(100, 20, 40), 0.0125), history: { model: 'gpt-5', account: 'oa-1' } },
          { at, deltas: usageDeltas(tokens(1, 2)), history: { model: 'gpt-5', account: 'oa-1' } },
          { at, deltas: usageDeltas(tokens(5, 5)), history: { model: 'claude "x", y', account: 'an-1' } },
          { at, deltas: {}, history: { model: 'gpt-5', account: '', error: 'rate_limited' } },
          { at, deltas: usageDeltas(tokens(1000, 0)) }, // untagged: limits and totals only
        ],
      };
      expect(await store.recordUsage('k', written)).toBe(true);
      expect(await store.recordUsage('k', written)).toBe(false); // replayed: history unchanged too
      const rows = await store.getUsageHistory('k', hourOf(now), hourOf(now) + HOUR);
      const byId = Object.fromEntries(rows.map((row) => [`${row.model}/${row.account}`, row]));
      expect(Object.keys(byId).sort()).toEqual(['claude "x", y/an-1', 'gpt-5/', 'gpt-5/oa-1']);
      expect(byId['gpt-5/oa-1']).toEqual({
        hour: hourOf(now),
        model: 'gpt-5',
        account: 'oa-1',
        counters: { requests: 2, input_tokens: 101, output_tokens: 22, cached_input_tokens: 40, total_tokens: 123, cost_microusd: 12_500 },
        errors: zeroErrors,
      });
      expect(byId['claude "x", y/an-1'].counters.total_tokens).toBe(10);
      expect(byId['gpt-5/'].counters.requests).toBe(1);
      expect(byId['gpt-5/'].errors).toEqual({ ...zeroErrors, rate_limited: 1 });
      expect((await store.getUsage('k', now)).allTime.input_tokens).toBe(1106);
    });

    it('a batch mixing hours, tags, a refund and a taken-back admission adds what its entries add one by one', async () => {
      const earlier = hourOf(now) - HOUR + 5;
      const gpt = { model: 'gpt-5', account: 'oa-1' };
      const entries: UsageEntry[] = [
        { at: earlier, deltas: usageDeltas(tokens(3, 4), 0.001), history: gpt },
        { at: now, deltas: { requests: 1 } },
        { at: now, deltas: usageDeltas(tokens(10, 1)), history: gpt },
        { at: now, deltas: {}, history: { ...gpt, error: 'server_error' } },
        { at: now, deltas: usageDeltas(tokens(7, 7)), history: gpt },
        { at: earlier, deltas: { requests: -1 } },
        { at: now, lostAdmission: 1 },
        { at: earlier, deltas: usageDeltas(tokens(1, 1)), history: { model: 'claude', account: 'an-1' } },
      ];
      for (const key of ['whole', 'single']) await store.admitRequest(key, [], now, { writer: 'w1', number: 1 });
      expect(await store.recordUsage('whole', { writer: 'w1', seq: 1, entries })).toBe(true);
      for (const [i, entry] of entries.entries()) expect(await store.recordUsage('single', { writer: 'w1', seq: i + 1, entries: [entry] })).toBe(true);

      for (const at of [earlier, now]) expect(await store.getUsage('whole', at)).toEqual(await store.getUsage('single', at));
      const history = async (key: string) =>
        (await store.getUsageHistory(key, hourOf(earlier), hourOf(now) + HOUR)).sort((a, b) => a.hour - b.hour || a.model.localeCompare(b.model));
      const rows = await history('whole');
      expect(rows).toEqual(await history('single'));
      expect(rows.map((row) => [row.hour - hourOf(now), row.model, row.counters.requests, row.counters.input_tokens, row.errors.server_error])).toEqual([
        [-HOUR, 'claude', 1, 1, 0],
        [-HOUR, 'gpt-5', 1, 3, 0],
        [0, 'gpt-5', 3, 17, 1],
      ]);
      // admitted 1, +1, -1, the admission taken back: 0 requests; tokens 3+4 + 10+1 + 7+7 + 1+1
      expect((await store.getUsage('whole', now)).allTime).toMatchObject({ requests: 0, total_tokens: 34, cost_microusd: 1_000 });
    });

    it('reads the hours starting in [from, to), oldest first, per key', async () => {
      const tag = { model: 'm', account: 'a' };
      const hours = [hourOf(now) - 2 * HOUR, hourOf(now) - HOUR, hourOf(now)];
      const entries = hours.map((hour, i) => ({ at: hour + 1, deltas: { input_tokens: i + 1 }, history: tag }));
      await store.recordUsage('k', { writer: 'w1', seq: 1, entries });
      await store.recordUsage('other', { writer: 'w1', seq: 1, entries });
      const rows = await store.getUsageHistory('k', hours[0] + 1, hours[2] + HOUR);
      expect(rows.map((row) => [row.hour, row.counters.input_tokens])).toEqual([
        [hours[1], 2],
        [hours[2], 3],
      ]);
      expect(await store.getUsageHistory('nobody', hours[0], hours[2] + HOUR)).toEqual([]);
    });

    it('an hour past the retention (90 days by default) is not kept', async () => {
      const old = hourOf(now) - 91 * 24 * HOUR;
      const tag = { model: 'm', account: 'a' };
      await store.recordUsage('k', { writer: 'w1', seq: 1, entries: [{ at: old, deltas: { input_tokens: 1 }, history: tag }, { at: now, deltas: { input_tokens: 2 }, history: tag }] });
      expect(await store.getUsageHistory('k', old, old + HOUR)).toEqual([]);
      expect((await store.getUsageHistory('k', hourOf(now), hourOf(now) + HOUR))[0].counters.input_tokens).toBe(2);
    });
  });

  describe('account probes', () => {
    it('one claim wins until its record expires; later claims see the record untouched', async () => {
      const claims = await Promise.all(Array.from({ length: 8 }, () => store.claimAccountProbe('a', 60_000)));
      expect(claims.filter((claim) => claim === null)).toHaveLength(1);
      expect(claims.filter((claim) => claim === 'pending')).toHaveLength(7);
      // another account has a probe of its own
      expect(await store.claimAccountProbe('b', 60_000)).toBeNull();

      await store.setAccountProbeVerdict('a', 'refused', 60_000);
      expect(await store.claimAccountProbe('a', 60_000)).toBe('refused');
      expect(await store.claimAccountProbe('a', 60_000)).toBe('refused');
    });

    it('a verdict expires after its ttl; a pending claim too (its prober may have died)', async () => {
      await store.setAccountProbeVerdict('a', 'ok', 150);
      expect(await store.claimAccountProbe('a', 150)).toBe('ok');
      expect(await store.claimAccountProbe('b', 150)).toBeNull();
      // a claim that finds nothing claims it: the first null is the record having expired
      await expect.poll(() => store.claimAccountProbe('a', 60_000)).toBeNull();
      await expect.poll(() => store.claimAccountProbe('b', 60_000)).toBeNull();
    });

    it('enabling an account forgets its verdict; disabling keeps it', async () => {
      await store.setAccountProbeVerdict('a', 'refused', 60_000);
      await store.setAccountDisabled('a', true);
      expect(await store.claimAccountProbe('a', 60_000)).toBe('refused');
      await store.setAccountDisabled('a', false);
      expect(await store.claimAccountProbe('a', 60_000)).toBeNull();
      expect((await store.getAccountStates(['a'])).get('a')).toEqual({ disabled: false });
    });
  });

  describe('account concurrency slots', () => {
    it('at most max holders at once under concurrency, per account; a holder asking again keeps its one slot', async () => {
      const taken = await Promise.all(Array.from({ length: 8 }, (_, i) => store.acquireAccountSlot('a', `req-${i}`, 3, 60_000)));
      expect(taken.filter(Boolean)).toHaveLength(3);
      const holder = `req-${taken.indexOf(true)}`;
      expect(await store.acquireAccountSlot('a', holder, 3, 60_000)).toBe(true);
      expect(await store.acquireAccountSlot('a', 'late', 3, 60_000)).toBe(false);
      // another account's slots are its own
      expect(await store.acquireAccountSlot('b', 'late', 1, 60_000)).toBe(true);

      await store.releaseAccountSlot('a', holder);
      expect(await store.acquireAccountSlot('a', 'late', 3, 60_000)).toBe(true);
      expect(await store.acquireAccountSlot('a', 'later', 3, 60_000)).toBe(false);
      // releasing what is not held changes nothing
      await store.releaseAccountSlot('a', 'never-held');
      expect(await store.acquireAccountSlot('a', 'later', 3, 60_000)).toBe(false);
    });

    it('a slot not renewed frees itself after its ttl; a renewed one stays, an expired one is not revived', async () => {
      expect(await store.acquireAccountSlot('a', 'dead-replica', 2, 300)).toBe(true);
      expect(await store.acquireAccountSlot('a', 'live', 2, 300)).toBe(true);
      const takenAt = Date.now();
      await store.renewAccountSlots('a', ['live'], 60_000);
      expect(await store.acquireAccountSlot('a', 'new', 2, 60_000)).toBe(false);
      await expect.poll(() => store.acquireAccountSlot('a', 'new', 2, 60_000)).toBe(true);
      expect(Date.now() - takenAt).toBeGreaterThanOrEqual(250); // not (much) before its time: the clocks differ by ms
      await store.renewAccountSlots('a', ['dead-replica'], 60_000);
      expect(await store.acquireAccountSlot('a', 'another', 2, 60_000)).toBe(false);
    });
  });

  it('account quota: the last report per account, beside cooldown and disabled', async () => {
    const quota = { primary: { usedPercent: 42.5, windowMinutes: 300, resetsAt: now + 60_000 }, secondary: { usedPercent: 7, windowMinutes: null, resetsAt: null }, observedAt: now };
    await store.setAccountQuota('a', quota);
    await store.setAccountCooldown('a', now + 1);
    await store.setAccountQuota('a', { ...quota, primary: { ...quota.primary, usedPercent: 50 } });
    expect((await store.getAccountStates(['a'])).get('a')).toEqual({ cooldownUntil: now + 1, quota: { ...quota, primary: { ...quota.primary, usedPercent: 50 } } });
  });

  describe('ChatGPT logins', () => {
    const login = (id: string, lastRefresh: number, sealed = `sealed-${lastRefresh}`) => ({
      id,
      label: null,
      sealed,
      chatgptAccountId: `acct-${id}`,
      planType: 'plus',
      email: null,
      expiresAt: lastRefresh + 10 * 86_400_000,
      lastRefresh,
      origin: 'admin' as const,
    });
    const update = (lastRefresh: number) => ({ sealed: `sealed-${lastRefresh}`, chatgptAccountId: 'acct-a', planType: 'pro', email: 'a@example.com', expiresAt: lastRefresh + 1, lastRefresh });

    it('an import is stored as the next generation unless the stored login is newer', async () => {
      expect(await store.getCredential('a')).toBeNull();
      expect(await store.importCredential(login('a', now))).toEqual({ ...login('a', now), generation: 1 });
      // the file it came from (or an older one) never replaces it
      expect(await store.importCredential(login('a', now, 'other'))).toBeNull();
      expect(await store.importCredential(login('a', now - 1))).toBeNull();
      expect(await store.importCredential(login('a', now + 1))).toMatchObject({ generation: 2, sealed: `sealed-${now + 1}` });
      await store.importCredential(login('b', now));
      expect((await store.listCredentials()).map((c) => [c.id, c.generation]).sort()).toEqual([['a', 2], ['b', 1]]);
    });

    it('one refresher per account at a time, fenced by the generation it started from', async () => {
      await store.importCredential(login('a', now));
      // a stale view of the login cannot take the lock
      expect(await store.claimCredentialRefresh('a', 0, 60_000)).toBe(false);
      const claims = await Promise.all(Array.from({ length: 6 }, () => store.claimCredentialRefresh('a', 1, 60_000)));
      expect(claims.filter(Boolean)).toHaveLength(1);
      expect(await store.claimCredentialRefresh('b', 1, 60_000)).toBe(false); // no login: nothing to refresh

      expect(await store.commitCredentialRefresh('a', 1, update(now + 5))).toMatchObject({ generation: 2, planType: 'pro', sealed: `sealed-${now + 5}`, label: null, origin: 'admin' });
      expect(await store.getCredential('a')).toMatchObject({ generation: 2, lastRefresh: now + 5 });
      // the lock went with the commit; a late refresher of generation 1 is fenced out
      expect(await store.commitCredentialRefresh('a', 1, update(now + 6))).toBeNull();
      expect(await store.markCredentialReauth('a', 1, 'refresh_token_reused')).toBe(false);
      expect(await store.claimCredentialRefresh('a', 2, 60_000)).toBe(true);
    });

    it('a permanent failure marks the account until a newer import; a backoff keeps the lock', async () => {
      await store.importCredential(login('a', now));
      expect(await store.claimCredentialRefresh('a', 1, 60_000)).toBe(true);
      await store.backOffCredentialRefresh('a', 1, 150);
      await expect.poll(() => store.claimCredentialRefresh('a', 1, 60_000)).toBe(true);
      expect(await store.markCredentialReauth('a', 1, 'refresh_token_reused')).toBe(true);
      expect((await store.getAccountStates(['a'])).get('a')).toEqual({ reauthRequired: 'refresh_token_reused' });
      // a marked login is replaced by any import, even of the same file
      expect(await store.importCredential(login('a', now))).toMatchObject({ generation: 2 });
      expect((await store.getAccountStates(['a'])).get('a')?.reauthRequired).toBeUndefined();
    });
  });

  it('replicas: heartbeat registers and refreshes, list and remove', async () => {
    expect(await store.listReplicas()).toEqual([]);
    await store.heartbeat({ instanceId: 'r1', advertiseUrl: 'http://10.0.0.1:9090' }, now);
    await store.heartbeat({ instanceId: 'r2', advertiseUrl: 'http://10.0.0.2:9090' }, now + 1);
    await store.heartbeat({ instanceId: 'r1', advertiseUrl: 'http://10.0.0.9:9090' }, now + 2_000);

    expect(await store.getReplica('r1')).toEqual({ instanceId: 'r1', advertiseUrl: 'http://10.0.0.9:9090', lastSeen: now + 2_000 });
    expect(await store.getReplica('nope')).toBeNull();
    expect((await store.listReplicas()).sort((x, y) => x.instanceId.localeCompare(y.instanceId))).toEqual([
      { instanceId: 'r1', advertiseUrl: 'http://10.0.0.9:9090', lastSeen: now + 2_000 },
      { instanceId: 'r2', advertiseUrl: 'http://10.0.0.2:9090', lastSeen: now + 1 },
    ]);

    await store.removeReplica('r1');
    await store.removeReplica('never-registered');
    expect(await store.getReplica('r1')).toBeNull();
    expect(await store.listReplicas()).toEqual([{ instanceId: 'r2', advertiseUrl: 'http://10.0.0.2:9090', lastSeen: now + 1 }]);
  });

  describe('leases', () => {
    it('claim: the first caller wins, others get the current lease untouched', async () => {
      expect(await store.getLease('s')).toBeNull();
      const first = await store.claimLease('s', owner('r1'), 10_000);
      expect(first.claimed).toBe(true);
      expect(first.lease).toMatchObject(owner('r1'));
      expect(first.lease.epoch).toBeGreaterThan(0);

      expect(await store.claimLease('s', owner('r2', 'acct-2'), 10_000)).toEqual({ lease: first.lease, claimed: false });
      expect(await store.getLease('s')).toEqual(first.lease);
      // Sessions are independent.
      expect((await store.claimLease('other', owner('r2'), 10_000)).claimed).toBe(true);
    });

    it('renew and release only for the holder at its epoch; a new claim gets a higher epoch', async () => {
      const { lease } = await store.claimLease('s', owner('r1'), 10_000);
      expect(await store.renewLease('s', 'r1', lease.epoch + 1, 10_000)).toBe(false);
      expect(await store.renewLease('s', 'r2', lease.epoch, 10_000)).toBe(false);
      expect(await store.renewLease('s', 'r1', lease.epoch, 10_000)).toBe(true);

      expect(await store.releaseLease('s', 'r1', lease.epoch - 1)).toBe(false);
      expect(await store.releaseLease('s', 'r2', lease.epoch)).toBe(false);
      expect(await store.getLease('s')).toEqual(lease);
      expect(await store.releaseLease('s', 'r1', lease.epoch)).toBe(true);
      expect(await store.getLease('s')).toBeNull();
      expect(await store.releaseLease('s', 'r1', lease.epoch)).toBe(false);
      expect(await store.renewLease('s', 'r1', lease.epoch, 10_000)).toBe(false);

      const again = await store.claimLease('s', owner('r2'), 10_000);
      expect(again.claimed).toBe(true);
      expect(again.lease.epoch).toBeGreaterThan(lease.epoch);
    });

    it('takeover is a compare-and-set on the epoch and fences the old owner', async () => {
      const { lease: stale } = await store.claimLease('s', owner('r1'), 10_000);
      const taken = await store.takeOverLease('s', stale.epoch, owner('r2', 'acct-2'), 10_000);
      expect(taken).toEqual({ instanceId: 'r2', accountId: 'acct-2', epoch: expect.any(Number) });
      expect(taken!.epoch).toBeGreaterThan(stale.epoch);
      expect(await store.getLease('s')).toEqual(taken);

      // A second replica racing with the same stale view loses.
      expect(await store.takeOverLease('s', stale.epoch, owner('r3'), 10_000)).toBeNull();
      expect(await store.renewLease('s', 'r1', stale.epoch, 10_000)).toBe(false);
      expect(await store.releaseLease('s', 'r1', stale.epoch)).toBe(false);
      expect(await store.getLease('s')).toEqual(taken);

      // Nothing to take over: the caller claims instead.
      expect(await store.takeOverLease('free', 1, owner('r3'), 10_000)).toBeNull();
    });

    it('a lease expires after leaseMs unless renewed', async () => {
      // 'kept' is claimed first, so its unrenewed lease would end before the one of 's'
      const { lease: kept } = await store.claimLease('kept', owner('r1'), 1_000);
      const claimedAt = Date.now();
      const { lease } = await store.claimLease('s', owner('r1'), 1_000);
      expect(await store.renewLease('kept', 'r1', kept.epoch, 60_000)).toBe(true);

      await expect.poll(() => store.getLease('s')).toBeNull();
      expect(Date.now() - claimedAt).toBeGreaterThanOrEqual(1_000); // not before its time
      expect(await store.renewLease('s', 'r1', lease.epoch, 1_000)).toBe(false);
      expect(await store.getLease('kept')).toEqual(kept);

      const next = await store.claimLease('s', owner('r2'), 1_000);
      expect(next.claimed).toBe(true);
      expect(next.lease.epoch).toBeGreaterThan(lease.epoch);
    });
  });

  it('nonces are single use and forgotten after their ttl', async () => {
    expect(await store.useNonce('n1', 60_000)).toBe(true);
    expect(await store.useNonce('n1', 60_000)).toBe(false);
    expect(await store.useNonce('n2', 60_000)).toBe(true);
    const usedAt = Date.now();
    expect(await store.useNonce('short', 150)).toBe(true);
    await expect.poll(() => store.useNonce('short', 150)).toBe(true);
    expect(Date.now() - usedAt).toBeGreaterThanOrEqual(150); // not before its time
    expect(await store.useNonce('n1', 60_000)).toBe(false);
  });
});

describe('redis store only', () => {
  it('admits exactly max requests under concurrency from several connections', async () => {
    const keyPrefix = freshPrefix();
    const connections = await Promise.all([1, 2, 3].map(() => RedisStore.connect(redis.url, { keyPrefix })));
    try {
      const limits = [limit('requests', 'daily', 50)];
      const now = Date.now();
      const results = await Promise.all(Array.from({ length: 200 }, (_, i) => connections[i % 3].admitRequest('k', limits, now, { writer: `connection-${i % 3}`, number: i + 1 })));
      expect(results.filter((r) => r.admitted)).toHaveLength(50);
      expect(results.filter((r) => !r.admitted).every((r) => !r.admitted && r.denial.current === 50)).toBe(true);
      const usage = await connections[0].getUsage('k', now);
      expect(usage.allTime.requests).toBe(50);
      for (const window of LIMIT_WINDOWS) expect(usage.windows[window].requests).toBe(50);
    } finally {
      await Promise.all(connections.map((c) => c.close()));
    }
  });

  it('usage buckets expire after their window; all-time counters and epoch counters outlive leases', async () => {
    const keyPrefix = freshPrefix();
    const store = await RedisStore.connect(redis.url, { keyPrefix });
    const raw = new Redis(redis.url);
    try {
      const now = Date.now();
      await admit(store, 'k', [], now);
      await store.claimLease('s', owner('r1'), 1_000);
      const keys = await raw.keys(`${keyPrefix}*`);
      for (const key of keys) {
        const ttl = await raw.pttl(key);
        const window = LIMIT_WINDOWS.find((w) => key.includes(`:${w}:`));
        if (window) {
          expect(ttl, key).toBeGreaterThan(windowBounds(window, now).end - now);
          expect(ttl, key).toBeLessThanOrEqual(windowBounds(window, now).end - now + 24 * 3_600_000);
        } else if (key.endsWith(':all')) {
          expect(ttl, key).toBe(-1);
        } else if (key.endsWith(':lease')) {
          expect(ttl, key).toBeLessThanOrEqual(1_000);
        } else if (key.endsWith(':epoch')) {
          expect(ttl, key).toBeGreaterThan(24 * 3_600_000);
        }
      }
      expect(keys.filter((k) => LIMIT_WINDOWS.some((w) => k.includes(`:${w}:`)))).toHaveLength(LIMIT_WINDOWS.length);
    } finally {
      raw.disconnect();
      await store.close();
    }
  });

  it('remembers the batches it applied and the admissions it counted across crashes on its AOF data', async () => {
    const aof = await startRedis({ args: AOF_ALWAYS });
    const store = await RedisStore.connect(aof.url);
    try {
      const now = Date.now();
      const first = batch('w1', 1, [now, tokens(10, 5)]);
      expect(await store.recordUsage('k', first)).toBe(true);
      expect(await store.admitRequest('k', [], now, { writer: 'w1', number: 1 })).toEqual({ admitted: true });
      expect(await store.admitRequest('k', [], now, { writer: 'w1', number: 2 })).toEqual({ admitted: true });
      for (const crash of [() => aof.kill(), () => aof.terminate()]) {
        await crash();
        await aof.start();
        await expect.poll(() => store.ping().then(() => true, () => false), { timeout: 5_000 }).toBe(true);
        // the retry of a write whose reply the crash swallowed
        expect(await store.recordUsage('k', first)).toBe(false);
      }
      expect(await store.recordUsage('k', batch('w1', 2, [now, tokens(1, 1)]))).toBe(true);
      // which admissions were counted survived too: one taken back, one never counted
      expect(await store.recordUsage('k', { writer: 'w1', seq: 3, entries: [{ at: now, lostAdmission: 2 }, { at: now, lostAdmission: 3 }] })).toBe(true);
      expect((await store.getUsage('k', now)).allTime).toMatchObject({ requests: 1, input_tokens: 11, total_tokens: 17 });
    } finally {
      await store.close();
      await aof.stop();
    }
  }, 20_000);

  it("a writer mark lives in the key's slot and expires a week after its last write", async () => {
    const keyPrefix = freshPrefix();
    const store = await RedisStore.connect(redis.url, { keyPrefix });
    const raw = new Redis(redis.url);
    try {
      await store.recordUsage('k', batch('w1', 1, [Date.now(), tokens(1, 1)]));
      const mark = `${keyPrefix}tg:{u:k}:w:w1`;
      expect(await raw.get(mark)).toBe('1');
      const ttl = await raw.pttl(mark);
      expect(ttl).toBeGreaterThan(6 * 24 * 3_600_000);
      expect(ttl).toBeLessThanOrEqual(7 * 24 * 3_600_000);
    } finally {
      raw.disconnect();
      await store.close();
    }
  });

  describe('when Redis goes away', () => {
    it('fails fast with store_unavailable and recovers by itself when Redis returns', async () => {
      const store = await RedisStore.connect(redis.url, { keyPrefix: freshPrefix() });
      try {
        await store.putKey(keyRecord('a'));
        await redis.kill();

        const calls: Array<() => Promise<unknown>> = [
          () => store.ping(),
          () => admit(store, 'k', [limit('requests', 'daily', 5)], Date.now()),
          () => store.getKeyByHash('sha-a'),
          () => store.getUsage('k', Date.now()),
          () => recordUsage(store, 'k', tokens(1, 1), Date.now()),
          () => store.claimLease('s', owner('r1'), 1_000),
          () => store.getAccountStates(['a']),
        ];
        for (const call of calls) {
          const started = Date.now();
          const err = await call().then(
            () => null,
            (e: unknown) => e,
          );
          expect(err).toBeInstanceOf(GatewayError);
          expect((err as GatewayError).code).toBe('store_unavailable');
          // within the command timeout (1 s), with room for a loaded machine
          expect(Date.now() - started).toBeLessThan(3_000);
        }

        await redis.restart();
        await expect.poll(() => store.ping().then(() => true, () => false)).toBe(true);
        // The data is gone with the old server, the connection works again.
        expect(await admit(store, 'k', [limit('requests', 'daily', 5)], Date.now())).toEqual({ admitted: true });
        expect(await store.getKeyById('a')).toBeNull();
      } finally {
        await store.close();
      }
    }, 20_000);

    it('connect() gives up with a clear error instead of hanging', async () => {
      await redis.kill();
      try {
        const started = Date.now();
        const err = await RedisStore.connect(redis.url).then(
          () => null,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(GatewayError);
        expect((err as GatewayError).code).toBe('store_unavailable');
        expect((err as GatewayError).message).toContain(`redis://127.0.0.1:${redis.port}`);
        // the ready timeout (5 s), with room for a loaded machine
        expect(Date.now() - started).toBeLessThan(10_000);
      } finally {
        await redis.restart();
      }
    }, 15_000);
  });
});
