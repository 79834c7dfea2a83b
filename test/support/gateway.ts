import { afterAll, afterEach, beforeAll, beforeEach } from 'vitest';
import { pino, type Logger } from 'pino';
import { buildApp, type App } from '../../src/app.js';
import { generateKey } from '../../src/auth/keys.js';
import { buildConfig } from '../../src/config/load.js';
import { startMockUpstream, type MockUpstream } from '../../src/mock/upstream.js';
import type { KeyRecord, Store } from '../../src/store/types.js';
import type { Limit } from '../../src/usage/counters.js';

export const OPENAI_SECRET = 'sk-upstream-openai-' + 'a'.repeat(24);
export const ANTHROPIC_SECRET = 'sk-ant-upstream-' + 'b'.repeat(24);

export interface TestGateway {
  app: App;
  url: string;
  internalUrl: string;
  mock: MockUpstream;
  store: Store;
  /** a fresh proxy key straight in the store; returns the secret */
  createKey(overrides?: Partial<Omit<KeyRecord, 'sha256' | 'id'>> & { limits?: Limit[] }): Promise<{ id: string; secret: string }>;
  close(): Promise<void>;
}

export interface TestGatewayOptions {
  /** raw config merged over the default one (providers pointing at the mock) */
  config?: (mockUrl: string) => Record<string, unknown>;
  mock?: MockUpstream;
  store?: Store;
  env?: Record<string, string>;
  logger?: Logger;
}

/** A real gateway on loopback port 0 in front of a real mock upstream. */
export async function startTestGateway(options: TestGatewayOptions = {}): Promise<TestGateway> {
  const mock = options.mock ?? (await startMockUpstream());
  const raw = {
    server: { host: '127.0.0.1', port: 0, internalHost: '127.0.0.1', internalPort: 0 },
    providers: {
      openai: { baseUrl: mock.url, accounts: [{ id: 'oa-1', apiKey: OPENAI_SECRET }] },
      anthropic: { baseUrl: mock.url, accounts: [{ id: 'an-1', apiKey: ANTHROPIC_SECRET }] },
    },
    ...options.config?.(mock.url),
  };
  const config = buildConfig(raw, options.env ?? {});
  const logger = options.logger ?? pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
  const app = await buildApp(config, { logger, store: options.store });
  const { publicUrl, internalUrl } = await app.listen();
  const store = app.gateway.store;
  return {
    app,
    url: publicUrl,
    internalUrl,
    mock,
    store,
    async createKey(overrides = {}) {
      const { id, secret, sha256 } = generateKey();
      await store.putKey({
        id,
        sha256,
        name: overrides.name ?? `test-${id}`,
        allowed_models: overrides.allowed_models ?? null,
        expires_at: overrides.expires_at ?? null,
        limits: overrides.limits ?? [],
        disabled: overrides.disabled ?? false,
        created_at: new Date().toISOString(),
        origin: 'admin',
      });
      return { id, secret };
    },
    async close() {
      await app.close();
      if (!options.mock) await mock.close();
    },
  };
}

/** Every header value the mock upstream received, lowercased names, flattened to one string. */
export function allHeaderText(headers: Record<string, string | string[] | undefined>): string {
  return Object.entries(headers)
    .map(([name, value]) => `${name}: ${Array.isArray(value) ? value.join(', ') : value ?? ''}`)
    .join('\n');
}

/** What the mock upstream reported as usage over everything it served, summed. */
export function servedTotals(mock: MockUpstream) {
  return mock.served.reduce(
    (sum, call) => ({
      input_tokens: sum.input_tokens + call.usage.input_tokens,
      output_tokens: sum.output_tokens + call.usage.output_tokens,
      cached_input_tokens: sum.cached_input_tokens + call.usage.cached_input_tokens,
      total_tokens: sum.total_tokens + call.usage.total_tokens,
    }),
    { input_tokens: 0, output_tokens: 0, cached_input_tokens: 0, total_tokens: 0 },
  );
}

/** A file's gateway (see `useTestGateway`): filled in by the hooks, with the current test's key. */
export type TestGatewayEnv = TestGateway & {
  /** a fresh proxy key, made before each test */
  key: { id: string; secret: string };
};

/**
 * A file's (or describe block's) gateway: started before its tests and closed after them; before
 * each test the mock's records are cleared and a fresh key is made. The returned object is live:
 * its fields are filled in by the hooks, like `useCluster`'s.
 */
export function useTestGateway(options: TestGatewayOptions = {}): TestGatewayEnv {
  const env = {} as TestGatewayEnv;
  beforeAll(async () => {
    Object.assign(env, await startTestGateway(options));
  });
  afterAll(() => env.close?.());
  beforeEach(async () => {
    env.mock.reset();
    env.key = await env.createKey();
  });
  return env;
}

/** A file's shared mock upstream and the current test's own gateway (see `useGatewayPerTest`). */
export interface GatewayPerTest {
  mock: MockUpstream;
  /** the gateway the current test started, if any; closed after the test */
  gw: TestGateway | undefined;
}

/**
 * One mock upstream for a file's tests, cleared before each, and a fresh gateway per test (fresh
 * account state) that the test starts itself — `env.gw = await startTestGateway({ mock: env.mock, … })`
 * — and that is closed after it. The returned object is live, like `useTestGateway`'s.
 */
export function useGatewayPerTest(): GatewayPerTest {
  const env = { gw: undefined } as GatewayPerTest;
  beforeAll(async () => {
    env.mock = await startMockUpstream();
  });
  afterAll(() => env.mock.close());
  beforeEach(() => env.mock.reset());
  afterEach(async () => {
    await env.gw?.close();
    env.gw = undefined;
  });
  return env;
}

/** Upstream secrets of the two OpenAI accounts `startWithTwoAccounts` configures. */
export const TWO_ACCOUNT_SECRETS = { 'oa-1': 'sk-upstream-oa-one-' + '1'.repeat(24), 'oa-2': 'sk-upstream-oa-two-' + '2'.repeat(24) } as const;

/** Which of the two accounts an upstream request's `authorization` header carried; undefined for neither. */
export function twoAccountOf(authorization: unknown): string | undefined {
  return Object.entries(TWO_ACCOUNT_SECRETS).find(([, secret]) => authorization === `Bearer ${secret}`)?.[0];
}

export interface TwoAccountOptions {
  adminToken: string;
  /** instead of the two accounts as they are (e.g. one of them at a dead URL) */
  accounts?: (mockUrl: string) => Array<{ id: string; apiKey: string; baseUrl?: string }>;
  /** merged over the config: its `providers` replace the OpenAI provider */
  extra?: (mockUrl: string) => Record<string, unknown>;
}

/** A fresh gateway (fresh account state) with two OpenAI accounts, round robin, in front of the file's mock; it becomes `env.gw`. */
export async function startWithTwoAccounts(env: GatewayPerTest, options: TwoAccountOptions): Promise<TestGateway> {
  const accounts = options.accounts ?? (() => Object.entries(TWO_ACCOUNT_SECRETS).map(([id, apiKey]) => ({ id, apiKey })));
  env.gw = await startTestGateway({
    mock: env.mock,
    config: (mockUrl) => ({
      adminToken: options.adminToken,
      providers: { openai: { baseUrl: mockUrl, strategy: 'round_robin', accounts: accounts(mockUrl) } },
      ...options.extra?.(mockUrl),
    }),
  });
  return env.gw;
}
