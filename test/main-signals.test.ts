// The replica process (src/main.ts) handles SIGTERM from its first moments: a pod deleted while it
// is still connecting to Redis exits cleanly instead of dying by the signal's default action.
import { createServer, type Server } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { INTERNAL_SECRET } from './support/cluster.js';
import { spawnReplica, writeReplicaConfig } from './support/replica-process.js';

describe('replica process signals', () => {
  const sockets = new Set<import('node:net').Socket>();
  // a "Redis" that accepts and never answers: the replica stays in its start-up, connected
  const silentRedis: Server = createServer((socket) => sockets.add(socket));
  afterAll(() => {
    sockets.forEach((s) => s.destroy());
    silentRedis.close();
  });

  it('exits 0 on a SIGTERM received while still starting', async () => {
    await new Promise<void>((resolve) => silentRedis.listen(0, '127.0.0.1', resolve));
    const port = (silentRedis.address() as { port: number }).port;
    const configPath = writeReplicaConfig({
      server: { host: '127.0.0.1', port: 0, internalHost: '127.0.0.1', internalPort: 0 },
      providers: { openai: { baseUrl: 'http://127.0.0.1:9', accounts: [{ id: 'oa-1', apiKey: 'sk-unused' }] } },
    });
    const connected = new Promise<void>((resolve) => silentRedis.once('connection', () => resolve()));
    const child = spawnReplica(
      { TOLLGATE_CONFIG: configPath, REDIS_URL: `redis://127.0.0.1:${port}`, TOLLGATE_INTERNAL_SECRET: INTERNAL_SECRET },
      { stdio: 'ignore' },
    );
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.once('exit', (code, signal) => resolve({ code, signal })),
    );
    // the store connection is made after the handlers are registered (and before anything listens)
    await connected;
    child.kill('SIGTERM');
    // within the store's 5 s start-up bound, which would otherwise end the process with 1
    expect(await exited).toEqual({ code: 0, signal: null });
  });
});
