// A replica process writes its log lines to stdout in batches (src/telemetry/logger.ts): every
// line still arrives, whole, a lone one too, and what is buffered at shutdown.
import { EventEmitter } from 'node:events';
import { createInterface } from 'node:readline';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { generateKey } from '../src/auth/keys.js';
import { startMockUpstream, type MockUpstream } from '../src/mock/upstream.js';
import { boundedWait } from '../src/telemetry/logger.js';
import { listeningUrls, spawnReplica, writeReplicaConfig } from './support/replica-process.js';

let mock: MockUpstream;
beforeAll(async () => {
  mock = await startMockUpstream({ port: 0, host: '127.0.0.1' });
});
afterAll(() => mock.close());

describe('replica log on stdout', () => {
  it('every access line arrives whole, a lone one too, and the last ones at shutdown', async () => {
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

    // far less than a write's worth of bytes: written by the flush timer, not held back
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

describe('boundedWait: how long a buffered line may wait', () => {
  /** a destination whose writes complete when the test says so */
  class FakeStream extends EventEmitter {
    destroyed = false;
    flushes = 0;
    flush() {
      this.flushes += 1;
    }
  }
  afterEach(() => vi.useRealTimers());

  it('flushes a lone line after the delay, again while bytes still wait (a write in progress), and stops once all are written', () => {
    vi.useFakeTimers();
    const stream = new FakeStream();
    const hook = boundedWait(stream, 100);
    expect(hook('{"a":1}\n')).toBe('{"a":1}\n');
    hook('{"b":2}\n');
    vi.advanceTimersByTime(99);
    expect(stream.flushes).toBe(0);
    vi.advanceTimersByTime(1);
    expect(stream.flushes).toBe(1);
    // that flush found a write in progress: the lines still wait, so it is tried again
    vi.advanceTimersByTime(100);
    expect(stream.flushes).toBe(2);
    // part of them written: the rest is still flushed
    stream.emit('write', 8);
    vi.advanceTimersByTime(100);
    expect(stream.flushes).toBe(3);
    // all written: no more flushes and no timer left
    stream.emit('write', 8);
    vi.advanceTimersByTime(100);
    expect(stream.flushes).toBe(3);
    expect(vi.getTimerCount()).toBe(0);
    // the next line arms it again; multi-byte characters are counted in bytes
    hook('"é"\n');
    vi.advanceTimersByTime(100);
    expect(stream.flushes).toBe(4);
    stream.emit('write', Buffer.byteLength('"é"\n'));
    vi.advanceTimersByTime(100);
    expect(stream.flushes).toBe(4);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('never flushes a destroyed stream', () => {
    vi.useFakeTimers();
    const stream = new FakeStream();
    const hook = boundedWait(stream, 100);
    hook('line\n');
    stream.destroyed = true;
    vi.advanceTimersByTime(500);
    expect(stream.flushes).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
  });
});
