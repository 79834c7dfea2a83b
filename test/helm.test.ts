// Structural checks of the Helm chart without a helm binary: the pure-YAML files parse, every
// `.Values.…` path the templates use is defined in values.yaml, template blocks balance, the two
// Services expose what they should, and the config the ConfigMap renders uses the gateway's schema.
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { buildConfig } from '../src/config/load.js';
import { configSchema } from '../src/config/schema.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const chartDir = join(root, 'helm', 'tollgate');
const templatesDir = join(chartDir, 'templates');

const read = (path: string) => readFileSync(path, 'utf8');
const template = (name: string) => read(join(templatesDir, name));
const templateNames = readdirSync(templatesDir).filter((f) => /\.(ya?ml|tpl|txt)$/.test(f));

type Tree = Record<string, any>;
const values = parseYaml(read(join(chartDir, 'values.yaml'))) as Tree;
const example = parseYaml(read(join(root, 'config', 'tollgate.example.yaml'))) as Tree;

/** Keys of the zod object at `path` of the gateway's config schema ('[]' steps into an array). */
function schemaKeys(path: string[]): string[] {
  const unwrap = (s: any): any => {
    while (s && !s.shape && !s.element && typeof s.unwrap === 'function') s = s.unwrap();
    return s;
  };
  let s: any = unwrap(configSchema);
  for (const step of path) {
    s = unwrap(step === '[]' ? s.element : s.shape[step]);
    if (!s) throw new Error(`no schema at ${path.join('.')}`);
  }
  if (!s.shape) throw new Error(`schema at ${path.join('.')} is not an object`);
  return Object.keys(s.shape);
}

/**
 * The ConfigMap's embedded tollgate.yaml as a skeleton: lines that are a lone template action
 * (if/range/with/end/toYaml) dropped, other actions replaced by `X`. Each range body then appears once,
 * each conditional key present, which is what a key-name check needs.
 */
function configSkeleton(): Tree {
  const lines = template('configmap.yaml').split('\n');
  const start = lines.findIndex((l) => /^ {2}tollgate\.yaml: \|\s*$/.test(l));
  expect(start, 'configmap.yaml has a `tollgate.yaml: |` block').toBeGreaterThan(0);
  const body: string[] = [];
  for (const line of lines.slice(start + 1)) {
    if (line.trim() && !line.startsWith('    ')) break;
    if (/^\s*\{\{-?[^}]*\}\}\s*$/.test(line) && !/\}\}:/.test(line)) continue;
    body.push(line.slice(4).replace(/\{\{.*?\}\}/g, 'X'));
  }
  return parseYaml(body.join('\n')) as Tree;
}

