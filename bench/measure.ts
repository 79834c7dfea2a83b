/**
 * The two measurements: closed-loop load with autocannon (throughput + latency under load) and
 * sequential single requests with undici (latency without load, e.g. SSE time to first byte).
 */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import autocannon from 'autocannon';
import { Agent, request } from 'undici';
import type { HttpTarget } from './env.js';
import { clientCommandsPerRequest, redisCpuPerRequest, redisSnapshot, type RedisPerRequest } from './redis-stats.js';

export interface LoadSettings {
  connections: number;
  warmupSeconds: number;
  seconds: number;
}

export interface LoadResult {
  requestsPerSec: number;
  total: number;
  /** ms, from our own per-response samples (autocannon's histogram has 1 ms resolution) */
  p50: number;
  p99: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  /** CPU time (user + system) the serving process spent per request, µs; undefined off Linux */
  cpuMicrosPerRequest?: number;
  /** Redis's own CPU and commands per request, for a gateway on Redis */
  redis?: RedisPerRequest;
}

export interface LatencyResult {
  p50: number;
  p99: number;
  samples: number;
}

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

/** Linux: CPU seconds (user + system) a process has used so far, from /proc; undefined elsewhere. */
export function cpuSecondsOf(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // fields after the parenthesized command name (which may hold spaces): state is field 3
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]); // utime (14) + stime (15)
    return Number.isFinite(ticks) ? ticks / CLOCK_TICKS_PER_SECOND : undefined;
  } catch {
    return undefined;
  }
}
/** Linux: resident set size of a process in bytes, from /proc; undefined elsewhere. */
/** `VmRSS`, `RssFile` and `RssAnon` of `/proc/<pid>/status`, bytes (Linux); undefined when unreadable. */
export function rssOf(pid: number | undefined): { rss: number; file: number; anon: number } | undefined {
  if (pid === undefined) return undefined;
  let status: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
  const rss = kib('VmRSS');
  return Number.isNaN(rss) ? undefined : { rss, file: kib('RssFile'), anon: kib('RssAnon') };
}

export function rssBytesOf(pid: number | undefined): number | undefined {
  return rssOf(pid)?.rss;
}

/** USER_HZ: 100 on every mainstream Linux build */
const CLOCK_TICKS_PER_SECOND = 100;

function sortedSamples(samples: number[]): Float64Array {
  return Float64Array.from(samples).sort();
}

/** One POST, checked: a misconfigured target fails here with its answer, not as a fast 401 load test. */
export async function preflight(target: HttpTarget, path: string, body: object): Promise<void> {
  const res = await request(target.url + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...target.headers },
    body: JSON.stringify(body),
  });
  const text = await res.body.text();
  if (res.statusCode !== 200) throw new Error(`preflight ${path} answered ${res.statusCode}: ${text.slice(0, 300)}`);
}

function runAutocannon(opts: autocannon.Options, onLatency?: (ms: number) => void): Promise<autocannon.Result> {
  return new Promise((resolve, reject) => {
    const instance = autocannon(opts, (err: unknown, result: autocannon.Result) => (err ? reject(err) : resolve(result)));
    if (onLatency) {
      instance.on('response', (_client, statusCode, _bytes, responseTime) => {
        if (statusCode >= 200 && statusCode < 300) onLatency(responseTime);
      });
    }
  });
}

/**
 * Warm-up (discarded), then the measured run, both with the same settings. With `redisUrl`,
 * Redis's own CPU and commands are measured over the measured run too.
 */
export async function load(target: HttpTarget, path: string, body: object, settings: LoadSettings, redisUrl?: string): Promise<LoadResult> {
  const base: autocannon.Options = {
    url: target.url + path,
    method: 'POST',
    headers: { 'content-type': 'application/json', ...target.headers },
    body: JSON.stringify(body),
    connections: settings.connections,
    pipelining: 1,
    // a 2 MB request on a busy machine may well take more than autocannon's default 10 s
    timeout: 30,
  };
  if (settings.warmupSeconds > 0) await runAutocannon({ ...base, duration: settings.warmupSeconds });
  const latencies: number[] = [];
  const redisBefore = redisUrl ? await redisSnapshot(redisUrl) : undefined;
  const cpuBefore = cpuSecondsOf(target.pid);
  const result = await runAutocannon({ ...base, duration: settings.seconds }, (ms) => latencies.push(ms));
  const cpuAfter = cpuSecondsOf(target.pid);
  const redisAfter = redisUrl ? await redisSnapshot(redisUrl) : undefined;
  const sorted = sortedSamples(latencies);
  const cpuMicrosPerRequest =
    cpuBefore !== undefined && cpuAfter !== undefined && result.requests.total > 0
      ? ((cpuAfter - cpuBefore) * 1e6) / result.requests.total
      : undefined;
  return {
    requestsPerSec: result.requests.average,
    total: result.requests.total,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    cpuMicrosPerRequest,
    redis:
      redisUrl && redisBefore && redisAfter
        ? {
            cpuMicros: redisCpuPerRequest(redisBefore, redisAfter, result.requests.total),
            ...(await clientCommandsPerRequest(redisUrl, () => concurrent(target, path, body, ROUND_TRIP_REQUESTS, settings.connections))),
          }
        : undefined,
  };
}

