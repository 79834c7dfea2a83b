/**
 * Child process: one gateway built from the raw config in `BENCH_GATEWAY_CONFIG` (JSON, validated
 * by `buildConfig` exactly like a config file, without reading this process's env), listening
 * on loopback port 0. Prints `BENCH_READY {"publicUrl": ..., "internalUrl": ...}` once listening.
 *
 * Logging stays at the production default level (`info`: one access line per request) so its
 * cost is part of the measurement; lines go to /dev/null. `BENCH_LOG_LEVEL=silent` measures
 * without it.
 */
import { announceReady, exitWithParent, fromDist } from './child-support.js';

// the compiled gateway (`npm run build`), as production runs it, not src/ through tsx; first the
// V8 settings a replica process (dist/main.js) starts with, so the CPU measured is production's
const { startupFinished } = await fromDist<typeof import('../src/v8-tuning.js')>('v8-tuning.js');
const { buildApp } = await fromDist<typeof import('../src/app.js')>('app.js');
const { buildConfig } = await fromDist<typeof import('../src/config/load.js')>('config/load.js');
const { replicaLogger } = await fromDist<typeof import('../src/telemetry/logger.js')>('telemetry/logger.js');

const rawJson = process.env.BENCH_GATEWAY_CONFIG;
if (!rawJson) throw new Error('BENCH_GATEWAY_CONFIG is not set');

const config = buildConfig(JSON.parse(rawJson), {});
// a replica's own logger (batched asynchronous writes), into /dev/null
const logger = replicaLogger(process.env.BENCH_LOG_LEVEL ?? 'info', '/dev/null');
const app = await buildApp(config, { logger });
exitWithParent(() => app.close());
const { publicUrl, internalUrl } = await app.listen();
startupFinished();
announceReady({ publicUrl, internalUrl, store: app.gateway.store.kind, pid: process.pid });
