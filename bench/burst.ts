/**
 * Bursts and memory: many streams opened at once through one process (time to first byte, and how
 * long `GET /health/live` takes meanwhile), the RSS a held stream costs, and a replica's idle RSS.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as delay } from 'node:timers/promises';
import { Agent, request } from 'undici';
import { spawnTsChild } from './children.js';
import type { HttpTarget } from './env.js';
import { percentile, rssBytesOf, rssOf } from './measure.js';

export interface BurstResult {
  streams: number;
  completed: number;
  ttfbP50: number;
  ttfbP99: number;
  /** the slowest `GET /health/live` answer while the burst ran, ms (NaN: not watched) */
  healthWorstMs: number;
  healthSamples: number;
  wallMs: number;
}

/** Sequential `GET /health/live` on one kept-alive connection until `stop()`; the worst latency it saw. */
function watchHealth(target: HttpTarget): { stop(): Promise<{ worstMs: number; samples: number }> } {
  const agent = new Agent({ connections: 1, keepAliveTimeout: 60_000 });
  let running = true;
  let worstMs = 0;
  let samples = 0;
  // caught here and rethrown by stop(): a failed probe must not be an unhandled rejection meanwhile
  const loop = (async () => {
    while (running) {
      const start = performance.now();
      const res = await request(target.url + '/health/live', { dispatcher: agent });
      await res.body.text();
      if (res.statusCode !== 200) throw new Error(`/health/live answered ${res.statusCode}`);
      worstMs = Math.max(worstMs, performance.now() - start);
      samples += 1;
    }
  })().then(
    () => undefined,
    (err: unknown) => err,
  );
  return {
    async stop() {
      running = false;
      const failed = await loop;
      await agent.close();
      if (failed) throw failed;
      return { worstMs, samples };
    },
  };
}

/**
 * `streams` streamed requests sent at once (from a child process) while, if `watch`,
 * /health/live of the same process is watched.
 */
export async function burst(target: HttpTarget, path: string, body: object, streams: number, watch = true): Promise<BurstResult> {
  const health = watch ? watchHealth(target) : { stop: async () => ({ worstMs: NaN, samples: 0 }) };
  const [spawned] = await Promise.allSettled([
    spawnTsChild<{ ttfbMs: number[]; completed: number; failures: string[]; wallMs: number }>(
      `burst of ${streams}`,
      './burst-process.ts',
      {
        BENCH_BURST_URL: target.url + path,
        BENCH_BURST_N: String(streams),
        BENCH_BURST_HEADERS: JSON.stringify(target.headers),
        BENCH_BURST_BODY: JSON.stringify(body),
      },
      [],
      180_000,
    ),
  ]);
  const watched = await health.stop();
  if (spawned.status === 'rejected') throw spawned.reason;
  const outcome = spawned.value;
  await outcome.child.stop();
  const result = outcome.ready;
  if (result.completed !== streams) {
    throw new Error(`${streams - result.completed} of ${streams} streams failed: ${result.failures.slice(0, 3).join('; ')}`);
  }
  const sorted = Float64Array.from(result.ttfbMs).sort();
  return {
    streams,
    completed: result.completed,
    ttfbP50: percentile(sorted, 50),
    ttfbP99: percentile(sorted, 99),
    healthWorstMs: watched.worstMs,
    healthSamples: watched.samples,
    wallMs: result.wallMs,
  };
}

const MiB = 1024 * 1024;

/** Where an idle replica's memory is, MiB. */
export interface IdleMemory {
  rss: number;
  /** file-backed pages: the node binary's code and data, the shared libraries */
  file: number;
  /** anonymous pages: the V8 heap, the C allocator's memory, thread stacks */
  anon: number;
  /** the V8 heap as the replica's own /metrics reports it (prom-client's default metrics) */
  heapTotal: number;
  heapUsed: number;
  /** memory outside the V8 heap held by JS objects (Buffers) */
  external: number;
  /** each heap space's size (committed), by V8's space name: new, old, code, large_object… */
  spaces: Record<string, number>;
}

