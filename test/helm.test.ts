// Structural checks of the Helm chart without a helm binary: the pure-YAML files parse, every
// `.Values.…` path the templates use is defined in values.yaml, template blocks balance, the two
// Services expose what they should, the config the ConfigMap renders uses the gateway's schema,
// values.schema.json accepts the defaults and refuses typos, and every metric the dashboard and the
// alert rules name is one a running gateway exports.
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv } from 'ajv';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { buildConfig } from '../src/config/load.js';
import { configSchema, STRATEGIES } from '../src/config/schema.js';
import { LIMIT_TYPES } from '../src/usage/counters.js';
import { LIMIT_WINDOWS } from '../src/usage/windows.js';
import { startTestGateway, type TestGateway } from './support/gateway.js';

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

/** The config sections values.yaml renders as such (the rest: providers, keys, and what comes from env). */
const configSections = ['server', 'upstream', 'redis', 'bridge', 'telemetry', 'usage', 'dashboard'];
const valuesSchema = JSON.parse(read(join(chartDir, 'values.schema.json'))) as Tree;

/**
 * What configmap.yaml renders from `v`, as an object: enabled providers, apiKeyEnv -> apiKey: "${VAR}"
 * (the variable set in `env`), authSecret -> the path the Deployment mounts it at, empty options left out.
 */
function renderedConfig(v: Tree, env: Record<string, string>): Tree {
  const providers: Tree = {};
  for (const [name, p] of Object.entries(v.config.providers as Tree)) {
    if (p.enabled === false) continue;
    const { enabled: _enabled, ...rest } = p;
    providers[name] = {
      ...rest,
      accounts: (p.accounts as Tree[]).map(({ apiKeyEnv, authSecret, authSecretKey: _key, ...account }, i) => {
        if (authSecret) return { ...account, authFile: `/etc/tollgate-chatgpt/${i}/auth.json` };
        if (!apiKeyEnv) return account;
        env[apiKeyEnv] = 'sk-test';
        return { ...account, apiKey: `\${${apiKeyEnv}}` };
      }),
    };
  }
  const redis = Object.fromEntries(
    Object.entries(v.config.redis as Tree).filter(([, x]) => x !== '' && !(Array.isArray(x) && x.length === 0)),
  );
  return {
    ...Object.fromEntries(configSections.map((s) => [s, v.config[s]])),
    server: { host: '0.0.0.0', internalHost: '0.0.0.0', ...v.config.server },
    redis,
    providers,
    pools: v.config.pools,
    pricing: v.config.pricing,
    ...(v.config.webhook.enabled && { webhook: webhookOf(v, env) }),
    keys: v.config.keys,
  };
}

/** The `webhook:` section: its url if any, the secret from TOLLGATE_WEBHOOK_SECRET (set in `env`). */
function webhookOf(v: Tree, env: Record<string, string>): Tree {
  env.TOLLGATE_WEBHOOK_SECRET = v.secrets.webhookSecret;
  return { ...(v.config.webhook.url && { url: v.config.webhook.url }), secret: '${TOLLGATE_WEBHOOK_SECRET}' };
}

