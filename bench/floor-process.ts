/**
 * Child process: the floor of this stack — a bare Fastify route that forwards the body to the mock
 * with undici and streams the answer back: no auth, limits, metering, logging or metrics. The
 * gateway's distance from it is the cost of what it does per request. `GET /health/live` answers
 * like the gateway's, so the burst rows can show how long the floor's own loop stalls.
 * Prints `BENCH_READY {"publicUrl": ...}` once listening.
 *
 * `BENCH_PASS_HEADERS` (comma-separated names): headers of the incoming request passed on as they
 * are, instead of a fixed Bearer — for a bare hop in front of a gateway, which checks them.
 */
import Fastify from 'fastify';
import { Agent, request } from 'undici';
import { announceReady, exitWithParent } from './child-support.js';

const upstream = process.env.BENCH_MOCK_URL;
if (!upstream) throw new Error('BENCH_MOCK_URL is not set');
const passed = (process.env.BENCH_PASS_HEADERS ?? '').split(',').filter(Boolean);
const agent = new Agent();
// the gateway's default body limit, so the 2 MB row passes here as it does there
const app = Fastify({ bodyLimit: 16 * 1024 * 1024 });
app.removeAllContentTypeParsers();
app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => done(null, body));
app.get('/health/live', async () => ({ status: 'ok' }));
app.post('/v1/responses', async (req, reply) => {
  const res = await request(upstream + '/v1/responses', {
    dispatcher: agent,
    method: 'POST',
    headers: passed.length
      ? Object.fromEntries(passed.map((name) => [name, String(req.headers[name] ?? '')]))
      : { 'content-type': 'application/json', authorization: 'Bearer floor' },
    body: req.body as Buffer,
  });
  reply.code(res.statusCode).header('content-type', res.headers['content-type']);
  return reply.send(res.body);
});
exitWithParent(() => app.close());
const publicUrl = await app.listen({ port: 0, host: '127.0.0.1' });
announceReady({ publicUrl, pid: process.pid });
