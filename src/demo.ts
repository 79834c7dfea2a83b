import { pino } from 'pino';
import { buildApp } from './app.js';
import { hashSecret, KEY_PREFIX } from './auth/keys.js';
import { buildConfig } from './config/load.js';
import { startMockUpstream } from './mock/upstream.js';
import { randomBytes } from 'node:crypto';

/** `npm run demo`: the bundled mock upstream plus one gateway on the embedded store. */
async function demo(): Promise<void> {
  const mock = await startMockUpstream({ port: 0, record: false });
  const demoKey = KEY_PREFIX + 'demo-' + randomBytes(12).toString('base64url');
  const adminToken = 'demo-admin-' + randomBytes(12).toString('base64url');
  const config = buildConfig({
    server: {
      host: '127.0.0.1',
      port: Number(process.env.TOLLGATE_PORT ?? 8080),
      internalHost: '127.0.0.1',
      internalPort: Number(process.env.TOLLGATE_INTERNAL_PORT ?? 8081),
    },
    providers: {
      openai: { baseUrl: mock.url, accounts: [{ id: 'mock-openai', apiKey: 'sk-mock-upstream-openai' }] },
      anthropic: { baseUrl: mock.url, accounts: [{ id: 'mock-anthropic', apiKey: 'sk-mock-upstream-anthropic' }] },
    },
    keys: [{ id: 'demo', name: 'demo', sha256: hashSecret(demoKey) }],
    adminToken,
    dashboard: { enabled: true },
  });
  const app = await buildApp(config, { logger: pino({ level: process.env.LOG_LEVEL ?? 'warn' }) });
  const { publicUrl } = await app.listen();
  console.log(`Tollgate demo: gateway ${publicUrl}, mock upstream ${mock.url}, embedded store`);
  console.log(`Demo key: ${demoKey}`);
  console.log(
    `Try: curl -s ${publicUrl}/v1/responses -H "Authorization: Bearer ${demoKey}" -H 'content-type: application/json' -d '{"model":"gpt-5","input":"hi"}'`,
  );
  console.log(`Usage: curl -s ${publicUrl}/v1/usage -H "x-api-key: ${demoKey}"`);
  console.log(`Dashboard: ${publicUrl}/dashboard (admin token: ${adminToken}); your key's page: ${publicUrl}/dashboard/me`);
  const stop = async () => {
    await app.close();
    await mock.close();
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

demo().catch((err) => {
  console.error(`demo failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
