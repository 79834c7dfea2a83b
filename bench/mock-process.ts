/**
 * Child process: the mock upstream alone on a free loopback port, recording off.
 * Prints `BENCH_READY {"url": ...}` once listening.
 */
import { announceReady, exitWithParent, fromDist } from './child-support.js';

const { startMockUpstream } = await fromDist<typeof import('../src/mock/upstream.js')>('mock/upstream.js');

const mock = await startMockUpstream({ port: 0, host: '127.0.0.1', record: false });
exitWithParent(() => mock.close());
announceReady({ url: mock.url, pid: process.pid });
