/**
 * What scenarios run against: one mock upstream and any number of gateway variants in front of
 * it, each in its own child process, started on first use and shared by every scenario after.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateKey } from '../src/auth/keys.js';
import { startRedis } from '../test/support/redis.js';
import { spawnChild, spawnTsChild, startTracked } from './children.js';

/** Where a scenario sends its requests. */
export interface HttpTarget {
  /** base URL, no trailing slash */
  url: string;
  /** headers every request carries (auth) */
  headers: Record<string, string>;
  /** the process that serves it (mock or gateway), whose CPU time per request is reported */
  pid?: number;
  /** a gateway's internal listener, where its /metrics is */
  internalUrl?: string;
  /** the mock's control listener (stream hold), see mock-process.ts */
  controlUrl?: string;
  /** stops the serving process (only targets that are started for one measurement) */
  stop?: () => Promise<void>;
}

/**
 * Raw config (the YAML file's shape) merged over the default bench gateway config: objects are
 * merged key by key (so `{ server: { instanceId } }` keeps the default listeners), anything
 * else (arrays included) replaces the default.
 */
export type GatewayConfigPatch = (env: BenchEnv) => Promise<Record<string, unknown>>;

/** a gateway may take this long to start on a machine busy with other work */
const START_TIMEOUT_MS = 60_000;

export const UPSTREAM_SECRET = 'sk-bench-upstream-' + 'x'.repeat(24);
/** ≥16 chars, required with a Redis store */
export const INTERNAL_SECRET = 'bench-internal-secret-0123456789';

export class BenchEnv {
  /** one proxy key, seeded into every gateway through its config */
  readonly key = generateKey();
  /** a second key, with limits (never reached), for the Redis round trips of a key with limits */
  readonly limitedKey = generateKey();
  private mockTarget?: Promise<HttpTarget>;
  private floorTarget?: Promise<HttpTarget>;
  private rawFloorTarget?: Promise<HttpTarget>;
  private redisUrl?: Promise<string>;
  private readonly gateways = new Map<string, Promise<HttpTarget>>();

  /** The mock upstream, called directly (no auth needed). */
  mock(): Promise<HttpTarget> {
    this.mockTarget ??= spawnTsChild<{ url: string; controlUrl: string }>('mock upstream', './mock-process.ts').then(({ child, ready }) => ({
      url: ready.url,
      controlUrl: ready.controlUrl,
      headers: {},
      pid: child.proc.pid,
    }));
    return this.mockTarget;
  }

  /** The bare Fastify + undici pass-through proxy in front of the mock: the stack's floor. */
  floor(): Promise<HttpTarget> {
    this.floorTarget ??= this.mock().then((mock) => passThrough('floor proxy', './floor-process.ts', mock, {}, 'floor'));
    return this.floorTarget;
  }

  /**
   * A bare proxy (the floor's process) in front of `target`, passing `headers` on: what one extra
   * hop costs in this stack, without anything a gateway does. Started per call.
   */
  bareHopTo(name: string, target: HttpTarget, headers: string[]): Promise<HttpTarget> {
    return passThrough(name, './floor-process.ts', target, { BENCH_PASS_HEADERS: ['content-type', ...headers].join(',') });
  }

  /** The framework-free pass-through (`node:http` + undici `dispatch`) in front of the mock; see raw-floor-process.ts. */
  rawFloor(): Promise<HttpTarget> {
    this.rawFloorTarget ??= this.mock().then((mock) => passThrough('raw proxy', './raw-floor-process.ts', mock, {}, 'raw-floor'));
    return this.rawFloorTarget;
  }

  /** A throwaway redis-server (the tests' helper), stopped with the children at the end. */
  redis(): Promise<string> {
    this.redisUrl ??= startTracked(startRedis, (redis) => redis.stop()).then((redis) => redis.url);
    return this.redisUrl;
  }

  /** The gateway variant `name` (built once) in front of the mock, with the proxy key as Bearer. */
  gateway(name: string, patch?: GatewayConfigPatch): Promise<HttpTarget> {
    let target = this.gateways.get(name);
    if (!target) {
      target = this.startGateway(name, patch);
      this.gateways.set(name, target);
    }
    return target;
  }

