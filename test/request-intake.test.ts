import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { pino } from 'pino';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { CONTEXT_HEADER, signContext } from '../src/bridge/context.js';
import { sessionOf } from '../src/http/session-key.js';
import { buildHttpServer } from '../src/server/http.js';
import { MAX_JSON_DEPTH } from '../src/server/json-depth.js';
import { INTERNAL_SECRET } from './support/cluster.js';
import { startTestGateway, type TestGateway } from './support/gateway.js';
import { OPENAI_BODY, call, readEvents } from './support/http.js';

const BODY_TIMEOUT_MS = 500;
const NESTED = Buffer.alloc(16 * 1024 * 1024, '[');

const LOOPBACK = { host: '127.0.0.1', port: 0, internalHost: '127.0.0.1', internalPort: 0 };

/** default bounds (16 MiB uploads must fit the body deadline on a loaded machine) */
let gw: TestGateway;
/** a short body deadline, same upstream */
let slowGw: TestGateway;
let key: { id: string; secret: string };

beforeAll(async () => {
  gw = await startTestGateway({ config: () => ({ internalSecret: INTERNAL_SECRET, adminToken: 'admin-token-' + 'x'.repeat(20) }) });
  slowGw = await startTestGateway({
    mock: gw.mock,
    store: gw.store,
    config: () => ({ server: { ...LOOPBACK, requestBodyTimeoutMs: BODY_TIMEOUT_MS }, internalSecret: INTERNAL_SECRET }),
  });
});
afterAll(async () => {
  await slowGw.close();
  await gw.close();
});
beforeEach(async () => {
  gw.mock.reset();
  key = await gw.createKey();
});

interface EarlyAnswer {
  status: number;
  json: any;
  /** body bytes the client still held when the answer came: the server had not read the body */
  unsentBytes: number;
  /** whether a /health/live sent during the upload was answered before this answer */
  healthAnsweredDuringUpload: boolean;
}

/**
 * Uploads `body` (never ending the request) and, once the upload is under way, asks the same
 * listener's /health/live: the answer to the upload, and what the client still had to send then.
 */
function uploadWithHealthCheck(base: string, method: string, path: string, body: Buffer, headers: Record<string, string> = {}) {
  return new Promise<EarlyAnswer>((resolve, reject) => {
    let healthAnswered = false;
    const req = httpRequest(base + path, {
      method,
      headers: { 'content-type': 'application/json', 'content-length': body.length, ...headers },
      agent: false,
    });
    req.on('error', () => {}); // EPIPE/ECONNRESET: the server closed the connection after answering
    req.on('response', (res) => {
      const unsentBytes = req.writableLength;
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        req.destroy();
        resolve({ status: res.statusCode!, json: JSON.parse(Buffer.concat(chunks).toString()), unsentBytes, healthAnsweredDuringUpload: healthAnswered });
      });
      res.on('error', reject);
    });
    req.write(body);
    fetch(`${base}/health/live`).then(
      (res) => (healthAnswered = res.status === 200 && req.writableLength > 0),
      reject,
    );
  });
}

