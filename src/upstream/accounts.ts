import { readFileSync } from 'node:fs';
import type { ProviderConfig, ProviderName, Strategy } from '../config/schema.js';
import type { AccountState } from '../store/types.js';

export interface Account {
  id: string;
  provider: ProviderName;
  baseUrl: string;
  secret: string;
  chatgptAccountId?: string;
  /** OpenAI: `OpenAI-Organization` / `OpenAI-Project` */
  organization?: string;
  project?: string;
  /** extra upstream headers from config, lowercase names */
  headers: Record<string, string>;
}

/** What selection may look at: shared state from the store plus this replica's own counters. */
export interface Candidate {
  account: Account;
  state: AccountState;
  inFlight: number;
  recentTokens: number;
}

export type Unavailability = { reason: 'cooldown'; until: number } | { reason: 'disabled' };

export function unavailability(state: AccountState, now: number): Unavailability | null {
  if (state.disabled) return { reason: 'disabled' };
  if (state.cooldownUntil && state.cooldownUntil > now) return { reason: 'cooldown', until: state.cooldownUntil };
  return null;
}

/**
 * Account selection as a pure function of the candidates (in config order, already filtered to
 * usable ones) and a rotating cursor for round robin.
 */
export function pickAccount(strategy: Strategy, candidates: Candidate[], cursor: number): Candidate | undefined {
  if (candidates.length === 0) return undefined;
  switch (strategy) {
    case 'round_robin':
      return candidates[cursor % candidates.length];
    case 'fill_first':
      return candidates[0];
    case 'least_in_flight':
      return minBy(candidates, (c) => c.inFlight);
    case 'usage_weighted':
      return minBy(candidates, (c) => c.recentTokens);
  }
}

function minBy<T>(items: T[], score: (item: T) => number): T {
  return items.reduce((best, item) => (score(item) < score(best) ? item : best));
}

export function upstreamUrl(account: Account, path: string): string {
  // ChatGPT's Codex backend has no `/v1` segment: its base URL already ends at `/backend-api/codex`.
  return account.baseUrl + (account.provider === 'chatgpt' ? path.replace(/^\/v1(?=\/)/, '') : path);
}

export function accountsOf(provider: ProviderName, config: ProviderConfig): Account[] {
  return config.accounts.map((a) => ({
    id: a.id,
    provider,
    baseUrl: (a.baseUrl ?? config.baseUrl).replace(/\/+$/, ''),
    // a mounted secret file is read once at start; rotate by restarting the replica
    secret: a.apiKey ?? readFileSync(a.apiKeyFile!, 'utf8').trim(),
    chatgptAccountId: a.accountId,
    organization: a.organization,
    project: a.project,
    headers: Object.fromEntries(Object.entries(a.headers ?? {}).map(([name, value]) => [name.toLowerCase(), value])),
  }));
}