/** Values setting every feature the chart offers on top of the defaults: tracing, history, dashboard, ChatGPT logins, routing (affinity, caps, pools, pricing, webhooks). */
const encryptionKey = Buffer.alloc(32, 7).toString('base64');
function featureValues(): Tree {
  const v = structuredClone(values);
  v.config.server = { ...v.config.server, requestBodyTimeoutMs: 20_000, publicMetrics: true };
  v.config.upstream = { ...v.config.upstream, probeIntervalMs: 7_000, probeTimeoutMs: 4_000 };
  v.config.telemetry = { tracing: true };
  v.config.usage = { historyRetentionDays: 30 };
  v.config.dashboard = { enabled: true, sessionTtlMs: 3_600_000 };
  v.config.providers.openai.accounts[0] = {
    ...v.config.providers.openai.accounts[0], organization: 'org-1', project: 'proj_1', headers: { 'x-team': 'core' },
  };
  v.config.providers.chatgpt = {
    ...v.config.providers.chatgpt,
    enabled: true,
    oauth: { ...v.config.providers.chatgpt.oauth, issuer: 'https://auth.example.com', clientId: 'app_x', refreshMarginMs: 60_000 },
    accounts: [
      { id: 'cg-1', authSecret: 'codex-auth-cg-1' },
      { id: 'cg-2', authSecret: 'codex-auth-cg-2', authSecretKey: 'codex.json', accountId: 'acc-2' },
      { id: 'cg-3', authFile: '/mnt/codex/auth.json' },
    ],
  };
  v.config.providers.openai = { ...v.config.providers.openai, affinity: false };
  v.config.providers.openai.accounts[0].maxConcurrent = 4;
  v.config.upstream.queueTimeoutMs = 5_000;
  v.config.pools = { core: ['oa-1'] };
  v.config.pricing = { 'my-model*': { input: 1, cached_input: 0.1, output: 4 } };
  v.config.webhook = { enabled: true, url: 'https://alerts.example.com/tollgate' };
  v.config.keys = [{ id: 'k', name: 'k', sha256: 'a'.repeat(64), pool: 'core', webhook_url: 'https://team.example.com/hook', limits: [{ limit_type: 'cost_usd', limit_window: 'monthly', max_value: 2.5 }] }];
  v.tracing = { otlpEndpoint: 'http://otel-collector.observability:4318', protocol: 'http/json' };
  v.secrets = { ...v.secrets, encryptionKey, encryptionKeyPrevious: 'ab'.repeat(32), otlpHeaders: 'authorization=Bearer t', webhookSecret: 'w'.repeat(32) };
  return v;
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
      'secret.yaml', 'hpa.yaml', 'pdb.yaml', 'servicemonitor.yaml', 'networkpolicy.yaml', 'grafana-dashboard.yaml',
      'prometheusrule.yaml',
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
    for (const section of configSections) {
      const keys = Object.keys(config[section] ?? {});
      expect(keys.filter((k) => !schemaKeys([section]).includes(k)), `unknown keys in ${section}`).toEqual([]);
      // every bound the example file sets, and every one the values schema offers, is rendered
      const exampleKeys = Object.keys(example[section] ?? {});
      expect(exampleKeys.filter((k) => !keys.includes(k)), `${section} keys of the example not rendered`).toEqual([]);
      const offered = Object.keys(valuesSchema.properties.config.properties[section].properties);
      expect(offered.filter((k) => !keys.includes(k)), `${section} keys of the values schema not rendered`).toEqual([]);
    }
    const providers = Object.values(config.providers as Tree);
    expect(providers).toHaveLength(1); // the range body, shared by the providers
    const provider = providers[0] as Tree;
    // chatgpt's schema is the widest (oauth); the values schema keeps oauth to chatgpt
    expect(Object.keys(provider).filter((k) => !schemaKeys(['providers', 'chatgpt']).includes(k))).toEqual([]);
    expect(Object.keys(provider.oauth as Tree)).toEqual(schemaKeys(['providers', 'chatgpt', 'oauth']));
    const accountKeys = Object.keys(provider.accounts[0] as Tree);
    expect(accountKeys).toEqual(expect.arrayContaining(['id', 'apiKey', 'apiKeyFile', 'authFile', 'organization', 'project', 'headers']));
    expect(accountKeys.filter((k) => !schemaKeys(['providers', 'openai', 'accounts', '[]']).includes(k))).toEqual([]);
    // credentials are ${VAR} references resolved from the pod's env, never values
    expect(template('configmap.yaml')).toContain('apiKey: {{ printf "${%s}" .apiKeyEnv | quote }}');
  });

  it('has config defaults in values.yaml that the gateway accepts', () => {
    const env: Record<string, string> = { REDIS_URL: 'redis://redis:6379', TOLLGATE_INTERNAL_SECRET: 'x'.repeat(32) };
    const config = buildConfig(renderedConfig(values, env), env);
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
    // a Deployment's pods have no DNS names of their own: peers are reached by pod IP, bracketed for IPv6
    expect(text).toMatch(/- name: TOLLGATE_ADVERTISE_URL\s+value: \{\{ include "tollgate\.advertiseUrl" \. \| quote \}\}/);
    expect(template('_helpers.tpl')).toContain('ternary "[$(POD_IP)]" "$(POD_IP)" (eq .Values.ipFamily "IPv6")');
    expect(template('_helpers.tpl')).toContain('printf "http://%s:%d" $host');
    expect(text).not.toMatch(/subdomain:|POD_NAME/);
    for (const name of ['REDIS_URL', 'TOLLGATE_ADMIN_TOKEN', 'TOLLGATE_INTERNAL_SECRET']) {
      expect(text).toContain(`- name: ${name}`);
    }
    // REDIS_URL may hold a password: every REDIS_URL entry reads a Secret, none is a plain value
    const redisEntries = [...text.matchAll(/- name: REDIS_URL\n(\s+\S+)/g)].map((m) => m[1]!.trim());
    expect(redisEntries.length).toBeGreaterThan(0);
    expect(redisEntries.every((line) => line === 'valueFrom:')).toBe(true);
    expect(template('_helpers.tpl')).toMatch(/if and \.Values\.redis\.url \.Values\.secrets\.existingSecret \(not \.Values\.redis\.existingSecret\) \}\}\n\{\{- fail /);
    expect(text).toMatch(/path: \/health\/live\s+port: http/);
    expect(text).toMatch(/path: \/health\/ready\s+port: http/);
    // a startup probe guards the start; liveness tolerates a busy minute; readiness a short Redis blip
    expect(text).toMatch(/startupProbe:\s+httpGet:\s+path: \/health\/live/);
    expect(values.livenessProbe.periodSeconds * values.livenessProbe.failureThreshold).toBeGreaterThanOrEqual(60);
    expect(values.livenessProbe.timeoutSeconds).toBeGreaterThanOrEqual(5);
    expect(values.readinessProbe.periodSeconds * values.readinessProbe.failureThreshold).toBeGreaterThanOrEqual(15);
    // endpoints stop routing to the pod before it stops accepting
    expect(text).toMatch(/lifecycle:\s+preStop:\s+exec:\s+command: \["sleep", \{\{ \.Values\.preStopSleepSeconds/);
    expect(values.preStopSleepSeconds).toBe(10);
    // the heap stays below the container's memory limit: 75 % of 512Mi
    expect(text).toMatch(/with include "tollgate\.maxOldSpaceSizeMiB" \. \}\}[\s\S]*- name: NODE_OPTIONS\s+value: \{\{ printf "--max-old-space-size=%s"/);
    expect(values.heap.percentOfMemoryLimit).toBe(75);
    expect(values.resources.limits.memory).toBe('512Mi');
    // soft anti-affinity by node unless the operator gives affinity rules
    expect(values.podAntiAffinityPreset).toBe('soft');
    expect(text).toMatch(/else if \.Values\.podAntiAffinityPreset[\s\S]*"topologyKey" "kubernetes\.io\/hostname"[\s\S]*preferredDuringSchedulingIgnoredDuringExecution/);
    // Service links would set TOLLGATE_PORT=tcp://… for a Service named "tollgate"
    expect(text).toMatch(/enableServiceLinks: false/);
    expect(text).toContain('checksum/config:');
    expect(text).toContain('checksum/secret:');
    expect(values.podSecurityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 1000 });
    expect(values.securityContext).toMatchObject({ readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } });
    // terminationGracePeriodSeconds defaults to preStop + shutdownGraceMs (rounded up) + 5 s
    expect(values.terminationGracePeriodSeconds).toBe('');
    expect(values.config.server.shutdownGraceMs).toBe(30_000);
    expect(template('_helpers.tpl')).toContain(
      'add (.Values.preStopSleepSeconds | int64) (div (add (.Values.config.server.shutdownGraceMs | int64) 999) 1000) 5',
    );
  });

  it('renders every feature of the values into a config the gateway accepts', () => {
    const env: Record<string, string> = {
      REDIS_URL: 'redis://redis:6379', TOLLGATE_INTERNAL_SECRET: 'x'.repeat(32), TOLLGATE_ENCRYPTION_KEY: encryptionKey,
    };
    const config = buildConfig(renderedConfig(featureValues(), env), env);
    expect(config.server).toMatchObject({ requestBodyTimeoutMs: 20_000, publicMetrics: true });
    expect(config.upstream).toMatchObject({ probeIntervalMs: 7_000, probeTimeoutMs: 4_000 });
    expect(config.telemetry.tracing).toBe(true);
    expect(config.usage.historyRetentionDays).toBe(30);
    expect(config.dashboard).toEqual({ enabled: true, sessionTtlMs: 3_600_000 });
    expect(config.providers.openai?.accounts[0]).toMatchObject({ organization: 'org-1', project: 'proj_1', headers: { 'x-team': 'core' } });
    const chatgpt = config.providers.chatgpt!;
    expect(chatgpt.strategy).toBe('quota_headroom');
    expect(chatgpt.oauth).toMatchObject({ issuer: 'https://auth.example.com', clientId: 'app_x', refreshMarginMs: 60_000, refreshLockMs: 30_000 });
    expect(chatgpt.accounts.map((a) => a.authFile)).toEqual(['/etc/tollgate-chatgpt/0/auth.json', '/etc/tollgate-chatgpt/1/auth.json', '/mnt/codex/auth.json']);
    expect(config.encryption.key).toBe(encryptionKey);
    // the path configmap.yaml renders for an authSecret is the one the Deployment mounts the Secret's key at
    const helpers = template('_helpers.tpl');
    expect(helpers).toContain('printf "/etc/tollgate-chatgpt/%d/auth.json" (int .)');
    expect(template('configmap.yaml')).toContain('authFile: {{ .authFile | default (include "tollgate.authFilePath" $i) | quote }}');
    const deployment = template('deployment.yaml');
    expect(deployment).toMatch(/range \(include "tollgate\.authAccounts" \. \| fromYamlArray\) \}\}\n\s+- name: \{\{ printf "chatgpt-auth-%d" \(\.index \| int\) \}\}\n\s+mountPath: \{\{ include "tollgate\.authFilePath" \(\.index \| int\) \| dir \}\}\n\s+readOnly: true/);
    expect(deployment).toMatch(/- name: \{\{ printf "chatgpt-auth-%d" \(\.index \| int\) \}\}\n\s+secret:\n\s+secretName: \{\{ \.secret \}\}\n\s+defaultMode: 0440\n\s+items:\n\s+- key: \{\{ \.key \}\}\n\s+path: auth\.json/);
    expect(helpers).toContain('"key" ($account.authSecretKey | default "auth.json")');
    // without a key in the chart's Secret, an auth.json login fails the render, not the pod
    expect(helpers).toMatch(/if and \$logins \(not \$\.Values\.secrets\.existingSecret\) \(not \$\.Values\.secrets\.encryptionKey\) \}\}\n\{\{- fail /);
  });

  it('takes the encryption key and the OTLP headers only from a Secret, the OTLP endpoint from values', () => {
    const deployment = template('deployment.yaml');
    for (const name of ['TOLLGATE_ENCRYPTION_KEY', 'TOLLGATE_ENCRYPTION_KEY_PREVIOUS', 'OTEL_EXPORTER_OTLP_HEADERS']) {
      const entries = [...deployment.matchAll(new RegExp(`- name: ${name}\\n(\\s+\\S+)\\n\\s+secretKeyRef:\\n\\s+name: (.*)\\n\\s+key: (\\S+)`, 'g'))];
      expect(entries, name).toHaveLength(1);
      expect(entries[0]![1]!.trim()).toBe('valueFrom:');
      expect(entries[0]![2]).toBe('{{ $secretName }}'); // the chart's Secret or secrets.existingSecret
      expect(entries[0]![3]).toBe(name);
      expect(deployment.split(`- name: ${name}\n`)).toHaveLength(2); // no second, plain entry
    }
    // the values holding them are read by the Secret alone
    for (const name of templateNames.filter((n) => n !== 'secret.yaml' && n !== '_helpers.tpl')) {
      expect(template(name), name).not.toMatch(/\.Values\.secrets\.(encryptionKey|encryptionKeyPrevious|otlpHeaders)\b/);
    }
    expect(template('configmap.yaml')).not.toMatch(/encryption|previousKey/i);
    const secret = template('secret.yaml');
    expect(secret).toMatch(/with \.Values\.secrets\.encryptionKey \}\}\n\s+TOLLGATE_ENCRYPTION_KEY: \{\{ \. \| b64enc \| quote \}\}/);
    expect(secret).toMatch(/with \.Values\.secrets\.encryptionKeyPrevious \}\}\n\s+TOLLGATE_ENCRYPTION_KEY_PREVIOUS: \{\{ \. \| b64enc \| quote \}\}/);
    expect(secret).toMatch(/with \.Values\.secrets\.otlpHeaders \}\}\n\s+OTEL_EXPORTER_OTLP_HEADERS: \{\{ \. \| b64enc \| quote \}\}/);
    // endpoint and protocol are not secret: plain env from tracing.*, only when set
    expect(deployment).toMatch(/with \.Values\.tracing\.otlpEndpoint \}\}\n\s+- name: OTEL_EXPORTER_OTLP_ENDPOINT\n\s+value: \{\{ \. \| quote \}\}/);
    expect(deployment).toMatch(/with \.Values\.tracing\.protocol \}\}\n\s+- name: OTEL_EXPORTER_OTLP_PROTOCOL\n\s+value: \{\{ \. \| quote \}\}/);
    expect(values.tracing).toEqual({ otlpEndpoint: '', protocol: '' });
  });

  it('gates the optional resources on their values', () => {
    const gates: Record<string, string> = {
      'hpa.yaml': '.Values.autoscaling.enabled',
      'servicemonitor.yaml': '.Values.serviceMonitor.enabled',
      'networkpolicy.yaml': '.Values.networkPolicy.enabled',
      'secret.yaml': 'not .Values.secrets.existingSecret',
      'grafana-dashboard.yaml': '.Values.grafanaDashboard.enabled',
      'prometheusrule.yaml': '.Values.prometheusRule.enabled',
    };
    for (const [name, gate] of Object.entries(gates)) {
      expect(template(name).trimStart().startsWith(`{{- if ${gate} }}`), name).toBe(true);
    }
    // a CRD-free ConfigMap is on by default; the PrometheusRule needs the operator's CRD
    expect(values.grafanaDashboard.enabled).toBe(true);
    expect(values.grafanaDashboard.labels).toEqual({ grafana_dashboard: '1' });
    expect(template('grafana-dashboard.yaml')).toContain('.Files.Get "dashboards/tollgate.json"');
    expect(values.prometheusRule.enabled).toBe(false);
    // a PDB only with more than one replica, allowing one pod down
    expect(template('pdb.yaml')).toMatch(/if and \.Values\.podDisruptionBudget\.enabled \(gt \$replicas 1\) \}\}/);
    expect(values.podDisruptionBudget).toMatchObject({ enabled: true, maxUnavailable: 1 });
    // scale-down one pod at a time after a stabilization window
    expect(template('hpa.yaml')).toMatch(/with \.Values\.autoscaling\.behavior \}\}\n(.*\n)?\s+behavior:/);
    expect(values.autoscaling.behavior.scaleDown.stabilizationWindowSeconds).toBeGreaterThanOrEqual(300);
    expect(values.autoscaling.behavior.scaleDown.policies).toEqual([{ type: 'Pods', value: 1, periodSeconds: expect.any(Number) }]);
    expect(template('hpa.yaml')).toContain('apiVersion: autoscaling/v2');
    // /metrics is on the internal listener: scraped through the headless Service's internal port
    expect(template('servicemonitor.yaml')).toMatch(/apiVersion: monitoring\.coreos\.com\/v1[\s\S]*tollgate\/peers: "true"[\s\S]*port: internal\s+path: \/metrics/);
    expect(template('servicemonitor.yaml')).not.toMatch(/port: http/);
    const policy = template('networkpolicy.yaml');
    expect(values.networkPolicy.enabled).toBe(true);
    expect(policy).toMatch(/port: internal[\s\S]*podSelector:[\s\S]*tollgate\.selectorLabels/);
    // the scrape is let onto the internal port from the monitoring namespace and the peers the operator names
    expect(policy).toMatch(/port: internal[\s\S]*with \$policy\.metricsNamespace[\s\S]*kubernetes\.io\/metadata\.name: \{\{ \. \| quote \}\}[\s\S]*with \$policy\.metricsFrom/);
    expect(values.networkPolicy.metricsNamespace).toBe('monitoring');
    expect(values.networkPolicy.metricsFrom).toEqual([]);
    expect(policy).toMatch(/with \$policy\.extraIngress \}\}\n\s+\{\{- toYaml \. \| nindent 4 \}\}/);
  });
});

