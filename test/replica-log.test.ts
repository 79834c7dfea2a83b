// A replica process writes its log lines to stdout in batches (src/telemetry/logger.ts): every
// line still arrives, whole, a lone one within the flush delay, and what is buffered at shutdown.
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKey } from '../src/auth/keys.js';
import { startMockUpstream, type MockUpstream } from '../src/mock/upstream.js';
import { listeningUrls, spawnReplica, writeReplicaConfig } from './support/replica-process.js';

let mock: MockUpstream;
beforeAll(async () => {
  mock = await startMockUpstream({ port: 0, host: '127.0.0.1' });
});
afterAll(() => mock.close());

describe('replica log on stdout', () => {
  it('every access line arrives whole and in time, a lone one too, and the last ones at shutdown', async () => {
    const key = generateKey();
    const child = spawnReplica({
      TOLLGATE_CONFIG: writeReplicaConfig({
        server: { host: '127.0.0.1', port: 0, internalHost: '127.0.0.1', internalPort: 0 },
        providers: { openai: { baseUrl: mock.url, accounts: [{ id: 'oa-1', apiKey: 'sk-upstream-' + 'x'.repeat(24) }] } },
        keys: [{ id: key.id, name: 'log', sha256: key.sha256 }],
      }),
    });
    const lines: Array<Record<string, unknown>> = [];
    const notJson: string[] = [];
    let publicUrl: string | undefined;
    createInterface({ input: child.stdout! }).on('line', (line) => {
      publicUrl ??= listeningUrls(line)?.publicUrl;
      try {
        lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        notJson.push(line);
      }
    });
    const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
    await expect.poll(() => publicUrl, { timeout: 30_000 }).toBeDefined();
    const accessLine = (reqId: string) => lines.find((line) => line.msg === 'request' && line.reqId === reqId);
    const call = (reqId: string) =>
      fetch(`${publicUrl}/v1/responses`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${key.secret}`, 'x-request-id': reqId },
        body: JSON.stringify({ model: 'gpt-5', input: 'hi' }),
      }).then((res) => res.text().then(() => res.status));

    // far less than a write's worth of bytes: written by the flush timer, not held
    expect(await call('lone-1')).toBe(200);
    await expect.poll(() => accessLine('lone-1')).toMatchObject({ status: 200, keyId: key.id, accountId: 'oa-1' });

    // many at once: each whole, none lost or split across writes
    const ids = Array.from({ length: 60 }, (_, i) => `burst-${i}`);
    expect(await Promise.all(ids.map(call))).toEqual(ids.map(() => 200));
    await expect.poll(() => ids.filter((id) => accessLine(id)).length).toBe(ids.length);

    // the lines of the last requests and of the shutdown itself are flushed before the exit
    expect(await call('last-1')).toBe(200);
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(accessLine('last-1')).toMatchObject({ status: 200 });
    expect(lines.some((line) => line.msg === 'draining: readiness fails, in-flight streams may finish')).toBe(true);
    expect(notJson).toEqual([]);
  });
});
