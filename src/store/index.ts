import type { Config } from '../config/schema.js';
import { MemoryStore } from './memory.js';
import type { Store } from './types.js';

export type { Store } from './types.js';

/** The only place that decides which store runs. */
export async function createStore(config: Config): Promise<Store> {
  const historyRetentionMs = config.usage.historyRetentionDays * 24 * 3_600_000;
  if (!config.redis.url) return new MemoryStore({ historyRetentionMs });
  const { RedisStore } = await import('./redis.js');
  const { url, sentinels, sentinelName, cluster, keyPrefix } = config.redis;
  return RedisStore.connect(url, { sentinels, sentinelName, cluster, keyPrefix, historyRetentionMs });
}
