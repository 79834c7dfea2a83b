// first: V8 settings that must precede the loading of every other module
import { startupFinished } from './v8-tuning.js';
import { buildApp, type App } from './app.js';
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

  // Registered before anything listens: a SIGTERM that arrives while starting must not kill the
  // process with Node's default action once connections may have been accepted.
  let app: App | undefined;
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    // still starting: nothing was served yet, nothing to drain
    if (!app) process.exit(0);
    const running = app;
    running.gateway.log.info({ signal }, 'draining: readiness fails, in-flight streams may finish');
    // past the grace period, in-flight streams are cut off
    setTimeout(() => process.exit(1), config.server.shutdownGraceMs).unref();
    const exit = (code: number) => running.gateway.log.flush(() => process.exit(code));
    running.close().then(
      () => exit(0),
      (err) => {
        running.gateway.log.error({ err }, 'shutdown failed');
        exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));

  const built = await buildApp(config);
  app = built;
  const { publicUrl, internalUrl } = await built.listen();
  startupFinished();
  built.gateway.log.info({ publicUrl, internalUrl, store: built.gateway.store.kind }, 'tollgate listening');
}

main().catch((err) => {
  console.error(`tollgate: failed to start: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