/** The samples of a Prometheus text exposition, by `name` or `name{labels}`. */
function samplesOf(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    const match = /^(\w+(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (match) samples.set(match[1]!, Number(match[2]));
  }
  return samples;
}

/**
 * The memory of an idle replica, read after `settleMs` without requests: RSS (and its file-backed
 * and anonymous parts) from /proc, then the heap from the replica's /metrics (read second: the
 * scrape allocates).
 */
export async function idleMemoryOf(target: HttpTarget, settleMs = 1_000): Promise<IdleMemory> {
  await delay(settleMs);
  const rss = rssOf(target.pid);
  if (!rss) throw new Error('RSS not readable (not Linux?)');
  if (!target.internalUrl) throw new Error('idle memory: the target has no internal listener (/metrics)');
  const res = await request(target.internalUrl + '/metrics');
  const samples = samplesOf(await res.body.text());
  const metric = (name: string) => {
    const value = samples.get(name);
    if (value === undefined) throw new Error(`idle memory: /metrics has no ${name}`);
    return value / MiB;
  };
  const spaces: Record<string, number> = {};
  for (const [name, value] of samples) {
    const space = /^nodejs_heap_space_size_total_bytes\{space="(\w+)"\}$/.exec(name)?.[1];
    if (space && value > 0) spaces[space] = value / MiB;
  }
  return {
    rss: rss.rss / MiB,
    file: rss.file / MiB,
    anon: rss.anon / MiB,
    heapTotal: metric('nodejs_heap_size_total_bytes'),
    heapUsed: metric('nodejs_heap_size_used_bytes'),
    external: metric('nodejs_external_memory_bytes'),
    spaces,
  };
}

export interface HeldResult {
  /** streams per step: `streams` held first, then `streams` more */
  streams: number;
  /** RSS with the first `streams` held, and with twice as many */
  rssFirstMiB: number;
  rssBothMiB: number;
  kibPerStream: number;
}

/**
 * RSS per held stream: the mock holds every stream after its first event. `streams` are opened
 * through the target, then `streams` more; each step's RSS is read once every stream has its first
 * byte (and again after `settleMs`, the larger counts). The cost per stream is the second step's
 * growth: the first step also pays the process's own warm-up (compiled code, heap growth), which
 * is not a per-stream cost.
 */
export async function heldStreams(target: HttpTarget, mock: HttpTarget, path: string, body: object, streams: number, settleMs = 1_000): Promise<HeldResult> {
  await request(mock.controlUrl + '/hold', { method: 'POST' }).then((res) => res.body.dump());
  const agent = new Agent({ connections: null, connectTimeout: 120_000, headersTimeout: 120_000, bodyTimeout: 120_000 });
  const ends: Promise<void>[] = [];
  /** opens `count` streams; resolves with the target's RSS once all of them are held */
  const hold = async (count: number): Promise<number> => {
    const firstBytes: Promise<void>[] = [];
    for (let i = 0; i < count; i++) {
      let gotFirst!: () => void;
      let failed!: (err: unknown) => void;
      firstBytes.push(new Promise<void>((resolve, reject) => ((gotFirst = resolve), (failed = reject))));
      ends.push(
        (async () => {
          const res = await request(target.url + path, {
            dispatcher: agent,
            method: 'POST',
            headers: { 'content-type': 'application/json', ...target.headers },
            body: JSON.stringify(body),
          });
          if (res.statusCode !== 200) throw new Error(`answered ${res.statusCode}`);
          for await (const _chunk of res.body) gotFirst();
        })().catch((err: unknown) => {
          failed(err);
          throw err;
        }),
      );
    }
    await Promise.all(firstBytes);
    const rssNow = rssBytesOf(target.pid)!;
    await delay(settleMs);
    return Math.max(rssNow, rssBytesOf(target.pid)!);
  };
  try {
    const rssFirst = await hold(streams);
    const rssBoth = await hold(streams);
    return { streams, rssFirstMiB: rssFirst / MiB, rssBothMiB: rssBoth / MiB, kibPerStream: (rssBoth - rssFirst) / 1024 / streams };
  } finally {
    await request(mock.controlUrl + '/release', { method: 'POST' }).then((res) => res.body.dump());
    await Promise.allSettled(ends);
    await agent.close();
  }
}
