import { existsSync, readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { configSchema, type Config } from './schema.js';

export const DEFAULT_CONFIG_PATH = 'config/tollgate.yaml';

/** A configuration problem; its message is one line naming the field. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

type Env = Record<string, string | undefined>;

/** Replaces `${NAME}` in every string; an unset variable is an error, never an empty string. */
export function interpolateEnv(value: unknown, env: Env, path: PropertyKey[] = []): unknown {
  if (typeof value === 'string') {
    return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name: string) => {
      const resolved = env[name];
      if (resolved === undefined) {
        throw new ConfigError(`config: ${formatPath(path)}: environment variable ${name} is not set`);
      }
      return resolved;
    });
  }
  if (Array.isArray(value)) return value.map((item, i) => interpolateEnv(item, env, [...path, i]));
  if (value && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [k, interpolateEnv(v, env, [...path, k])]),
    );
  }
  return value;
}

/** The env vars of the operator contract, applied over the file. */
function applyEnvOverrides(raw: Record<string, any>, env: Env): Record<string, any> {
  const server = { ...(raw.server ?? {}) };
  const port = (name: string) => {
    const value = env[name]!;
    if (!/^\d+$/.test(value)) throw new ConfigError(`config: ${name}: must be a port number, got "${value}"`);
    return Number(value);
  };
  if (env.TOLLGATE_HOST) server.host = env.TOLLGATE_HOST;
  if (env.TOLLGATE_PORT) server.port = port('TOLLGATE_PORT');
  if (env.TOLLGATE_INTERNAL_HOST) server.internalHost = env.TOLLGATE_INTERNAL_HOST;
  if (env.TOLLGATE_INTERNAL_PORT) server.internalPort = port('TOLLGATE_INTERNAL_PORT');
  if (env.TOLLGATE_INSTANCE_ID) server.instanceId = env.TOLLGATE_INSTANCE_ID;
  if (env.TOLLGATE_ADVERTISE_URL) server.advertiseUrl = env.TOLLGATE_ADVERTISE_URL;
  const out: Record<string, any> = { ...raw, server };
  if (env.REDIS_URL) out.redis = { ...(raw.redis ?? {}), url: env.REDIS_URL };
  if (env.TOLLGATE_ADMIN_TOKEN) out.adminToken = env.TOLLGATE_ADMIN_TOKEN;
  if (env.TOLLGATE_INTERNAL_SECRET) out.internalSecret = env.TOLLGATE_INTERNAL_SECRET;
  if (env.TOLLGATE_ENCRYPTION_KEY || env.TOLLGATE_ENCRYPTION_KEY_PREVIOUS) {
    out.encryption = {
      ...(raw.encryption ?? {}),
      ...(env.TOLLGATE_ENCRYPTION_KEY && { key: env.TOLLGATE_ENCRYPTION_KEY }),
      ...(env.TOLLGATE_ENCRYPTION_KEY_PREVIOUS && { previousKey: env.TOLLGATE_ENCRYPTION_KEY_PREVIOUS }),
    };
  }
  return out;
}

function formatPath(path: readonly PropertyKey[]): string {
  return path.length ? path.map((p) => (typeof p === 'number' ? `[${p}]` : String(p))).join('.').replace(/\.\[/g, '[') : '(root)';
}

/** Validates a raw config object (already parsed), applying env interpolation and overrides. */
export function buildConfig(raw: unknown, env: Env = process.env): Config {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigError('config: (root): must be a mapping');
  }
  const interpolated = interpolateEnv(raw, env) as Record<string, any>;
  const result = configSchema.safeParse(applyEnvOverrides(interpolated, env));
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw new ConfigError(`config: ${formatPath(issue.path)}: ${issue.message}`);
  }
  return result.data;
}

/** Reads `TOLLGATE_CONFIG` (or the default path) and validates it. */
export function loadConfig(env: Env = process.env): Config {
  const path = env.TOLLGATE_CONFIG ?? DEFAULT_CONFIG_PATH;
  if (!existsSync(path)) {
    throw new ConfigError(`config: file ${path} not found (set TOLLGATE_CONFIG to the YAML config's path)`);
  }
  let raw: unknown;
  try {
    raw = parseYaml(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new ConfigError(`config: ${path} is not valid YAML: ${(err as Error).message.split('\n')[0]}`);
  }
  return buildConfig(raw, env);
}
