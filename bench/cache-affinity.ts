/**
 * The prompt-cache scenario: 10 conversations of 30 turns, each turn on the next of 3 Redis
 * replicas with 3 accounts each, once with affinity (`openai`, Chat Completions) and once
 * without (`chatgpt` with `affinity: false`, the Codex path). The mock reports cached input only
 * when the account served the conversation's previous call, so the hit ratio is what routing
 * achieved; ideal is every turn after a conversation's first.
 */
import { request } from 'undici';
import { INTERNAL_SECRET, type BenchEnv, type HttpTarget } from './env.js';

export const CONVERSATIONS = 10;
export const TURNS = 30;
const REPLICAS = ['a', 'b', 'c'];

const accounts = (prefix: string) => [1, 2, 3].map((n) => ({ id: `${prefix}-${n}`, apiKey: `sk-bench-${prefix}-${n}-${'x'.repeat(24)}` }));

function replica(env: BenchEnv, name: string): Promise<HttpTarget> {
  return env.gateway(`cache-${name}`, async (env) => {
    const mockUrl = (await env.mock()).url;
    return {
      server: { instanceId: `bench-cache-${name}` },
      redis: { url: await env.redis() },
      internalSecret: INTERNAL_SECRET,
      providers: {
        openai: { baseUrl: mockUrl, accounts: accounts('oa') },
        chatgpt: { baseUrl: mockUrl, affinity: false, accounts: accounts('cg') },
      },
    };
  });
}

export interface CacheRun {
  label: string;
  hits: number;
  ideal: number;
}

interface Variant {
  label: string;
  path: string;
  body(conversation: string, turn: number): object;
  cachedTokens(json: Record<string, any>): number;
}

const VARIANTS: Variant[] = [
  {
    label: 'affinity on (rendezvous)',
    path: '/v1/chat/completions',
    body: (conversation, turn) => ({ model: 'gpt-5', prompt_cache_key: conversation, messages: [{ role: 'user', content: `turn ${turn}` }] }),
    cachedTokens: (json) => json.usage?.prompt_tokens_details?.cached_tokens ?? 0,
  },
  {
    label: 'affinity off (round robin)',
    path: '/backend-api/codex/responses',
    body: (conversation, turn) => ({ model: 'gpt-5', prompt_cache_key: conversation, input: `turn ${turn}` }),
    cachedTokens: (json) => json.usage?.input_tokens_details?.cached_tokens ?? 0,
  },
];

/** Runs both variants; a turn counts as a hit when its response reports cached input. */
export async function runCacheAffinity(env: BenchEnv): Promise<CacheRun[]> {
  const targets = await Promise.all(REPLICAS.map((name) => replica(env, name)));
  const runs: CacheRun[] = [];
  for (const variant of VARIANTS) {
    const tag = `${variant.label}-${Date.now()}`;
    let hits = 0;
    await Promise.all(
      Array.from({ length: CONVERSATIONS }, async (_, c) => {
        for (let turn = 0; turn < TURNS; turn++) {
          const target = targets[(c + turn) % targets.length]!;
          const res = await request(target.url + variant.path, {
            method: 'POST',
            headers: { ...target.headers, 'content-type': 'application/json' },
            body: JSON.stringify(variant.body(`${tag}-${c}`, turn)),
          });
          const json = (await res.body.json()) as Record<string, any>;
          if (res.statusCode !== 200) throw new Error(`${variant.path} answered ${res.statusCode}: ${JSON.stringify(json)}`);
          if (variant.cachedTokens(json) > 0) hits++;
        }
      }),
    );
    runs.push({ label: variant.label, hits, ideal: CONVERSATIONS * (TURNS - 1) });
  }
  return runs;
}