describe('values.schema.json', () => {
  const schema = valuesSchema;
  const validate = new Ajv({ allErrors: true }).compile(schema);
  const withChange = (change: (v: Tree) => void): Tree => {
    const copy = structuredClone(values);
    change(copy);
    return copy;
  };

  it('accepts the default values and the CI values merged over them', () => {
    expect(validate(values), JSON.stringify(validate.errors)).toBe(true);
    const ci = parseYaml(read(join(chartDir, 'ci', 'redis-values.yaml'))) as Tree;
    const merged = withChange((v) => {
      Object.assign(v.redis, ci.redis);
      Object.assign(v.secrets, ci.secrets);
      Object.assign(v.autoscaling, ci.autoscaling);
      Object.assign(v.networkPolicy, ci.networkPolicy);
    });
    expect(validate(merged), JSON.stringify(validate.errors)).toBe(true);
  });

  it('refuses a typo under config, a bad enum and a value of the wrong type', () => {
    const refused = (change: (v: Tree) => void, path: string) => {
      expect(validate(withChange(change))).toBe(false);
      expect(validate.errors!.map((e) => e.instancePath)).toContain(path);
    };
    refused((v) => (v.config.upstream.cooldownMS = 1000), '/config/upstream');
    refused((v) => (v.config.server.prot = 8080), '/config/server');
    refused((v) => (v.config.providers.openai.accounts[0].apiKeyEnvv = 'X'), '/config/providers/openai/accounts/0');
    refused((v) => (v.config.providers.openai.strategy = 'random'), '/config/providers/openai/strategy');
    refused((v) => (v.config.server.port = '8080'), '/config/server/port');
    refused((v) => (v.ipFamily = 'ipv6'), '/ipFamily');
    refused((v) => (v.config.keys = [{ id: 'k', name: 'k', sha256: 'a'.repeat(64), limits: [{ limit_type: 'requests', limit_window: 'hourly', max_value: 1 }] }]), '/config/keys/0/limits/0/limit_window');
    refused((v) => (v.replicaCont = 2), '');
  });

  it('offers the gateway\'s limit types and windows', () => {
    const limit = schema.properties.config.properties.keys.items.properties.limits.items.properties;
    expect(limit.limit_type.enum).toEqual([...LIMIT_TYPES]);
    expect(limit.limit_window.enum).toEqual([...LIMIT_WINDOWS]);
  });

  it('accepts values that set every feature, and refuses what the gateway would', () => {
    expect(validate(featureValues()), JSON.stringify(validate.errors)).toBe(true);
    const refused = (change: (v: Tree) => void, path: string) => {
      const v = featureValues();
      change(v);
      expect(validate(v)).toBe(false);
      expect(validate.errors!.map((e) => e.instancePath)).toContain(path);
    };
    refused((v) => (v.config.providers.openai.accounts[0].authFile = '/a.json'), '/config/providers/openai/accounts/0');
    refused((v) => (v.config.providers.anthropic.accounts[0].organization = 'org-1'), '/config/providers/anthropic/accounts/0');
    refused((v) => (v.config.providers.chatgpt.accounts[0].apiKeyEnv = 'X'), '/config/providers/chatgpt/accounts/0');
    refused((v) => (v.config.providers.chatgpt.accounts[2].authSecretKey = 'a.json'), '/config/providers/chatgpt/accounts/2');
    refused((v) => (v.config.providers.chatgpt.oauth.refreshLockMs = '30s'), '/config/providers/chatgpt/oauth/refreshLockMs');
    refused((v) => (v.config.dashboard.sessionTtl = 1), '/config/dashboard');
    refused((v) => (v.tracing.protocol = 'grpc'), '/tracing/protocol');
    refused((v) => (v.secrets.encryptionKey = 'too-short'), '/secrets/encryptionKey');
  });

  it('offers every config section and field of the gateway schema, or says where the chart sets it', () => {
    // set by the chart from env (pod, Secret), not from config.*
    const fromEnv: Record<string, string[]> = {
      '': ['adminToken', 'internalSecret', 'encryption'],
      server: ['host', 'internalHost', 'instanceId', 'advertiseUrl'],
      redis: ['url'],
    };
    const offered = (node: Tree) => Object.keys(node.properties as Tree);
    const config = schema.properties.config as Tree;
    expect([...offered(config), ...fromEnv['']!].sort()).toEqual(schemaKeys([]).sort());
    for (const section of configSections) {
      expect([...offered(config.properties[section]), ...(fromEnv[section] ?? [])].sort(), section).toEqual(schemaKeys([section]).sort());
    }
    const providers = config.properties.providers as Tree;
    expect(offered(providers).sort()).toEqual(schemaKeys(['providers']).sort());
    for (const name of offered(providers)) {
      const provider = providers.properties[name] as Tree;
      // `enabled` is the chart's; the credential is named by apiKeyEnv / mounted from authSecret
      expect(offered(provider).filter((k) => k !== 'enabled').sort(), name).toEqual(schemaKeys(['providers', name]).sort());
      const accountKeys = offered(provider.properties.accounts.items).filter((k) => !['apiKeyEnv', 'authSecret', 'authSecretKey'].includes(k));
      // the gateway refuses organization/project outside OpenAI, authFile outside ChatGPT
      const refusedHere = [...(name === 'openai' ? [] : ['organization', 'project']), ...(name === 'chatgpt' ? [] : ['authFile'])];
      const gatewayKeys = schemaKeys(['providers', name, 'accounts', '[]']).filter((k) => k !== 'apiKey' && !refusedHere.includes(k));
      expect(accountKeys.sort(), `${name} accounts`).toEqual(gatewayKeys.sort());
    }
    expect(offered(providers.properties.chatgpt.properties.oauth).sort()).toEqual(schemaKeys(['providers', 'chatgpt', 'oauth']).sort());
    expect(config.properties.keys.items.properties && Object.keys(config.properties.keys.items.properties).sort()).toEqual(schemaKeys(['keys', '[]']).sort());
  });

  it('offers the gateway\'s strategies', () => {
    for (const name of ['openai', 'anthropic', 'chatgpt']) {
      expect(schema.properties.config.properties.providers.properties[name].properties.strategy.enum).toEqual([...STRATEGIES]);
    }
  });

  it('describes config.* with the gateway schema names only', () => {
    const config = schema.properties.config.properties as Tree;
    for (const section of configSections) {
      expect(config[section].additionalProperties, section).toBe(false);
      const keys = Object.keys(config[section].properties);
      expect(keys.filter((k) => !schemaKeys([section]).includes(k)), section).toEqual([]);
      // every key values.yaml sets is described
      expect(Object.keys(values.config[section]).filter((k) => !keys.includes(k)), section).toEqual([]);
    }
  });
});