describe('no body is read before the caller is authenticated', () => {
  const publicCases = [
    ['PUT on a model route (405)', 'PUT', '/v1/responses', 405, 'method_not_allowed'],
    ['an unknown path (404)', 'POST', '/v1/no/such/route', 404, 'not_found'],
    ['a model route without a key (401)', 'POST', '/v1/responses', 401, 'invalid_api_key'],
    ['the admin API without the token (401)', 'POST', '/admin/keys', 401, 'invalid_admin_token'],
  ] as const;

  it.each(publicCases)('16 MiB of [[[[ to %s is answered from the request line while the upload is in flight', async (_name, method, path, status, code) => {
    const answer = await uploadWithHealthCheck(gw.url, method, path, NESTED);
    expect(answer.status).toBe(status);
    expect(answer.json.error.code).toBe(code);
    expect(answer.unsentBytes).toBeGreaterThan(0);
  });

  it('/health/live keeps answering while a 16 MiB upload without a key is in flight', async () => {
    const answer = await uploadWithHealthCheck(gw.url, 'PUT', '/v1/responses', NESTED);
    expect(answer.status).toBe(405);
    expect(answer.healthAnsweredDuringUpload).toBe(true);
  });

  it('a small malformed body to a wrong method or an unknown path is not parsed (no invalid_json)', async () => {
    for (const [method, path, status] of [['PUT', '/v1/responses', 405], ['POST', '/nothing', 404], ['POST', '/v1/responses', 401]] as const) {
      const res = await call(gw.url, path, { method, headers: { 'content-type': 'application/json' }, body: '{bad' });
      expect(res.status, `${method} ${path}`).toBe(status);
      expect(res.json.error.code).not.toBe('invalid_json');
    }
  });

  const internalCases = [
    ['PUT on the internal route (405)', 'PUT', '/internal/bridge/responses', {}, 405, 'method_not_allowed'],
    ['an unknown internal path (404)', 'POST', '/internal/nothing', {}, 404, 'not_found'],
    ['the internal route without a context (401)', 'POST', '/internal/bridge/responses', {}, 401, 'context_bad_signature'],
    ['the internal route with a forged context (401)', 'POST', '/internal/bridge/responses', { [CONTEXT_HEADER]: 'e30.AAAA' }, 401, 'context_bad_signature'],
    ['the internal route with a malformed context (400)', 'POST', '/internal/bridge/responses', { [CONTEXT_HEADER]: 'no-dot' }, 400, 'context_malformed'],
  ] as const;

  it.each(internalCases)('internal listener: 16 MiB to %s is answered before the body is read', async (_name, method, path, headers, status, code) => {
    const answer = await uploadWithHealthCheck(gw.internalUrl, method, path, NESTED, headers);
    expect(answer.status).toBe(status);
    expect(answer.json.error.code).toBe(code);
    expect(answer.unsentBytes).toBeGreaterThan(0);
  });

  it('an expired internal context is refused before the body is read', async () => {
    const expired = internalContext(Buffer.from('{}'), Date.now() - 60_000);
    const answer = await uploadWithHealthCheck(gw.internalUrl, 'POST', '/internal/bridge/responses', NESTED, { [CONTEXT_HEADER]: expired });
    expect(answer.status).toBe(401);
    expect(answer.json.error.code).toBe('context_expired');
    expect(answer.unsentBytes).toBeGreaterThan(0);
  });
});

describe('JSON nesting bound for authenticated callers', () => {
  it(`16 MiB of [[[[ with a key is refused as invalid_json without stalling the loop`, async () => {
    // the gateway runs in this process: its event loop is this one
    const loopDelay = monitorEventLoopDelay({ resolution: 10 });
    loopDelay.enable();
    const res = await call(gw.url, '/v1/responses', { headers: { 'x-api-key': key.secret }, body: NESTED.toString() });
    loopDelay.disable();
    expect(res.status).toBe(400);
    expect(res.json.error).toMatchObject({ code: 'invalid_json', message: `Request body nests deeper than ${MAX_JSON_DEPTH} levels.` });
    // the message shows the pre-scan refused it, not JSON.parse (which stalled the loop ~10 s on
    // this body); receiving 16 MiB still costs copies, so the stall bound is loose for a loaded machine
    expect(loopDelay.max / 1e6).toBeLessThan(3_000);
    expect(gw.mock.requests).toHaveLength(0);
  });

  it(`a body nesting exactly ${MAX_JSON_DEPTH} levels passes; brackets inside strings do not count`, async () => {
    // the object and `metadata` are two levels
    const nested = JSON.parse('['.repeat(MAX_JSON_DEPTH - 2) + ']'.repeat(MAX_JSON_DEPTH - 2));
    const body = { ...OPENAI_BODY, input: '[[[['.repeat(1_000), metadata: { deep: nested } };
    const res = await call(gw.url, '/v1/responses', { headers: { 'x-api-key': key.secret }, body });
    expect(res.status, res.text).toBe(200);
    expect(gw.mock.requests[0]!.json).toEqual(body);
  });
});

function internalContext(body: Buffer, now = Date.now(), target: TestGateway = gw): string {
  return signContext(
    {
      keyId: key.id,
      authSource: 'x-api-key',
      originInstance: 'replica-elsewhere',
      targetInstance: target.app.bridge.identity.instanceId,
      sessionKey: sessionOf({ 'session-id': 'slow' }, key.id)!.key,
      body,
      ttlSec: 30,
    },
    INTERNAL_SECRET,
    now,
  );
}

interface SlowAnswer {
  status: number;
  json: any;
  elapsedMs: number;
}

/**
 * A raw client that sends the headers, then one body byte every 100 ms of a body announced as
 * 1 000 bytes (100 s to send). Resolves once the server has answered and closed the connection.
 */
