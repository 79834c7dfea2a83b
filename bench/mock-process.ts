/**
 * Child process: the mock upstream alone on a free loopback port, recording off, plus a tiny
 * control listener for the held-stream measurement (`POST /hold`: every stream waits after its
 * first event; `POST /release`: they all finish).
 * Prints `BENCH_READY {"url": ..., "controlUrl": ...}` once listening.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { announceReady, exitWithParent, fromDist } from './child-support.js';

const { startMockUpstream } = await fromDist<typeof import('../src/mock/upstream.js')>('mock/upstream.js');

const mock = await startMockUpstream({ port: 0, host: '127.0.0.1', record: false });
let release: (() => void) | undefined;
const control = createServer((req, res) => {
  if (req.url === '/hold') {
    release?.();
    release = mock.holdStreams();
  } else if (req.url === '/release') {
    release?.();
    release = undefined;
  }
  res.end();
});
await new Promise<void>((resolve) => control.listen(0, '127.0.0.1', resolve));
exitWithParent(async () => {
  release?.();
  control.close();
  await mock.close();
});
announceReady({ url: mock.url, controlUrl: `http://127.0.0.1:${(control.address() as AddressInfo).port}`, pid: process.pid });