/** Requests whose Redis commands are counted (see redis-stats.ts). */
const ROUND_TRIP_REQUESTS = 200;

/** `count` requests over `connections` concurrent loops, each read to its end; returns `count`. */
async function concurrent(target: HttpTarget, path: string, body: object, count: number, connections: number): Promise<number> {
  const text = JSON.stringify(body);
  let left = count;
  const loop = async () => {
    while (left > 0) {
      left -= 1;
      const res = await request(target.url + path, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...target.headers },
        body: text,
      });
      await res.body.dump();
      if (res.statusCode !== 200) throw new Error(`${target.url}${path} answered ${res.statusCode}`);
    }
  };
  await Promise.all(Array.from({ length: Math.min(connections, count) }, loop));
  return count;
}

export type ProbeUntil = 'first-byte' | 'end';

export interface ProbeSpec {
  path: string;
  body: object;
  /** stop the clock at the first body byte (TTFB) or at the end of the body */
  until: ProbeUntil;
  /** the content type a correct answer has, e.g. text/event-stream */
  contentType: string;
  /** headers every request of the probe carries on top of the target's own, e.g. a session id */
  headers?: Record<string, string>;
}

/**
 * One checked request to each target, in order (the baseline first), before the warm-up: a
 * misconfigured target fails here, and state a probe relies on is set up in a known order
 * (e.g. the baseline's request makes it the owner of a bridge session).
 */
export async function probePreflight(targets: HttpTarget[], spec: ProbeSpec): Promise<void> {
  const body = JSON.stringify(spec.body);
  for (const target of targets) await oneRequest(target, undefined, spec, body);
}

/**
 * Sequential requests, one at a time over a keep-alive connection, alternating between the
 * targets so a slow moment of the machine hits all of them alike.
 */
export async function probe(targets: HttpTarget[], spec: ProbeSpec, warmup: number, samples: number): Promise<LatencyResult[]> {
  const agents = targets.map(() => new Agent({ connections: 1, keepAliveTimeout: 60_000 }));
  const times: number[][] = targets.map(() => []);
  const body = JSON.stringify(spec.body);
  try {
    for (let i = 0; i < warmup + samples; i++) {
      for (let t = 0; t < targets.length; t++) {
        const ms = await oneRequest(targets[t], agents[t], spec, body);
        if (i >= warmup) times[t].push(ms);
      }
    }
  } finally {
    await Promise.all(agents.map((agent) => agent.close()));
  }
  return times.map((list) => {
    const sorted = sortedSamples(list);
    return { p50: percentile(sorted, 50), p99: percentile(sorted, 99), samples: sorted.length };
  });
}

async function oneRequest(target: HttpTarget, dispatcher: Agent | undefined, spec: ProbeSpec, body: string): Promise<number> {
  const start = performance.now();
  const res = await request(target.url + spec.path, {
    dispatcher,
    method: 'POST',
    headers: { 'content-type': 'application/json', ...target.headers, ...spec.headers },
    body,
  });
  let stop: number | undefined;
  let received = '';
  for await (const chunk of res.body) {
    stop ??= spec.until === 'first-byte' ? performance.now() : undefined;
    if (res.statusCode !== 200) received += String(chunk);
  }
  const end = performance.now();
  const type = String(res.headers['content-type'] ?? '');
  if (res.statusCode !== 200 || !type.startsWith(spec.contentType)) {
    throw new Error(`${target.url}${spec.path} answered ${res.statusCode} (${type}): ${received.slice(0, 300)}`);
  }
  if (spec.until === 'first-byte' && stop === undefined) throw new Error(`${target.url}${spec.path} answered an empty body`);
  return (stop ?? end) - start;
}

/**
 * Sum of a Prometheus series in a gateway's `GET /metrics` on its internal listener (every line of
 * `name` whose labels include all of `labels`); 0 when no line matches (a counter not incremented yet).
 */
export async function metricValue(target: HttpTarget, name: string, labels: Record<string, string> = {}): Promise<number> {
  const metricsUrl = `${target.internalUrl ?? target.url}/metrics`;
  const res = await request(metricsUrl);
  const text = await res.body.text();
  if (res.statusCode !== 200) throw new Error(`${metricsUrl} answered ${res.statusCode}: ${text.slice(0, 300)}`);
  const wanted = Object.entries(labels).map(([label, value]) => `${label}="${value}"`);
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name) || (line[name.length] !== '{' && line[name.length] !== ' ')) continue;
    const labelText = line[name.length] === '{' ? line.slice(name.length + 1, line.indexOf('}')) : '';
    const present = labelText ? labelText.split(',') : [];
    if (!wanted.every((pair) => present.includes(pair))) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}
