import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { ConfigError, buildConfig, loadConfig } from '../src/config/load.js';
import { DEFAULTS } from '../src/config/schema.js';

const minimal = () => ({ providers: { openai: { baseUrl: 'https://api.openai.com', accounts: [{ id: 'oa-1', apiKey: 'sk-x' }] } } });

function configError(raw: unknown, env: Record<string, string> = {}): string {
  try {
    buildConfig(raw, env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error('expected a ConfigError');
}

function writeConfig(text: string): string {
  const path = join(mkdtempSync(join(tmpdir(), 'tollgate-config-')), 'tollgate.yaml');
  writeFileSync(path, text);
  return path;
}

describe('config', () => {
  it('applies defaults to a minimal file', () => {
    const config = buildConfig(minimal(), {});
    expect(config.server).toMatchObject({ host: DEFAULTS.host, port: 8080, internalPort: 8081, bodyLimitBytes: 16 * 1024 * 1024 });
    expect(config.providers.openai!.strategy).toBe('round_robin');
    expect(config.keys).toEqual([]);
    expect(config.redis.url).toBeUndefined();
  });

  it('names the bad field in one line', () => {
    expect(configError({})).toBe('config: providers: Invalid input: expected object, received undefined');
    expect(configError({ providers: {} })).toBe('config: providers: at least one provider is required');
    expect(configError({ providers: { openai: { baseUrl: 'not a url', accounts: [{ id: 'a', apiKey: 'k' }] } } })).toMatch(/^config: providers\.openai\.baseUrl: /);
    expect(configError({ providers: { openai: { baseUrl: 'https://x', accounts: [{ id: 'a' }] } } })).toBe(
      'config: providers.openai.accounts[0].apiKey: exactly one of apiKey, apiKeyFile or authFile is required',
    );
    expect(configError({ ...minimal(), server: { port: 'eighty' } })).toMatch(/^config: server\.port: /);
    expect(configError({ ...minimal(), keys: [{ id: 'k', name: 'n', sha256: 'abc' }] })).toBe('config: keys[0].sha256: must be 64 lowercase hex characters');
    expect(configError({ ...minimal(), surprise: 1 })).toMatch(/^config: \(root\): .*surprise/);
    for (const message of [configError({}), configError({ providers: {} })]) expect(message).not.toContain('\n');
  });

  it('account organization, project and headers: OpenAI only for the first two, never a gateway-set header', () => {
    const account = (extra: Record<string, unknown>) => ({ id: 'a', apiKey: 'k', ...extra });
    const ok = buildConfig({ providers: { openai: { baseUrl: 'https://x', accounts: [account({ organization: 'org-1', project: 'proj_1', headers: { 'X-Team': 'a' } })] } } }, {});
    expect(ok.providers.openai!.accounts[0]).toMatchObject({ organization: 'org-1', project: 'proj_1', headers: { 'X-Team': 'a' } });
    expect(configError({ providers: { anthropic: { baseUrl: 'https://x', accounts: [account({ organization: 'org-1' })] } } })).toBe(
      'config: providers.anthropic.accounts[0].organization: only OpenAI accounts have one',
    );
    for (const name of ['Authorization', 'x-api-key', 'Cookie', 'host', 'content-length', 'Connection', 'sec-websocket-key', 'x-tollgate-context']) {
      expect(configError({ providers: { openai: { baseUrl: 'https://x', accounts: [account({ headers: { [name]: 'v' } })] } } }), name).toMatch(
        /^config: providers\.openai\.accounts\[0\]\.headers\..*is set by the gateway/,
      );
    }
    expect(configError({ providers: { openai: { baseUrl: 'https://x', accounts: [account({ headers: { 'x-a': 'v\r\nx-b: injected' } })] } } })).toMatch(/CR, LF or NUL/);
  });

  it('interpolates ${VAR} and refuses an unset one', () => {
    const raw = { providers: { openai: { baseUrl: '${BASE}', accounts: [{ id: 'oa-1', apiKey: '${OPENAI_API_KEY}' }] } } };
    const config = buildConfig(raw, { BASE: 'https://example.test', OPENAI_API_KEY: 'sk-from-env' });
    expect(config.providers.openai!.accounts[0]!.apiKey).toBe('sk-from-env');
    expect(config.providers.openai!.baseUrl).toBe('https://example.test');
    expect(configError(raw, { BASE: 'https://example.test' })).toBe(
      'config: providers.openai.accounts[0].apiKey: environment variable OPENAI_API_KEY is not set',
    );
  });

  it('takes the operator env vars over the file', () => {
    const config = buildConfig(minimal(), {
      TOLLGATE_HOST: '127.0.0.1',
      TOLLGATE_PORT: '9000',
      TOLLGATE_INTERNAL_PORT: '9001',
      TOLLGATE_INSTANCE_ID: 'replica-a',
      TOLLGATE_ADVERTISE_URL: 'http://10.0.0.1:9001',
      TOLLGATE_ADMIN_TOKEN: 'admin-token-long-enough',
      REDIS_URL: 'redis://127.0.0.1:6379',
      TOLLGATE_INTERNAL_SECRET: 'internal-secret-long-enough',
    });
    expect(config.server).toMatchObject({ host: '127.0.0.1', port: 9000, internalPort: 9001, instanceId: 'replica-a', advertiseUrl: 'http://10.0.0.1:9001' });
    expect(config.adminToken).toBe('admin-token-long-enough');
    expect(config.redis.url).toBe('redis://127.0.0.1:6379');
    expect(configError(minimal(), { TOLLGATE_PORT: 'abc' })).toBe('config: TOLLGATE_PORT: must be a port number, got "abc"');
    expect(configError(minimal(), { REDIS_URL: 'redis://x:1' })).toBe('config: internalSecret: required when REDIS_URL is set (TOLLGATE_INTERNAL_SECRET)');
  });

  it('loads YAML from TOLLGATE_CONFIG and reports a missing file or bad YAML', () => {
    const path = writeConfig('providers:\n  anthropic:\n    baseUrl: https://api.anthropic.com\n    accounts:\n      - { id: an-1, apiKey: "${K}" }\n');
    expect(loadConfig({ TOLLGATE_CONFIG: path, K: 'sk-ant' }).providers.anthropic!.accounts[0]!.apiKey).toBe('sk-ant');
    expect(() => loadConfig({ TOLLGATE_CONFIG: '/nonexistent/t.yaml' })).toThrow('config: file /nonexistent/t.yaml not found');
    expect(() => loadConfig({ TOLLGATE_CONFIG: writeConfig('providers: [unclosed') })).toThrow(/is not valid YAML/);
  });

  it('reads account credentials from a mounted file', async () => {
    const secretPath = writeConfig('sk-from-file\n');
    const config = buildConfig({ providers: { openai: { baseUrl: 'https://x.test', accounts: [{ id: 'a', apiKeyFile: secretPath }] } } }, {});
    const { accountsOf } = await import('../src/upstream/accounts.js');
    expect(accountsOf('openai', config.providers.openai!)[0]!.secret).toBe('sk-from-file');
  });

  it('the example config is valid once its variables are set', () => {
    const config = loadConfig({ TOLLGATE_CONFIG: 'config/tollgate.example.yaml', OPENAI_API_KEY: 'sk-a', ANTHROPIC_API_KEY: 'sk-b' });
    expect(Object.keys(config.providers).sort()).toEqual(['anthropic', 'openai']);
  });

  it('a bad config stops the process with one line naming the field', () => {
    const path = writeConfig('providers:\n  openai:\n    baseUrl: https://api.openai.com\n    accounts: []\n');
    const run = spawnSync(process.execPath, ['--import', 'tsx', 'src/main.ts'], { env: { ...process.env, TOLLGATE_CONFIG: path }, encoding: 'utf8', timeout: 60_000 });
    expect(run.status).toBe(1);
    expect(run.stderr.trim().split('\n')).toHaveLength(1);
    expect(run.stderr).toMatch(/^config: providers\.openai\.accounts: /);
  });
});
