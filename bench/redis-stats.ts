/**
 * Redis's own side of a load run, from `INFO` before and after: its CPU time per gateway request.
 * And the commands clients sent per request, watched with MONITOR over a few sequential requests
 * (MONITOR costs Redis CPU, so not during the load run): a script is one command there, what it
 * runs inside is not counted. A client command is one round trip unless pipelined with others.
 */
import { Redis } from 'ioredis';

export interface RedisSnapshot {
  cpuSeconds: number;
}

export interface RedisPerRequest {
  cpuMicros: number;
  /** commands clients sent (not those scripts ran), per request */
  commands: number;
  /** e.g. "evalsha 1.00, hgetall 0.01": the commands that make up `commands` */
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
    const info = await client.info('cpu');
    return { cpuSeconds: field(info, 'used_cpu_sys') + field(info, 'used_cpu_user') };
  } finally {
    client.disconnect();
  }
}

/** Redis's CPU µs per request between two snapshots. */
export function redisCpuPerRequest(before: RedisSnapshot, after: RedisSnapshot, requests: number): number {
  return ((after.cpuSeconds - before.cpuSeconds) * 1e6) / requests;
}

/** MONITOR while `work` runs (which returns how many gateway requests it made): client commands per request. */
export async function clientCommandsPerRequest(url: string, work: () => Promise<number>): Promise<{ commands: number; breakdown: string }> {
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await client.connect();
  const monitor = await client.monitor();
  const calls = new Map<string, number>();
  monitor.on('monitor', (_time: string, args: string[], source: string) => {
    if (source === 'lua') return; // run by a script, not sent by a client
    const name = String(args[0]).toLowerCase();
    if (name === 'multi' || name === 'exec') return; // the commands between them are counted
    calls.set(name, (calls.get(name) ?? 0) + 1);
  });
  try {
    const requests = await work();
    // MONITOR lines arrive after the replies they describe: one PING of ours marks the end
    const marker = new Redis(url, { maxRetriesPerRequest: 1 });
    const seen = new Promise<void>((resolve) =>
      monitor.on('monitor', (_time: string, args: string[]) => String(args[0]).toLowerCase() === 'echo' && args[1] === 'bench-end' && resolve()),
    );
    await marker.echo('bench-end');
    await seen;
    marker.disconnect();
    for (const own of ['echo', 'info', 'client', 'ping']) calls.delete(own);
    const parts = [...calls].sort((a, b) => b[1] - a[1]);
    const total = parts.reduce((sum, [, n]) => sum + n, 0);
    return {
      commands: total / requests,
      breakdown: parts.map(([name, n]) => `${name} ${(n / requests).toFixed(2)}`).join(', ') || 'none',
    };
  } finally {
    monitor.disconnect();
    client.disconnect();
  }
}
