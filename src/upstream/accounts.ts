import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { ProviderConfig, ProviderName, Strategy } from '../config/schema.js';
import { requestTarget } from '../http/request-target.js';
import type { AccountState } from '../store/types.js';
import { exhaustedUntil } from './chatgpt/quota.js';

export interface Account {
  id: string;
  provider: ProviderName;
  baseUrl: string;
  /** the static credential; empty for a ChatGPT login, whose current access token the store holds */
  secret: string;
  /** a ChatGPT OAuth login (Codex auth.json): refreshed, never disabled by a probe */
  oauth: boolean;
  chatgptAccountId?: string;
  /** OpenAI: `OpenAI-Organization` / `OpenAI-Project` */
  organization?: string;
  project?: string;
  /** extra upstream headers from config, lowercase names */
  headers: Record<string, string>;
  /** streams in flight at once, cluster-wide; absent = no cap */
  maxConcurrent?: number;
}

/** What selection may look at: shared state from the store plus this replica's own counters. */
export interface Candidate {
  account: Account;
  state: AccountState;
  inFlight: number;
  recentTokens: number;
  /** percent left in the account's tightest quota window (100 when unknown) */
  headroom: number;
}

export type Unavailability =
  | { reason: 'cooldown'; until: number }
  | { reason: 'quota_exhausted'; until: number }
  | { reason: 'disabled' }
  | { reason: 'reauth_required'; detail: string };

export function unavailability(state: AccountState, now: number): Unavailability | null {
  if (state.disabled) return { reason: 'disabled' };
  if (state.reauthRequired) return { reason: 'reauth_required', detail: state.reauthRequired };
  if (state.cooldownUntil && state.cooldownUntil > now) return { reason: 'cooldown', until: state.cooldownUntil };
  const exhausted = exhaustedUntil(state.quota, now);
  if (exhausted !== null) return { reason: 'quota_exhausted', until: exhausted };
  return null;
}

/**
 * Account selection as a pure function of the candidates (in config order, already filtered to
 * usable ones) and a rotating cursor for round robin. A request with an affinity key goes to the
 * rendezvous winner instead, whatever the strategy: the same account on every replica with no
 * store round trip, and only the conversations of an account that drops out move.
 */
export function pickAccount(strategy: Strategy, candidates: Candidate[], cursor: number, affinityKey?: string): Candidate | undefined {
  if (candidates.length === 0) return undefined;
  if (affinityKey !== undefined) return rendezvousOrder(affinityKey, candidates)[0];
  switch (strategy) {
    case 'round_robin':
      return candidates[cursor % candidates.length];
    case 'fill_first':
      return candidates[0];
    case 'least_in_flight':
      return minBy(candidates, (c) => c.inFlight);
    case 'usage_weighted':
      return minBy(candidates, (c) => c.recentTokens);
    case 'quota_headroom':
      // most room in the tightest window; among equals, the least busy here
      return candidates.reduce((best, c) => (c.headroom > best.headroom || (c.headroom === best.headroom && c.inFlight < best.inFlight) ? c : best));
  }
}

/**
 * Highest-random-weight (rendezvous) hashing: the candidates ordered by a hash of the key and the
 * account id, best first. Each account's weight depends only on the pair, so removing an account
 * changes the winner only for the keys it had won. Ties (48-bit collisions) fall back to id order.
 */
export function rendezvousOrder<T extends { account: { id: string } }>(affinityKey: string, candidates: readonly T[]): T[] {
  return candidates
    .map((candidate) => ({ candidate, weight: rendezvousWeight(affinityKey, candidate.account.id) }))
    .sort((a, b) => b.weight - a.weight || (a.candidate.account.id < b.candidate.account.id ? -1 : 1))
    .map((scored) => scored.candidate);
}

function rendezvousWeight(affinityKey: string, accountId: string): number {
  return createHash('sha256').update(affinityKey).update('\0').update(accountId).digest().readUIntBE(0, 6);
}

function minBy<T>(items: T[], score: (item: T) => number): T {
  return items.reduce((best, item) => (score(item) < score(best) ? item : best));
}

export function upstreamUrl(account: Account, path: string): string {
  const { origin, path: fullPath } = upstreamTarget(account, path);
  return origin + fullPath;
}

/** Where a call to the API path `path` goes on `account`: the origin, and the full path there. */
export function upstreamTarget(account: Account, path: string): { origin: string; path: string } {
  // ChatGPT's Codex backend has no `/v1` segment: its base URL already ends at `/backend-api/codex`.
  return requestTarget(account.baseUrl, account.provider === 'chatgpt' ? path.replace(/^\/v1(?=\/)/, '') : path);
}

export function accountsOf(provider: ProviderName, config: ProviderConfig): Account[] {
  return config.accounts.map((a) => ({
    id: a.id,
    provider,
    baseUrl: (a.baseUrl ?? config.baseUrl).replace(/\/+$/, ''),
    // a mounted secret file is read once at start; rotate by restarting the replica
    secret: a.authFile ? '' : (a.apiKey ?? readFileSync(a.apiKeyFile!, 'utf8').trim()),
    oauth: Boolean(a.authFile),
    chatgptAccountId: a.accountId,
    organization: a.organization,
    project: a.project,
    headers: Object.fromEntries(Object.entries(a.headers ?? {}).map(([name, value]) => [name.toLowerCase(), value])),
    maxConcurrent: a.maxConcurrent,
  }));
}