/** Metric names in a PromQL expression (the gateway's own and the Node.js defaults). */
const metricNames = (expr: string) => [...expr.matchAll(/\b(?:tollgate|process|nodejs)_[a-z0-9_]+/g)].map((m) => m[0]);

/** Every PromQL expression of the dashboard: panel targets and the template variables' queries. */
function dashboardExprs(): string[] {
  const dashboard = JSON.parse(read(join(chartDir, 'dashboards', 'tollgate.json'))) as Tree;
  const targets = (dashboard.panels as Tree[]).flatMap((p) => (p.targets ?? []) as Tree[]).map((t) => t.expr as string);
  const variables = (dashboard.templating.list as Tree[]).filter((v) => v.type === 'query').map((v) => v.query.query as string);
  return [...targets, ...variables];
}

/** Every `expr: |` block of the PrometheusRule template, with Helm actions blanked. */
function ruleExprs(): Array<{ alert: string; expr: string }> {
  const lines = template('prometheusrule.yaml').split('\n');
  const rules: Array<{ alert: string; expr: string }> = [];
  let alert = '';
  lines.forEach((line, i) => {
    alert = /- alert: (\w+)/.exec(line)?.[1] ?? alert;
    if (!/^\s+expr: \|\s*$/.test(line)) return;
    const indent = line.search(/\S/);
    const body: string[] = [];
    for (const next of lines.slice(i + 1)) {
      if (next.search(/\S/) <= indent) break;
      body.push(next.replace(/\{\{.*?\}\}/g, ''));
    }
    rules.push({ alert, expr: body.join(' ') });
  });
  return rules;
}

