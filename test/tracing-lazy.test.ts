// The OpenTelemetry SDK is loaded only when tracing is on (it would otherwise be a large part of
// an idle replica's memory), and a replica that wants it but cannot load it does not start.
import { describe, expect, it } from 'vitest';
import { runReplicaProcess } from './support/replica-process.js';

// a module-resolution hook in the replica process: the SDK's packages are not installed, as far
// as this replica can tell
const HOOK = `export async function resolve(specifier, context, next) {
  if (/^@opentelemetry\\/(sdk-trace-base|exporter-trace-otlp-)/.test(specifier)) throw new Error('Cannot find package ' + specifier);
  return next(specifier, context);
}`;
const REGISTER = `import { register } from 'node:module'; register(${JSON.stringify(`data:text/javascript,${encodeURIComponent(HOOK)}`)});`;

const runReplica = (tracing: boolean) =>
  runReplicaProcess({
    config: {
      server: { host: '127.0.0.1', port: 0, internalHost: '127.0.0.1', internalPort: 0 },
      providers: { openai: { baseUrl: 'http://127.0.0.1:9', accounts: [{ id: 'oa-1', apiKey: 'sk-unused' }] } },
      telemetry: { tracing },
    },
    imports: [`data:text/javascript,${encodeURIComponent(REGISTER)}`],
  });

describe('tracing is loaded only when on', () => {
  it('an untraced replica starts without the SDK installed', async () => {
    const run = await runReplica(false);
    expect(run.stderr).toBe('');
    expect(run.listening).toBe(true);
  });

  it('a traced replica that cannot load the SDK stops at start with one line saying so', async () => {
    const run = await runReplica(true);
    expect(run.listening).toBe(false);
    expect(run.code).toBe(1);
    expect(run.stderr.trim().split('\n')).toEqual([
      expect.stringMatching(/^tollgate: failed to start: tracing is on, but its OpenTelemetry SDK \(OTLP http\/protobuf exporter\) did not start: Cannot find package @opentelemetry\/sdk-trace-base/),
    ]);
  });
});
