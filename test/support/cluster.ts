import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, beforeEach } from 'vitest';
import { startMockUpstream, type MockUpstream } from '../../src/mock/upstream.js';
import { RedisStore } from '../../src/store/redis.js';
import { OPENAI_SECRET, ANTHROPIC_SECRET } from './gateway.js';
import { startRedis, type TestRedis, type TestRedisOptions } from './redis.js';
import { listeningUrls, spawnReplica, writeReplicaConfig } from './replica-process.js';

export const ADMIN_TOKEN = 'cluster-admin-token-' + 'z'.repeat(12);
export const INTERNAL_SECRET = 'cluster-internal-secret-' + 'y'.repeat(12);

/** Short bridge bounds so failure tests take seconds, not the production defaults. */
export const TEST_BRIDGE = { heartbeatMs: 200, staleAfterMs: 800, leaseMs: 3_000, contextTtlSec: 30, sessionIdleMs: 60_000 };

export interface Replica {
  instanceId: string;
  url: string;
  internalUrl: string;
  process: ChildProcess;
  /** resolves with the exit code once the process has ended */
  exited: Promise<number | null>;
  kill(signal?: NodeJS.Signals): Promise<number | null>;
}

export interface ClusterOptions {
  redisUrl: string;
  mock: MockUpstream;
  /** raw config merged over the default one (a function gets the mock's URL) */
  config?: ClusterConfig;
  /** extra environment of every replica process (OTEL_*, …) */
  env?: Record<string, string>;
}

export type ClusterConfig = Record<string, unknown> | ((mockUrl: string) => Record<string, unknown>);

function writeConfig(options: ClusterOptions): string {
  const config = {
    providers: {
      openai: { baseUrl: options.mock.url, accounts: [{ id: 'oa-1', apiKey: OPENAI_SECRET }] },
      anthropic: { baseUrl: options.mock.url, accounts: [{ id: 'an-1', apiKey: ANTHROPIC_SECRET }] },
    },
    bridge: TEST_BRIDGE,
    ...(typeof options.config === 'function' ? options.config(options.mock.url) : options.config),
  };
  return writeReplicaConfig(config);
}

/** A real replica process (`src/main.ts`) on loopback ports chosen by the OS. */
export async function startReplica(instanceId: string, options: ClusterOptions, configPath = writeConfig(options)): Promise<Replica> {
  const child = spawnReplica({
    TOLLGATE_CONFIG: configPath,
    TOLLGATE_HOST: '127.0.0.1',
    TOLLGATE_PORT: '0',
    TOLLGATE_INTERNAL_HOST: '127.0.0.1',
    TOLLGATE_INTERNAL_PORT: '0',
    TOLLGATE_INSTANCE_ID: instanceId,
    REDIS_URL: options.redisUrl,
    TOLLGATE_INTERNAL_SECRET: INTERNAL_SECRET,
    TOLLGATE_ADMIN_TOKEN: ADMIN_TOKEN,
    LOG_LEVEL: 'info',
    ...options.env,
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let stderr = '';
  child.stderr!.on('data', (chunk) => (stderr += chunk));
  const listening = await new Promise<{ publicUrl: string; internalUrl: string }>((resolve, reject) => {
    // generous: several replicas compile their sources (tsx) at once, on a machine that may be busy
    const timer = setTimeout(() => reject(new Error(`replica ${instanceId} did not start in time: ${stderr}`)), 45_000);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (process.env.TEST_LOG_LEVEL) process.stdout.write(`[${instanceId}] ${line}\n`);
      const urls = listeningUrls(line);
      if (!urls) return;
      clearTimeout(timer);
      resolve(urls);
    });
    void exited.then((code) => reject(new Error(`replica ${instanceId} exited with ${code}: ${stderr}`)));
  });
  return {
    instanceId,
    url: listening.publicUrl,
    internalUrl: listening.internalUrl,
    process: child,
    exited,
    async kill(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

export async function startCluster(count: number, options: ClusterOptions): Promise<{ replicas: Replica[]; configPath: string; stop(): Promise<void> }> {
  const configPath = writeConfig(options);
  const replicas = await Promise.all(Array.from({ length: count }, (_, i) => startReplica(`replica-${String.fromCharCode(97 + i)}`, options, configPath)));
  return {
    replicas,
    configPath,
    async stop() {
      await Promise.all(replicas.map((r) => r.kill('SIGKILL')));
    },
  };
}

/** Creates a key through one replica's admin API. */
export async function createKeyVia(replica: Replica, body: Record<string, unknown> = { name: 'cluster-test' }): Promise<{ id: string; key: string }> {
  const res = await fetch(`${replica.url}/admin/keys`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (res.status !== 201) throw new Error(`key creation failed: ${res.status} ${await res.text()}`);
  return res.json() as Promise<{ id: string; key: string }>;
}

export interface ClusterEnv {
  redis: TestRedis;
  mock: MockUpstream;
  replicas: Replica[];
  /** a store connection of the test's own, to look at what the replicas wrote */
  store: RedisStore;
}

/**
 * A file's cluster: a real redis-server, the mock upstream and `count` replica processes,
 * started before its tests and stopped after them; the mock's records are cleared before each.
 */
export function useCluster(
  count: number,
  /** `env` as a function is read when the cluster starts (after the file's earlier beforeAll hooks) */
  options: { config?: ClusterConfig; redis?: TestRedisOptions; env?: Record<string, string> | (() => Record<string, string>) } = {},
): ClusterEnv {
  const env = {} as ClusterEnv;
  let stop: (() => Promise<void>) | undefined;
  beforeAll(async () => {
    env.redis = await startRedis(options.redis);
    env.mock = await startMockUpstream();
    env.store = await RedisStore.connect(env.redis.url);
    const processEnv = typeof options.env === 'function' ? options.env() : options.env;
    const cluster = await startCluster(count, { redisUrl: env.redis.url, mock: env.mock, config: options.config, env: processEnv });
    env.replicas = cluster.replicas;
    stop = cluster.stop;
  }, 120_000);
  afterAll(async () => {
    await stop?.();
    await env.store?.close();
    await env.mock?.close();
    await env.redis?.stop();
  });
  beforeEach(() => env.mock.reset());
  return env;
}
