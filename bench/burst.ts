/**
 * Bursts and memory: many streams opened at once through one process (time to first byte, and how
 * long `GET /health/live` takes meanwhile), the RSS a held stream costs, and a replica's idle RSS.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as delay } from 'node:timers/promises';
import { Agent, request } from 'undici';
import { spawnTsChild } from './children.js';
import type { HttpTarget } from './env.js';
import { percentile, rssBytesOf } from './measure.js';

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

/** RSS of an idle process, read after `settleMs` without requests. */
export async function idleRss(target: HttpTarget, settleMs = 1_000): Promise<number> {
  await delay(settleMs);
  const rss = rssBytesOf(target.pid);
  if (rss === undefined) throw new Error('RSS not readable (not Linux?)');
  return rss / MiB;
}

export interface HeldResult {
  streams: number;
  rssBeforeMiB: number;
  rssHeldMiB: number;
  kibPerStream: number;
}

/**
 * RSS per held stream: the mock holds every stream after its first event; `streams` of them are
 * opened through the target and the target's RSS is read once every one has its first byte
 * (and again after `settleMs`, the larger of the two counts), against its RSS before.
 */
export async function heldStreams(target: HttpTarget, mock: HttpTarget, path: string, body: object, streams: number, settleMs = 1_000): Promise<HeldResult> {
  const rssBefore = rssBytesOf(target.pid)!;
  await request(mock.controlUrl + '/hold', { method: 'POST' }).then((res) => res.body.dump());
  const agent = new Agent({ connections: null, connectTimeout: 120_000, headersTimeout: 120_000, bodyTimeout: 120_000 });
  const ends: Promise<void>[] = [];
  try {
    const firstBytes: Promise<void>[] = [];
    for (let i = 0; i < streams; i++) {
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
    const rssFirst = rssBytesOf(target.pid)!;
    await delay(settleMs);
    const rssHeld = Math.max(rssFirst, rssBytesOf(target.pid)!);
    return {
      streams,
      rssBeforeMiB: rssBefore / MiB,
      rssHeldMiB: rssHeld / MiB,
      kibPerStream: (rssHeld - rssBefore) / 1024 / streams,
    };
  } finally {
    await request(mock.controlUrl + '/release', { method: 'POST' }).then((res) => res.body.dump());
    await Promise.allSettled(ends);
    await agent.close();
  }
}
