// temporary: CPU/request of (a) a minimal Fastify+undici proxy and (b) the gateway, same harness
import autocannon from 'autocannon';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { generateKey } from '../src/auth/keys.js';
const key = generateKey();
const ready = (p: ReturnType<typeof spawn>) => new Promise<string>((r) => p.stdout!.on('data', (d) => { const m = /BENCH_READY (.*)/.exec(String(d)); if (m) { const j = JSON.parse(m[1]!); r(j.url ?? j.publicUrl); } }));
const mock = spawn(process.execPath, ['--import', 'tsx', 'bench/mock-process.ts'], { stdio: ['pipe', 'pipe', 'inherit'] });
const mockUrl = await ready(mock);
writeFileSync('/tmp/floor/min.mjs', `
import Fastify from '/work/main/node_modules/fastify/fastify.js';
import { request, Agent } from '/work/main/node_modules/undici/index.js';
const agent = new Agent();
const app = Fastify();
app.removeAllContentTypeParsers();
app.addContentTypeParser('*', { parseAs: 'buffer' }, (req, body, done) => done(null, body));
app.post('/v1/responses', async (req, reply) => {
  const res = await request(${JSON.stringify(mockUrl)} + '/v1/responses', { dispatcher: agent, method: 'POST', headers: { 'content-type': 'application/json', authorization: 'Bearer x' }, body: req.body });
  reply.code(res.statusCode).header('content-type', res.headers['content-type']);
  return reply.send(res.body);
});
const addr = await app.listen({ port: 0, host: '127.0.0.1' });
process.stdout.write('BENCH_READY ' + JSON.stringify({ publicUrl: addr }) + '\\n');
`);
const cfg = { server: { host: '127.0.0.1', port: 0, internalHost: '127.0.0.1', internalPort: 0 }, providers: { openai: { baseUrl: mockUrl, accounts: [{ id: 'a', apiKey: 'sk-upstream-xxxxxxxxxxxx' }] } }, keys: [{ id: 'k', name: 'k', sha256: key.sha256 }] };
const run = (url: string) => autocannon({ url: url + '/v1/responses', method: 'POST', connections: 20, duration: 4, headers: { 'content-type': 'application/json', authorization: `Bearer ${key.secret}` }, body: JSON.stringify({ model: 'gpt-5', input: 'hi' }) });
const cpu = (pid: number) => { const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' '); return (Number(f[11]) + Number(f[12])) * 10_000; };
const targets: Array<[string, string[], Record<string, string>]> = [
  ['minimal fastify+undici', ['/tmp/floor/min.mjs'], {}],
  ['gateway (dist)', [...(process.env.PROF ? ['--cpu-prof', '--cpu-prof-dir', '/tmp/pf2'] : []), '/tmp/gwp.mjs'], { BENCH_GATEWAY_CONFIG: JSON.stringify(cfg) }],
];
for (const [label, args, env] of targets) {
  const p = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, ...env } });
  const url = await ready(p);
  await run(url);
  const c0 = cpu(p.pid!); const r = await run(url); const c1 = cpu(p.pid!);
  console.log(`${label}: ${r.requests.average} rps, ${((c1 - c0) / r.requests.total).toFixed(0)} µs/req, non2xx ${r.non2xx}`);
  p.kill('SIGTERM'); await new Promise((r) => setTimeout(r, 1500));
}
mock.kill('SIGKILL');
process.exit(0);