describe('helm chart', () => {
  it('has a v2 Chart.yaml whose appVersion is the package version', () => {
    const chart = parseYaml(read(join(chartDir, 'Chart.yaml'))) as Tree;
    const pkg = JSON.parse(read(join(root, 'package.json'))) as { version: string };
    expect(chart.apiVersion).toBe('v2');
    expect(chart.name).toBe('tollgate');
    expect(chart.version).toMatch(/^\d+\.\d+\.\d+(-[\w.]+)?$/);
    expect(String(chart.appVersion)).toBe(pkg.version);
  });

  it('has the expected templates', () => {
    for (const name of [
      '_helpers.tpl', 'NOTES.txt', 'deployment.yaml', 'service.yaml', 'service-headless.yaml', 'configmap.yaml',
      'secret.yaml', 'hpa.yaml', 'pdb.yaml', 'servicemonitor.yaml', 'networkpolicy.yaml',
    ]) {
      expect(templateNames).toContain(name);
    }
  });

  it('defines in values.yaml every .Values path the templates use', () => {
    const missing: string[] = [];
    for (const name of templateNames) {
      for (const m of template(name).matchAll(/\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)/g)) {
        let node: any = values;
        for (const key of m[1]!.slice(1).split('.')) {
          if (node === null || typeof node !== 'object' || !Object.hasOwn(node, key)) {
            missing.push(`${name}: .Values${m[1]}`);
            break;
          }
          node = node[key];
        }
      }
    }
    expect(missing).toEqual([]);
  });

  it('balances template actions and includes only defined templates', () => {
    const all = templateNames.map((n) => template(n)).join('\n');
    const defined = new Set([...all.matchAll(/\{\{-?\s*define\s+"([^"]+)"/g)].map((m) => m[1]));
    const used = [...all.matchAll(/\b(?:include|template)\s+"([^"]+)"/g)].map((m) => m[1]!);
    expect(used.filter((n) => !defined.has(n))).toEqual([]);
    for (const name of templateNames) {
      const text = template(name);
      expect((text.match(/\{\{/g) ?? []).length, `${name}: {{ vs }}`).toBe((text.match(/\}\}/g) ?? []).length);
      const opened = (text.match(/\{\{-?\s*(if|range|with|define|block)\b/g) ?? []).length;
      const closed = (text.match(/\{\{-?\s*end\b/g) ?? []).length;
      expect(closed, `${name}: block openers vs end`).toBe(opened);
    }
  });

  it('renders a headless Service on the internal port for owner addressing', () => {
    const text = template('service-headless.yaml');
    expect(text).toMatch(/^\s+clusterIP: None\s*$/m);
    expect(text).toMatch(/^\s+publishNotReadyAddresses: true\s*$/m);
    expect(text).toMatch(/name: internal\b/);
    expect(text).toMatch(/port: \{\{ \.Values\.config\.server\.internalPort/);
    expect(text).toMatch(/targetPort: internal\b/);
  });

  it('keeps the internal port off the public Service', () => {
    const text = template('service.yaml');
    expect(text).not.toMatch(/8081/);
    expect(text).not.toMatch(/internal/i);
    expect(text).toMatch(/targetPort: http\b/);
    expect(values.service.port).toBe(80);
  });

  it('renders a ConfigMap config whose keys are the gateway schema names', () => {
    const config = configSkeleton();
    const topLevel = schemaKeys([]);
    expect(Object.keys(config).filter((k) => !topLevel.includes(k))).toEqual([]);
    for (const section of ['server', 'upstream', 'bridge', 'redis']) {
      const keys = Object.keys(config[section] ?? {});
      expect(keys.filter((k) => !schemaKeys([section]).includes(k)), `unknown keys in ${section}`).toEqual([]);
      // every bound the example file sets can be tuned from values
      const exampleKeys = Object.keys(example[section] ?? {});
      expect(exampleKeys.filter((k) => !keys.includes(k)), `${section} keys of the example not rendered`).toEqual([]);
    }
    const providers = Object.values(config.providers as Tree);
    expect(providers).toHaveLength(1); // the range body
    const provider = providers[0] as Tree;
    const exampleProviderKeys = new Set(Object.values(example.providers as Tree).flatMap((p) => Object.keys(p)));
    expect(Object.keys(provider).filter((k) => !exampleProviderKeys.has(k))).toEqual([]);
    expect(Object.keys(provider).filter((k) => !schemaKeys(['providers', 'openai']).includes(k))).toEqual([]);
    const accountKeys = Object.keys(provider.accounts[0] as Tree);
    expect(accountKeys).toEqual(expect.arrayContaining(['id', 'apiKey', 'apiKeyFile']));
    expect(accountKeys.filter((k) => !schemaKeys(['providers', 'openai', 'accounts', '[]']).includes(k))).toEqual([]);
    // credentials are ${VAR} references resolved from the pod's env, never values
    expect(template('configmap.yaml')).toContain('apiKey: {{ printf "${%s}" .apiKeyEnv | quote }}');
  });

  it('has config defaults in values.yaml that the gateway accepts', () => {
    // mirrors configmap.yaml: enabled providers, apiKeyEnv -> apiKey: "${VAR}", empty options left out
    const env: Record<string, string> = { REDIS_URL: 'redis://redis:6379', TOLLGATE_INTERNAL_SECRET: 'x'.repeat(32) };
    const providers: Tree = {};
    for (const [name, p] of Object.entries(values.config.providers as Tree)) {
      if (p.enabled === false) continue;
      const { enabled: _enabled, ...rest } = p;
      providers[name] = {
        ...rest,
        accounts: (p.accounts as Tree[]).map(({ apiKeyEnv, ...account }) => {
          if (!apiKeyEnv) return account;
          env[apiKeyEnv] = 'sk-test';
          return { ...account, apiKey: `\${${apiKeyEnv}}` };
        }),
      };
    }
    const redis = Object.fromEntries(
      Object.entries(values.config.redis as Tree).filter(([, v]) => v !== '' && !(Array.isArray(v) && v.length === 0)),
    );
    const raw = {
      server: { host: '0.0.0.0', internalHost: '0.0.0.0', ...values.config.server },
      upstream: values.config.upstream,
      redis,
      bridge: values.config.bridge,
      providers,
      keys: values.config.keys,
    };
    const config = buildConfig(raw, env);
    expect(config.server).toMatchObject({ port: 8080, internalPort: 8081, shutdownGraceMs: 30_000 });
    expect(config.providers.openai?.accounts[0]?.apiKey).toBe('sk-test');
    // each referenced credential has a slot in the chart's Secret
    for (const name of Object.keys(env).filter((k) => k.endsWith('_API_KEY'))) {
      expect(Object.keys(values.secrets.upstreamApiKeys)).toContain(name);
    }
  });

  it('wires the Deployment for a replicated, non-root gateway', () => {
    const text = template('deployment.yaml');
    expect(values.replicaCount).toBe(3);
    expect(text).toMatch(/name: http\s+containerPort: \{\{ \.Values\.config\.server\.port/);
    expect(text).toMatch(/name: internal\s+containerPort: \{\{ \.Values\.config\.server\.internalPort/);
    expect(text).toMatch(/- name: TOLLGATE_CONFIG\s+value: \/etc\/tollgate\/tollgate\.yaml/);
    expect(text).toMatch(/mountPath: \/etc\/tollgate\b/);
    expect(text).toMatch(/- name: TOLLGATE_INSTANCE_ID\s+valueFrom:\s+fieldRef:\s+fieldPath: metadata\.name/);
    expect(text).toMatch(/- name: POD_IP\s+valueFrom:\s+fieldRef:\s+fieldPath: status\.podIP/);
    expect(text).toContain('http://$(POD_IP):%d');
    for (const name of ['REDIS_URL', 'TOLLGATE_ADMIN_TOKEN', 'TOLLGATE_INTERNAL_SECRET']) {
      expect(text).toContain(`- name: ${name}`);
    }
    expect(text).toMatch(/path: \/health\/live\s+port: http/);
    expect(text).toMatch(/path: \/health\/ready\s+port: http/);
    // Service links would set TOLLGATE_PORT=tcp://… for a Service named "tollgate"
    expect(text).toMatch(/enableServiceLinks: false/);
    expect(text).toContain('checksum/config:');
    expect(text).toContain('checksum/secret:');
    expect(values.podSecurityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 1000 });
    expect(values.securityContext).toMatchObject({ readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } });
    // terminationGracePeriodSeconds defaults to shutdownGraceMs + 10 s
    expect(values.terminationGracePeriodSeconds).toBe('');
    expect(values.config.server.shutdownGraceMs).toBe(30_000);
    expect(template('_helpers.tpl')).toContain('add (div (.Values.config.server.shutdownGraceMs | int64) 1000) 10');
  });

  it('gates the optional resources on their values', () => {
    const gates: Record<string, string> = {
      'hpa.yaml': '.Values.autoscaling.enabled',
      'pdb.yaml': '.Values.podDisruptionBudget.enabled',
      'servicemonitor.yaml': '.Values.serviceMonitor.enabled',
      'networkpolicy.yaml': '.Values.networkPolicy.enabled',
      'secret.yaml': 'not .Values.secrets.existingSecret',
    };
    for (const [name, gate] of Object.entries(gates)) {
      expect(template(name).trimStart().startsWith(`{{- if ${gate} }}`), name).toBe(true);
    }
    expect(template('hpa.yaml')).toContain('apiVersion: autoscaling/v2');
    // /metrics is on the internal listener: scraped through the headless Service's internal port
    expect(template('servicemonitor.yaml')).toMatch(/apiVersion: monitoring\.coreos\.com\/v1[\s\S]*tollgate\/peers: "true"[\s\S]*port: internal\s+path: \/metrics/);
    expect(template('servicemonitor.yaml')).not.toMatch(/port: http/);
    expect(template('networkpolicy.yaml')).toMatch(/port: internal[\s\S]*podSelector:[\s\S]*tollgate\.selectorLabels/);
    // the scrape is let onto the internal port only from the peers the operator names
    expect(template('networkpolicy.yaml')).toMatch(/with \.Values\.networkPolicy\.metricsFrom[\s\S]*port: internal[\s\S]*toYaml \./);
    expect(values.networkPolicy.metricsFrom).toEqual([]);
  });
});
