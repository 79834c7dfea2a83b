import type { Config } from '../config/schema.js';
import { MemoryStore } from './memory.js';
import type { Store } from './types.js';

export type { Store } from './types.js';

/** The only place that decides which store runs. */
export async function createStore(config: Config): Promise<Store> {
  if (!config.redis.url) return new MemoryStore();
  const { RedisStore } = await import('./redis.js');
  const { url, sentinels, sentinelName, cluster, keyPrefix } = config.redis;
  return RedisStore.connect(url, { sentinels, sentinelName, cluster, keyPrefix });
}
