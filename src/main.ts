import { buildApp } from './app.js';
import { ConfigError, loadConfig } from './config/load.js';

/** `npm start`: one replica from `TOLLGATE_CONFIG` and the environment. */
async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      process.exit(1);
    }
    throw err;
  }
  const app = await buildApp(config);
  const { publicUrl, internalUrl } = await app.listen();
  app.gateway.log.info({ publicUrl, internalUrl, store: app.gateway.store.kind }, 'tollgate listening');

  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    app.gateway.log.info({ signal }, 'draining: readiness fails, in-flight streams may finish');
    // past the grace period, in-flight streams are cut off
    setTimeout(() => process.exit(1), config.server.shutdownGraceMs).unref();
    const exit = (code: number) => app.gateway.log.flush(() => process.exit(code));
    app.close().then(
      () => exit(0),
      (err) => {
        app.gateway.log.error({ err }, 'shutdown failed');
        exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

main().catch((err) => {
  console.error(`tollgate: failed to start: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
