import { describe, expect, it } from 'vitest';
import { pickAccount, rendezvousOrder, type Candidate } from '../src/upstream/accounts.js';
import { MAX_JSON_DEPTH, scanJson } from '../src/server/json-depth.js';
import { affinityKeyOf, conversationOf } from '../src/upstream/cache-affinity.js';

/** A request body as the gateway holds it: top level scanned from the bytes, the document on demand. */
const bodyOf = (json: unknown) => ({ top: scanJson(Buffer.from(JSON.stringify(json)), MAX_JSON_DEPTH).top, json: () => json });

const candidate = (id: string): Candidate => ({
  account: { id, provider: 'openai', baseUrl: 'http://127.0.0.1:1', secret: `sk-${id}`, oauth: false, headers: {} },
  state: {},
  inFlight: 0,
  recentTokens: 0,
  headroom: 1,
});
const ACCOUNTS = ['oa-1', 'oa-2', 'oa-3', 'oa-4'].map(candidate);
const KEYS = Array.from({ length: 2_000 }, (_, i) => `key-1\0prompt_cache_key:conversation-${i}`);
const winner = (key: string, candidates: Candidate[]) => pickAccount('round_robin', candidates, 0, key)!.account.id;

describe('rendezvous account selection (pure)', () => {
  it('picks the same account for a key whatever the candidates order, cursor or strategy', () => {
    for (const key of KEYS.slice(0, 200)) {
      const expected = winner(key, ACCOUNTS);
      expect(winner(key, [...ACCOUNTS].reverse())).toBe(expected);
      expect(pickAccount('least_in_flight', ACCOUNTS, 7, key)!.account.id).toBe(expected);
      expect(pickAccount('fill_first', ACCOUNTS, 3, key)!.account.id).toBe(expected);
    }
  });

  it('spreads keys over the accounts about evenly', () => {
    const counts = new Map<string, number>();
    for (const key of KEYS) counts.set(winner(key, ACCOUNTS), (counts.get(winner(key, ACCOUNTS)) ?? 0) + 1);
    expect([...counts.keys()].sort()).toEqual(['oa-1', 'oa-2', 'oa-3', 'oa-4']);
    // 500 expected each; a hash this bad would be off by far more
    for (const count of counts.values()) expect(count).toBeGreaterThan(400);
  });

  it('moves only the keys of an account that drops out, each to its next-ranked account', () => {
    const without = ACCOUNTS.filter((c) => c.account.id !== 'oa-2');
    let moved = 0;
    for (const key of KEYS) {
      const before = winner(key, ACCOUNTS);
      const after = winner(key, without);
      if (before === 'oa-2') {
        moved++;
        expect(after).toBe(rendezvousOrder(key, ACCOUNTS)[1]!.account.id);
      } else {
        expect(after).toBe(before);
      }
    }
    expect(moved).toBeGreaterThan(0);
  });

  it('a key comes back to its account when that account is usable again', () => {
    const key = KEYS.find((k) => winner(k, ACCOUNTS) === 'oa-3')!;
    expect(winner(key, ACCOUNTS.filter((c) => c.account.id !== 'oa-3'))).not.toBe('oa-3');
    expect(winner(key, ACCOUNTS)).toBe('oa-3');
  });

  it('without a key the strategy decides; with no candidates there is no pick', () => {
    expect(pickAccount('round_robin', ACCOUNTS, 1)!.account.id).toBe('oa-2');
    expect(pickAccount('round_robin', [], 0, KEYS[0])).toBeUndefined();
  });
});

describe('affinity key of a call', () => {
  const userIdLegacy = 'user_0f3a_account_5b7c2d9e-0000-4000-8000-000000000001_session_9a8b7c6d-1111-4222-8333-444455556666';

  it('is the first found of prompt_cache_key, Codex session headers, Claude Code session', () => {
    const all = { session_id: 'codex-1', 'x-claude-code-session-id': 'cc-1' };
    expect(conversationOf(all, { prompt_cache_key: 'pck-1', metadata: { user_id: userIdLegacy } })).toBe('prompt_cache_key:pck-1');
    expect(conversationOf(all, { metadata: { user_id: userIdLegacy } })).toBe('session:codex-1');
    expect(conversationOf({ 'session-id': 'codex-2' }, {})).toBe('session:codex-2');
    expect(conversationOf({ 'thread-id': 'thread-9' }, {})).toBe('session:thread-9');
    expect(conversationOf({ 'x-claude-code-session-id': 'cc-1' }, { metadata: { user_id: userIdLegacy } })).toBe('claude_code:cc-1');
  });

  it("reads Claude Code's session out of metadata.user_id, old and new shapes, the same as its header", () => {
    const session = '9a8b7c6d-1111-4222-8333-444455556666';
    expect(conversationOf({}, { metadata: { user_id: userIdLegacy } })).toBe(`claude_code:${session}`);
    expect(conversationOf({}, { metadata: { user_id: JSON.stringify({ device_id: 'd', session_id: session }) } })).toBe(`claude_code:${session}`);
    expect(conversationOf({ 'x-claude-code-session-id': session }, {})).toBe(`claude_code:${session}`);
    expect(conversationOf({}, { metadata: { user_id: 'plain-user' } })).toBe('claude_code:plain-user');
  });

  it('is none for calls that name no conversation, or name it with blanks or non-strings', () => {
    expect(conversationOf({}, { model: 'gpt-5', input: 'hi' })).toBeUndefined();
    expect(conversationOf({ session_id: '  ' }, { prompt_cache_key: '', metadata: { user_id: 42 } })).toBeUndefined();
    expect(conversationOf({}, undefined)).toBeUndefined();
    expect(affinityKeyOf({}, bodyOf({ input: 'x' }), 'key-1')).toBeUndefined();
    expect(affinityKeyOf({}, undefined, 'key-1')).toBeUndefined();
  });

  it('is scoped by the proxy key: two keys naming the same conversation do not share it', () => {
    const body = { prompt_cache_key: 'shared' };
    expect(affinityKeyOf({}, bodyOf(body), 'key-a')).not.toBe(affinityKeyOf({}, bodyOf(body), 'key-b'));
    expect(affinityKeyOf({}, bodyOf(body), 'key-a')).toBe(affinityKeyOf({}, bodyOf({ ...body, input: 'other turn' }), 'key-a'));
  });
});
