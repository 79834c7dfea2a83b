/**
 * Child process: one burst — `BENCH_BURST_N` streamed requests (`BENCH_BURST_BODY`, with
 * `BENCH_BURST_HEADERS`) sent to `BENCH_BURST_URL` in the same tick, each on its own connection,
 * every body read to its end. Runs apart from the bench process so that the /health/live probe
 * the bench runs meanwhile is not delayed by the burst's own client work.
 * Prints `BENCH_READY {"ttfbMs": [...], "completed": n, "failures": [...]}` once every request has ended.
 */
import { performance } from 'node:perf_hooks';
import { Agent, request } from 'undici';
import { announceReady } from './child-support.js';

const url = process.env.BENCH_BURST_URL!;
const count = Number(process.env.BENCH_BURST_N);
const headers = JSON.parse(process.env.BENCH_BURST_HEADERS ?? '{}') as Record<string, string>;
const body = process.env.BENCH_BURST_BODY!;

// no limit on connections: every request of the burst opens its own, as separate clients would
const agent = new Agent({ connections: null, pipelining: 1, connectTimeout: 120_000, headersTimeout: 120_000, bodyTimeout: 120_000 });

async function one(start: number): Promise<number> {
  const res = await request(url, { dispatcher: agent, method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
  let firstByte: number | undefined;
  for await (const _chunk of res.body) firstByte ??= performance.now();
  if (res.statusCode !== 200) throw new Error(`answered ${res.statusCode}`);
  if (firstByte === undefined) throw new Error('empty body');
  return firstByte - start;
}

const start = performance.now();
const outcomes = await Promise.allSettled(Array.from({ length: count }, () => one(start)));
const ttfbMs = outcomes.flatMap((o) => (o.status === 'fulfilled' ? [o.value] : []));
const failures = [...new Set(outcomes.flatMap((o) => (o.status === 'rejected' ? [String((o.reason as Error).message ?? o.reason)] : [])))];
announceReady({ ttfbMs, completed: ttfbMs.length, failures, wallMs: performance.now() - start });
await agent.close();
process.exit(0);
