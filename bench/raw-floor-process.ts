/**
 * Child process: a pass-through proxy with no framework at all — `node:http` and undici's
 * low-level `dispatch`, the upstream's bytes written straight to the client's response, no body
 * streams in between. Not a target: it shows how much of the bare Fastify proxy's cost is the
 * framework and stream machinery, i.e. what a gateway core built this way would start from.
 * Prints `BENCH_READY {"publicUrl": ...}` once listening.
 */
import { createServer } from 'node:http';
import { Agent, type Dispatcher } from 'undici';
import { announceReady, exitWithParent } from './child-support.js';

const upstream = process.env.BENCH_MOCK_URL;
if (!upstream) throw new Error('BENCH_MOCK_URL is not set');
const origin = new URL(upstream).origin;
const agent = new Agent();

const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => {
    const handler: Dispatcher.DispatchHandler = {
      onRequestStart() {},
      onResponseStart(_controller, statusCode, headers) {
        res.writeHead(statusCode, { 'content-type': String(headers['content-type'] ?? 'application/json') });
      },
      onResponseData(_controller, chunk) {
        res.write(chunk);
      },
      onResponseEnd() {
        res.end();
      },
      onResponseError() {
        res.destroy();
      },
    };
    agent.dispatch(
      { origin, path: req.url ?? '/', method: 'POST', headers: { 'content-type': 'application/json', authorization: 'Bearer floor' }, body: Buffer.concat(chunks) },
      handler,
    );
  });
});
exitWithParent(() => new Promise<void>((resolve) => server.close(() => resolve())));
server.listen(0, '127.0.0.1', () => {
  const address = server.address() as { port: number };
  announceReady({ publicUrl: `http://127.0.0.1:${address.port}`, pid: process.pid });
});