describe('dashboard and alert rules', () => {
  let gw: TestGateway;
  let exported: Map<string, string>;

  beforeAll(async () => {
    gw = await startTestGateway();
    const { secret } = await gw.createKey();
    // a served call (tokens, TTFB, durations) and a refused one (a gateway error by code)
    const served = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${secret}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] }),
    });
    expect(served.status).toBe(200);
    await served.text();
    const refused = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', body: '{}' });
    expect(refused.status).toBe(401);
    await refused.text();
    const text = await (await fetch(`${gw.internalUrl}/metrics`)).text();
    exported = new Map([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
  });
  afterAll(() => gw?.close());

  /** The registered metric a series name belongs to: histograms' _bucket/_sum/_count map to their base. */
  const baseName = (name: string) => {
    const base = name.replace(/_(bucket|sum|count)$/, '');
    return base !== name && ['histogram', 'summary'].includes(exported.get(base) ?? '') ? base : name;
  };

  const unknownIn = (exprs: string[]) => exprs.flatMap(metricNames).map(baseName).filter((name) => !exported.has(name));

  it('exports the error counter by code that the Redis panels and alerts read', async () => {
    const text = await (await fetch(`${gw.internalUrl}/metrics`)).text();
    expect(text).toMatch(/^tollgate_errors_total\{route="\/v1\/chat\/completions",code="invalid_api_key"\} 1$/m);
  });

  it('names only metrics the gateway exports, with labels they have', () => {
    const exprs = [...dashboardExprs(), ...ruleExprs().map((r) => r.expr)];
    expect(exprs.length).toBeGreaterThan(20);
    for (const expr of exprs) expect(metricNames(expr).length, expr).toBeGreaterThan(0);
    expect(unknownIn(exprs)).toEqual([]);
    // label names in matchers and `by (…)` exist on the metrics (job, instance and le come from Prometheus)
    const registry = gw.app.gateway.metrics.registry;
    const labelsOf = (name: string) =>
      (registry.getSingleMetric(baseName(name)) as unknown as { labelNames?: string[] } | undefined)?.labelNames ?? [];
    const scrapeLabels = ['job', 'instance', 'le'];
    const unknownLabels: string[] = [];
    for (const expr of exprs) {
      for (const m of expr.matchAll(/\b((?:tollgate|process|nodejs)_[a-z0-9_]+)\{([^}]*)\}/g)) {
        for (const label of m[2]!.matchAll(/(\w+)\s*(?:=~|!~|!=|=)/g)) {
          if (!scrapeLabels.includes(label[1]!) && !labelsOf(m[1]!).includes(label[1]!)) unknownLabels.push(`${m[1]}: ${label[1]}`);
        }
      }
      const available = new Set([...scrapeLabels, ...metricNames(expr).flatMap(labelsOf)]);
      for (const by of expr.matchAll(/\bby \(([^)]*)\)/g)) {
        for (const label of by[1]!.split(',').map((l) => l.trim())) if (!available.has(label)) unknownLabels.push(`${expr}: by ${label}`);
      }
    }
    expect(unknownLabels).toEqual([]);
  });

  it('has the alerts operators need, each on an exported metric', () => {
    const rules = ruleExprs();
    expect(rules.map((r) => r.alert)).toEqual([
      'TollgateHighErrorRate', 'TollgateNoUsableAccounts', 'TollgateAccountDisabled', 'TollgateRedisUnavailable',
      'TollgateUsageRecordsDropped', 'TollgateHighLatencyP99',
    ]);
    expect(unknownIn(rules.map((r) => r.expr))).toEqual([]);
  });

  it('catches a metric that does not exist', () => {
    expect(unknownIn(['rate(tollgate_requests_totl[5m])', 'histogram_quantile(0.99, tollgate_upstream_ttfb_seconds_bucket)'])).toEqual([
      'tollgate_requests_totl',
    ]);
  });
});