function slowWriter(base: string, path: string, headers: Record<string, string>): Promise<SlowAnswer> {
  const { port } = new URL(base);
  const started = Date.now();
  const socket = connect(Number(port), '127.0.0.1');
  const head = [`POST ${path} HTTP/1.1`, 'host: 127.0.0.1', 'content-type: application/json', 'content-length: 1000']
    .concat(Object.entries(headers).map(([name, value]) => `${name}: ${value}`))
    .join('\r\n');
  socket.write(`${head}\r\n\r\n{`);
  const drip = setInterval(() => socket.writable && socket.write(' '), 100);
  let received = '';
  socket.on('data', (chunk) => (received += chunk));
  socket.on('error', () => {}); // EPIPE: writing after the server closed
  return new Promise((resolve) =>
    socket.on('close', () => {
      clearInterval(drip);
      const [head = '', body = ''] = received.split('\r\n\r\n');
      resolve({ status: Number(head.split(' ')[1]), json: body ? JSON.parse(body) : undefined, elapsedMs: Date.now() - started });
    }),
  );
}

describe(`request body deadline (server.requestBodyTimeoutMs = ${BODY_TIMEOUT_MS})`, () => {
  it('a slow writer with a key gets 408 request_timeout in provider shape, and the connection closes', async () => {
    const answer = await slowWriter(slowGw.url, '/v1/responses', { 'x-api-key': key.secret });
    expect(answer.status).toBe(408);
    expect(answer.json).toEqual({ error: { message: `The request body did not arrive within ${BODY_TIMEOUT_MS} ms.`, type: 'invalid_request_error', code: 'request_timeout', param: null } });
    expect(answer.elapsedMs).toBeGreaterThanOrEqual(BODY_TIMEOUT_MS - 50);
    expect(gw.mock.requests).toHaveLength(0);
  });

  it('an Anthropic route answers 408 in its own shape', async () => {
    const answer = await slowWriter(slowGw.url, '/v1/messages', { 'x-api-key': key.secret });
    expect(answer.status).toBe(408);
    expect(answer.json).toMatchObject({ type: 'error', error: { type: 'invalid_request_error', code: 'request_timeout' } });
  });

  it('a slow writer without a key gets 401 and the connection closes, before any deadline', async () => {
    const answer = await slowWriter(slowGw.url, '/v1/responses', {});
    expect(answer.status).toBe(401);
    expect(answer.json.error.code).toBe('invalid_api_key');
  });

  it('internal listener: a slow writer with a valid context gets 408; one without gets 401', async () => {
    const withContext = await slowWriter(slowGw.internalUrl, '/internal/bridge/responses', {
      [CONTEXT_HEADER]: internalContext(Buffer.from('{}'), Date.now(), slowGw),
      'session-id': 'slow',
    });
    expect(withContext.status).toBe(408);
    expect(withContext.json.error.code).toBe('request_timeout');
    const without = await slowWriter(slowGw.internalUrl, '/internal/bridge/responses', {});
    expect(without.status).toBe(401);
  });

  it('a streamed response outlives the deadline', async () => {
    const release = gw.mock.holdStreams();
    try {
      const res = await fetch(`${slowGw.url}/v1/responses`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-api-key': key.secret },
        body: JSON.stringify({ ...OPENAI_BODY, stream: true }),
      });
      expect(res.status).toBe(200);
      const reader = res.body!.getReader();
      const state = { buffer: '' };
      await readEvents(reader, state, 1);
      // a slow writer started after the stream timed out: the deadline has passed for the stream too
      expect((await slowWriter(slowGw.url, '/v1/responses', { 'x-api-key': key.secret })).status).toBe(408);
      release();
      let rest = state.buffer;
      for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) rest += new TextDecoder().decode(chunk.value);
      expect(rest).toContain('response.completed');
    } finally {
      release();
    }
  });
});

describe('/metrics', () => {
  it('is served on the internal listener and not on the public one', async () => {
    const internal = await fetch(`${gw.internalUrl}/metrics`);
    expect(internal.status).toBe(200);
    expect(await internal.text()).toContain('tollgate_requests_total');
    const pub = await call(gw.url, '/metrics');
    expect(pub.status).toBe(404);
    expect(pub.json.error.code).toBe('not_found');
  });

  it('is public too with server.publicMetrics: true', async () => {
    const open = await startTestGateway({
      mock: gw.mock,
      config: () => ({ server: { ...LOOPBACK, publicMetrics: true } }),
    });
    try {
      expect((await fetch(`${open.url}/metrics`)).status).toBe(200);
      expect((await fetch(`${open.internalUrl}/metrics`)).status).toBe(200);
    } finally {
      await open.close();
    }
  });
});

describe('route input is checked with zod, not JSON schemas', () => {
  it('a route given a JSON schema fails to register, so Fastify never loads its schema compilers', async () => {
    const app = buildHttpServer({ logger: pino({ level: 'silent' }), bodyLimit: 1024, requestBodyTimeoutMs: 1_000 });
    app.post('/with-schema', { schema: { body: { type: 'object' } } }, async () => ({}));
    await expect(app.ready()).rejects.toThrow(/no JSON schemas/);
    await app.close();
  });
});