  /** The raw config of a bench gateway: the defaults below with `patch` merged over them. */
  private async gatewayConfig(patch?: GatewayConfigPatch): Promise<Record<string, unknown>> {
    const mock = await this.mock();
    // internalHost 127.0.0.1: the advertise URL (how another replica reaches this one's internal
    // port, for owner forwarding) defaults to the internal listener's own URL
    const defaults = {
      server: { host: '127.0.0.1', port: 0, internalHost: '127.0.0.1', internalPort: 0 },
      providers: { openai: { baseUrl: mock.url, accounts: [{ id: 'bench-openai-1', apiKey: UPSTREAM_SECRET }] } },
      keys: [
        { id: this.key.id, name: 'bench', sha256: this.key.sha256 },
        {
          id: this.limitedKey.id,
          name: 'bench-limited',
          sha256: this.limitedKey.sha256,
          limits: [
            { limit_type: 'requests', limit_window: 'daily', max_value: 1_000_000_000 },
            { limit_type: 'total_tokens', limit_window: 'monthly', max_value: 1_000_000_000_000 },
          ],
        },
      ],
    };
    return mergeConfig(defaults, (await patch?.(this)) ?? {});
  }

  private async startGateway(name: string, patch?: GatewayConfigPatch): Promise<HttpTarget> {
    const raw = await this.gatewayConfig(patch);
    const nodeArgs = [...profileArgs(`gateway-${name}`), ...(process.env.BENCH_GATEWAY_NODE_ARGS ?? '').split(' ').filter(Boolean)];
    const { child, ready } = await spawnTsChild<{ publicUrl: string; internalUrl: string }>(
      `gateway (${name})`,
      './gateway-process.ts',
      { BENCH_GATEWAY_CONFIG: JSON.stringify(raw) },
      nodeArgs,
      START_TIMEOUT_MS,
    );
    return this.gatewayTarget(ready, child);
  }

  /**
   * A replica started as production starts it (`node dist/main.js`, config file, logs on stdout,
   * no tsx loader in the process), for one measurement, stopped after it: idle RSS, held streams.
   */
  async freshReplica(name: string, patch?: GatewayConfigPatch): Promise<HttpTarget> {
    const file = join(mkdtempSync(join(tmpdir(), 'tollgate-bench-')), `${name}.yaml`);
    writeFileSync(file, JSON.stringify(await this.gatewayConfig(patch))); // JSON is YAML
    const { child, ready } = await spawnChild<{ publicUrl: string; internalUrl: string }>({
      name: `replica (${name})`,
      command: process.execPath,
      args: [fileURLToPath(new URL('../dist/main.js', import.meta.url))],
      env: { TOLLGATE_CONFIG: file },
      timeoutMs: START_TIMEOUT_MS,
      ready: (line) => {
        if (!line.includes('"tollgate listening"')) return undefined;
        const { publicUrl, internalUrl } = JSON.parse(line) as { publicUrl: string; internalUrl: string };
        return { publicUrl, internalUrl };
      },
    });
    return this.gatewayTarget(ready, child);
  }

  /** A started gateway or replica as the scenarios address it: with the bench key, stoppable. */
  private gatewayTarget(
    ready: { publicUrl: string; internalUrl: string },
    child: { proc: { pid?: number }; stop(): Promise<void> },
  ): HttpTarget {
    return {
      url: ready.publicUrl,
      internalUrl: ready.internalUrl,
      headers: { authorization: `Bearer ${this.key.secret}` },
      pid: child.proc.pid,
      stop: () => child.stop(),
    };
  }
}

/**
 * A pass-through proxy process (`script`) in front of `upstream`, addressed with `upstream`'s own
 * headers; profiled under `profileName` when BENCH_CPU_PROFILE_DIR is set.
 */
async function passThrough(name: string, script: string, upstream: HttpTarget, env: Record<string, string>, profileName?: string): Promise<HttpTarget> {
  const nodeArgs = profileName ? profileArgs(profileName) : [];
  const { child, ready } = await spawnTsChild<{ publicUrl: string }>(name, script, { BENCH_MOCK_URL: upstream.url, ...env }, nodeArgs);
  return { url: ready.publicUrl, headers: upstream.headers, pid: child.proc.pid };
}

/**
 * BENCH_CPU_PROFILE_DIR: the bare proxy and each gateway write V8 CPU profiles (one per thread;
 * the main thread's is the big one) to <dir>/<name>/ when they stop.
 */
export function profileArgs(name: string): string[] {
  const profileDir = process.env.BENCH_CPU_PROFILE_DIR;
  return profileDir ? ['--cpu-prof', `--cpu-prof-dir=${join(profileDir, name)}`] : [];
}

const isPlainObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

function mergeConfig(base: Record<string, unknown>, patch: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(patch)) {
    const current = out[key];
    out[key] = isPlainObject(current) && isPlainObject(value) ? mergeConfig(current, value) : value;
  }
  return out;
}
