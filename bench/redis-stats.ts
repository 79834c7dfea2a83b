/**
 * Redis's own side of a load run, from `INFO` before and after: its CPU time and the commands it
 * processed, per gateway request. Commands are an upper bound on round trips (a pipeline of n
 * commands is one round trip; the gateway's hot path uses scripts, one command per round trip).
 */
import { Redis } from 'ioredis';

export interface RedisSnapshot {
  cpuSeconds: number;
  commands: number;
  /** calls per command name (`INFO commandstats`) */
  calls: Map<string, number>;
}

export interface RedisPerRequest {
  cpuMicros: number;
  commands: number;
  /** e.g. "evalsha 1.00, get 0.01": the commands that make up `commands` */
  breakdown: string;
}

function field(info: string, name: string): number {
  const match = new RegExp(`^${name}:([\\d.]+)`, 'm').exec(info);
  if (!match) throw new Error(`INFO has no ${name}`);
  return Number(match[1]);
}

export async function redisSnapshot(url: string): Promise<RedisSnapshot> {
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await client.connect();
    const info = await client.info('all');
    const calls = new Map<string, number>();
    for (const match of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) calls.set(match[1], Number(match[2]));
    // INFO itself counts as a command of the snapshot's own: taken out below by the diff of two snapshots
    return { cpuSeconds: field(info, 'used_cpu_sys') + field(info, 'used_cpu_user'), commands: field(info, 'total_commands_processed'), calls };
  } finally {
    client.disconnect();
  }
}

/** Redis's CPU µs and commands per request between two snapshots (one INFO of ours is not counted). */
export function redisPerRequest(before: RedisSnapshot, after: RedisSnapshot, requests: number): RedisPerRequest {
  const own = new Set(['info', 'client|setinfo', 'client']);
  const parts: [string, number][] = [];
  let ownCalls = 0;
  for (const [name, calls] of after.calls) {
    const delta = calls - (before.calls.get(name) ?? 0);
    if (delta <= 0) continue;
    if (own.has(name)) ownCalls += delta;
    else parts.push([name, delta / requests]);
  }
  parts.sort((a, b) => b[1] - a[1]);
  return {
    cpuMicros: ((after.cpuSeconds - before.cpuSeconds) * 1e6) / requests,
    commands: (after.commands - before.commands - ownCalls) / requests,
    breakdown: parts.map(([name, perRequest]) => `${name} ${perRequest.toFixed(2)}`).join(', ') || 'none',
  };
}
