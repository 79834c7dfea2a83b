/**
 * `npm run bench:profile`: where the gateway's CPU per request goes, next to the bare proxy's.
 * Both run under the same closed-loop load (small Responses request) with V8's CPU profiler on;
 * their main-thread profiles are then summed by where each sample was (a package, a gateway
 * source file, a Node internal module, or native work such as the `writev` syscall or GC) and
 * divided by the requests each served. Idle time and module loading are left out.
 *
 * Env: BENCH_SECONDS (per target, default 10), BENCH_CONNECTIONS (20), BENCH_PROFILE_ROWS (30),
 * BENCH_PROFILE_TARGETS (gateways to compare with the bare proxy: "memory" (default), "redis").
 * The profiler's own cost inflates every figure alike; read them as a breakdown, not as the
 * bench's CPU per request.
 */
import { mkdtempSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { installCleanup, stopAllChildren } from './children.js';
import { BenchEnv, INTERNAL_SECRET, type HttpTarget } from './env.js';
import { load, preflight } from './measure.js';
import { table } from './report.js';
import { RESPONSES_PATH, SMALL_BODY } from './scenarios.js';

interface CallFrame {
  functionName: string;
  url: string;
}
interface CpuProfile {
  nodes: { id: number; callFrame: CallFrame; children?: number[] }[];
  samples: number[];
  timeDeltas: number[];
}

const seconds = Number(process.env.BENCH_SECONDS || 10);
const connections = Number(process.env.BENCH_CONNECTIONS || 20);
const rows = Number(process.env.BENCH_PROFILE_ROWS || 30);
const gatewayNames = (process.env.BENCH_PROFILE_TARGETS || 'memory').split(',');

/** Where a sample's time was spent, at the granularity that says who to ask for less. */
function placeOf(frame: CallFrame): string {
  const { url, functionName } = frame;
  if (!url) return `(${functionName || 'native'})`;
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
  if (pkg) return `npm: ${pkg[1]}`;
  const own = /\/dist\/(.+)\.js$/.exec(url);
  if (own) return `src/${own[1]}.ts`;
  if (url.startsWith('node:')) return url.replace(/^node:(internal\/)?/, 'node: ');
  return url.replace(/^.*\/bench\//, 'bench/');
}

/** Busy µs per place, from the biggest profile in `dir` (the main thread's). */
function busyByPlace(dir: string): Map<string, number> {
  const files = readdirSync(dir).map((f) => join(dir, f));
  const main = files.sort((a, b) => statSync(b).size - statSync(a).size)[0];
  if (!main) throw new Error(`no CPU profile in ${dir}`);
  const profile = JSON.parse(readFileSync(main, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parentOf = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parentOf.set(child, node.id);
  const loading = new Map<number, boolean>();
  const isLoading = (id: number): boolean => {
    const known = loading.get(id);
    if (known !== undefined) return known;
    const url = byId.get(id)!.callFrame.url;
    const parent = parentOf.get(id);
    const value = url.startsWith('node:internal/modules/') || (parent !== undefined && isLoading(parent));
    loading.set(id, value);
    return value;
  };
  const places = new Map<string, number>();
  profile.samples.forEach((id, i) => {
    const frame = byId.get(id)!.callFrame;
    if (frame.functionName === '(idle)' || isLoading(id)) return;
    const place = placeOf(frame);
    places.set(place, (places.get(place) ?? 0) + (profile.timeDeltas[i] ?? 0));
  });
  return places;
}

async function profiled(name: string, target: () => Promise<HttpTarget>, dir: string): Promise<{ name: string; dir: string; requests: number }> {
  const t = await target();
  await preflight(t, RESPONSES_PATH, SMALL_BODY);
  process.stderr.write(`bench:profile: ${name}: ${seconds} s, ${connections} connections\n`);
  const result = await load(t, RESPONSES_PATH, SMALL_BODY, { seconds, warmupSeconds: 0, connections });
  return { name, dir, requests: result.total + 1 };
}

installCleanup();
const profileDir = mkdtempSync(join(tmpdir(), 'tollgate-profile-'));
process.env.BENCH_CPU_PROFILE_DIR = profileDir;
const env = new BenchEnv();
const withRedis = async (e: BenchEnv) => ({ server: { instanceId: 'profile' }, redis: { url: await e.redis() }, internalSecret: INTERNAL_SECRET });
try {
  const runs = [await profiled('Bare Fastify+undici proxy', () => env.floor(), join(profileDir, 'floor'))];
  for (const name of gatewayNames) {
    if (name !== 'memory' && name !== 'redis') throw new Error(`BENCH_PROFILE_TARGETS: unknown gateway "${name}"`);
    runs.push(await profiled(`Gateway, ${name} store`, () => env.gateway(name, name === 'redis' ? withRedis : undefined), join(profileDir, `gateway-${name}`)));
  }
  // profiles are written when the processes exit
  await stopAllChildren();
  const perRequest = runs.map((run) => {
    const places = busyByPlace(run.dir);
    return new Map([...places].map(([place, micros]) => [place, micros / run.requests]));
  });
  const [floor, ...gateways] = perRequest;
  const total = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);
  const places = new Set(perRequest.flatMap((m) => [...m.keys()]));
  const extra = (place: string) => Math.max(...gateways.map((g) => (g.get(place) ?? 0) - (floor!.get(place) ?? 0)));
  const ordered = [...places].sort((a, b) => extra(b) - extra(a));
  const cell = (value: number | undefined) => (value ?? 0).toFixed(1);
  const body = ordered.slice(0, rows).map((place) => [place, ...perRequest.map((m) => cell(m.get(place)))]);
  body.push(['(everything)', ...perRequest.map((m) => cell(total(m)))]);
  const own = (m: Map<string, number>) => [...m].filter(([place]) => place.startsWith('src/')).reduce((a, [, v]) => a + v, 0);
  body.push(["(the gateway's own source files)", ...perRequest.map((m) => cell(own(m)))]);
  console.log(`CPU per request by where it was spent, µs (busy samples; idle and module loading left out), ${seconds} s closed loop, ${connections} connections, POST ${RESPONSES_PATH} ${JSON.stringify(SMALL_BODY)}`);
  console.log(`Rows: the ${rows} places where a gateway spends most more than the bare proxy, then totals. Profiles: ${profileDir}\n`);
  console.log(table(['where', ...runs.map((r) => `${r.name} (${r.requests} req)`)], body));
} finally {
  await stopAllChildren();
}
process.exit(0);
