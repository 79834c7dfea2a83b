import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { connect } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { startMockUpstream, type MockUpstream } from '../src/mock/upstream.js';
import { OPENAI_SECRET, allHeaderText, servedTotals, startTestGateway, useTestGateway, type TestGateway } from './support/gateway.js';
import { call, closedPort, metricValue, usageOf } from './support/http.js';

const SECOND_SECRET = 'sk-upstream-openai-second-' + 'c'.repeat(24);
const CODEX_HEADERS = {
  'OpenAI-Beta': 'responses_websockets=2026-02-06',
  'session-id': 'sess-123',
  originator: 'codex_cli_rs',
  'x-codex-turn-state': 'turn-abc',
  // what an outside caller must never get through
  'x-tollgate-context': 'forged.context',
  'x-forwarded-for': '203.0.113.9',
};
const WARM_UP = { type: 'response.create', model: 'gpt-5', generate: false, input: [] };

const wsUrl = (gw: TestGateway, path = '/v1/responses') => gw.url.replace(/^http/, 'ws') + path;
const until = <T>(what: () => T | undefined, timeoutMs = 10_000) =>
  expect.poll(what, { timeout: timeoutMs, interval: 10 });

interface Received {
  data: Buffer;
  isBinary: boolean;
}

/** A client WebSocket through the gateway; listeners attached before it opens. */
async function openClient(gw: TestGateway, headers: Record<string, string>, path?: string, perMessageDeflate = true) {
  const ws = new WebSocket(wsUrl(gw, path), { headers, perMessageDeflate });
  const received: Received[] = [];
  const waiters: Array<() => void> = [];
  ws.on('message', (data, isBinary) => {
    received.push({ data: data as Buffer, isBinary });
    waiters.splice(0).forEach((wake) => wake());
  });
  let upgrade: IncomingMessage | undefined;
  ws.once('upgrade', (res) => (upgrade = res));
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })),
  );
  await new Promise<void>((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  let read = 0;
  /** The next frame, waiting up to `timeoutMs`. */
  const next = async (timeoutMs = 10_000): Promise<Received> => {
    const deadline = Date.now() + timeoutMs;
    while (read >= received.length) {
      if (Date.now() > deadline) throw new Error('no frame in time');
      await new Promise<void>((wake) => {
        waiters.push(wake);
        setTimeout(wake, 50);
      });
    }
    return received[read++]!;
  };
  /** JSON events up to and including the first of `type`. */
  const events = async (type: string): Promise<any[]> => {
    const out: any[] = [];
    for (;;) {
      const frame = await next();
      const event = JSON.parse(frame.data.toString('utf8'));
      out.push(event);
      if (event.type === type) return out;
    }
  };
  return { ws, upgrade: upgrade!, received, next, events, closed, send: (frame: unknown) => ws.send(JSON.stringify(frame)) };
}

/** An upgrade the gateway refuses: its status, headers and body. */
function refusedUpgrade(gw: TestGateway, headers: Record<string, string>, path?: string) {
  return new Promise<{ status: number; headers: IncomingMessage['headers']; json: any }>((resolve, reject) => {
    const ws = new WebSocket(wsUrl(gw, path), { headers });
    ws.on('error', () => {});
    ws.once('open', () => reject(new Error('the upgrade was accepted')));
    ws.once('unexpected-response', (_req, res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        ws.terminate();
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode!, headers: res.headers, json: text ? JSON.parse(text) : undefined });
      });
    });
  });
}

/** A hand-written upgrade request: the status line, and whether the gateway closed the connection after answering. */
function rawUpgrade(gw: TestGateway, path: string, upgrade: string, secret: string) {
  return new Promise<{ status: number; closed: boolean }>((resolve) => {
    const socket = connect(Number(new URL(gw.url).port), '127.0.0.1');
    let text = '';
    socket.on('data', (chunk) => (text += chunk.toString('latin1')));
    const status = () => Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
    // only a connection left open ends here: generous, so a slow machine is not taken for one
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ status: status(), closed: false });
    }, 10_000);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve({ status: status(), closed: true });
    });
    socket.write(
      `GET ${path} HTTP/1.1\r\nHost: gw\r\nUpgrade: ${upgrade}\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n` +
        `x-api-key: ${secret}\r\n\r\n`,
    );
  });
}


describe('Responses over WebSocket', () => {
  const gw = useTestGateway();
  const clients: WebSocket[] = [];
  const client = async (headers: Record<string, string>, path?: string, perMessageDeflate?: boolean) => {
    const opened = await openClient(gw, headers, path, perMessageDeflate);
    clients.push(opened.ws);
    return opened;
  };

  afterEach(() => {
    for (const ws of clients.splice(0)) ws.terminate();
  });

  const AUTH_MODES: Array<[string, () => Record<string, string>]> = [
    ['Bearer', () => ({ authorization: `Bearer ${gw.key.secret}` })],
    ['x-api-key only', () => ({ 'x-api-key': gw.key.secret })],
    ['invalid Bearer + valid x-api-key', () => ({ authorization: 'Bearer sk-tg-not-a-key', 'x-api-key': gw.key.secret })],
  ];

  it.each(AUTH_MODES)("Codex's warm-up then chained turn, key as %s", async (_mode, auth) => {
    const c = await client({ ...auth(), ...CODEX_HEADERS });

    c.send(WARM_UP);
    const warm = await c.events('response.completed');
    expect(warm.map((e) => e.type)).toEqual(['response.created', 'response.completed']);
    const warmId = warm.at(-1).response.id;

    c.send({ type: 'response.create', model: 'gpt-5', previous_response_id: warmId, input: [{ role: 'user', content: 'hi' }] });
    const turn = await c.events('response.completed');
    expect(turn.at(-1).response.previous_response_id).toBe(warmId);
    expect(turn.filter((e) => e.type === 'response.output_text.delta')).toHaveLength(3);
    expect(turn.every((e, i) => e.sequence_number === i)).toBe(true);

    // exactly one upstream connection, with the account's credential and the client's own headers
    expect(gw.mock.wsConnections).toHaveLength(1);
    const upstream = gw.mock.wsConnections[0]!;
    expect(upstream.path).toBe('/v1/responses');
    expect(upstream.headers.authorization).toBe(`Bearer ${OPENAI_SECRET}`);
    expect(upstream.headers['openai-beta']).toBe('responses_websockets=2026-02-06');
    expect(upstream.headers['session-id']).toBe('sess-123');
    expect(upstream.headers.originator).toBe('codex_cli_rs');
    expect(upstream.headers['x-codex-turn-state']).toBe('turn-abc');
    expect(upstream.headers['x-api-key']).toBeUndefined();
    expect(Object.keys(upstream.headers).filter((name) => name.startsWith('x-tollgate-') || name.startsWith('x-forwarded-'))).toEqual([]);
    expect(allHeaderText(upstream.headers)).not.toContain(gw.key.secret);
    expect(allHeaderText(upstream.headers)).not.toContain('sk-tg-not-a-key');

    // both calls counted, with the upstream's own token figures
    await until(() => gw.mock.served.length).toBe(2);
    const expected = servedTotals(gw.mock);
    await until(async () => (await usageOf(gw, gw.key.secret)).total_tokens).toBe(expected.total_tokens);
    expect(await usageOf(gw, gw.key.secret)).toMatchObject({ request_count: 2, ...expected });
  });

  it("the client's 101 carries the upstream's handshake headers", async () => {
    const c = await client({ authorization: `Bearer ${gw.key.secret}`, 'x-request-id': 'codex-req-1' });
    expect(c.upgrade.headers['x-codex-turn-state']).toMatch(/^mock-turn-\d+$/);
    expect(c.upgrade.headers['x-models-etag']).toBe('mock-etag');
    expect(c.upgrade.headers['openai-model']).toBe('gpt-5');
    expect(c.upgrade.headers['x-request-id']).toBe('codex-req-1');
    expect(c.upgrade.headers['sec-websocket-accept']).toBeDefined();
  });

  it('serves the ChatGPT-style alias path too', async () => {
    const c = await client({ 'x-api-key': gw.key.secret }, '/backend-api/codex/responses?client=codex');
    c.send({ type: 'response.create', model: 'gpt-5', input: 'hi' });
    expect((await c.events('response.completed')).at(-1).type).toBe('response.completed');
    expect(gw.mock.wsConnections[0]!.path).toBe('/v1/responses?client=codex');
  });

  it.each([
    ['missing', {}],
    ['invalid', { authorization: 'Bearer sk-tg-wrong', 'x-api-key': 'sk-tg-also-wrong' }],
  ] as Array<[string, Record<string, string>]>)('%s key: 401 in OpenAI shape before the upgrade; nothing reaches the upstream', async (_case, headers) => {
    const before = await metricValue(gw, 'tollgate_websocket_handshake_failures_total', { reason: 'invalid_api_key' });
    const refused = await refusedUpgrade(gw, headers);
    expect(refused.status).toBe(401);
    expect(refused.json).toMatchObject({ error: { type: 'invalid_request_error', code: 'invalid_api_key' } });
    expect(refused.json.error.message).toContain('x-api-key');
    expect(refused.headers['x-request-id']).toBeDefined();
    expect(gw.mock.wsConnections).toHaveLength(0);
    expect(await metricValue(gw, 'tollgate_websocket_handshake_failures_total', { reason: 'invalid_api_key' })).toBe(before + 1);
  });

  it('a plain GET without upgrade is 405 (after authentication, like every proxied route)', async () => {
    for (const path of ['/v1/responses', '/backend-api/codex/responses']) {
      for (const headers of [{ authorization: `Bearer ${gw.key.secret}` }, { 'x-api-key': gw.key.secret }] as Array<Record<string, string>>) {
        const res = await call(gw.url, path, { headers });
        expect(res.status).toBe(405);
        expect(res.json).toMatchObject({ error: { code: 'method_not_allowed', type: 'invalid_request_error' } });
        expect(res.json.error.message).toContain('use POST or a WebSocket upgrade');
      }
      expect((await call(gw.url, path)).status).toBe(401);
    }
  });

  it('an upgrade request elsewhere is answered over HTTP and its connection closed; a non-WebSocket upgrade is 400', async () => {
    const cases: Array<[string, string, number]> = [
      ['/health/live', 'websocket', 200],
      ['/v1/usage', 'websocket', 200],
      ['/no/such/route', 'websocket', 404],
      ['/v1/responses', 'h2c', 400],
    ];
    for (const [path, upgrade, status] of cases) {
      expect(await rawUpgrade(gw, path, upgrade, gw.key.secret), `${upgrade} ${path}`).toEqual({ status, closed: true });
    }
    expect(gw.mock.wsConnections).toHaveLength(0);
  });

  it('a disallowed model gets an error event; the socket stays usable', async () => {
    const restricted = await gw.createKey({ allowed_models: ['gpt-5-mini'] });
    const c = await client({ authorization: `Bearer ${restricted.secret}` });
    c.send({ type: 'response.create', model: 'gpt-5', input: 'hi' });
    const [refusal] = await c.events('error');
    expect(refusal).toMatchObject({ type: 'error', status: 403, error: { type: 'invalid_request_error', code: 'model_not_allowed' } });

    c.send({ type: 'response.create', model: 'gpt-5-mini', input: 'hi' });
    const turn = await c.events('response.completed');
    expect(turn.at(-1).response.model).toBe('gpt-5-mini');
    expect(gw.mock.wsConnections[0]!.frames).toEqual([{ type: 'response.create', model: 'gpt-5-mini', input: 'hi' }]);
    await until(async () => (await usageOf(gw, restricted.secret)).request_count).toBe(1);
  });

  it('a key over its requests limit gets rate_limit_exceeded on the next response.create', async () => {
    const limited = await gw.createKey({ limits: [{ limit_type: 'requests', limit_window: 'daily', max_value: 1 }] });
    const c = await client({ 'x-api-key': limited.secret });
    c.send(WARM_UP);
    await c.events('response.completed');
    c.send({ type: 'response.create', model: 'gpt-5', input: 'again' });
    const [refusal] = await c.events('error');
    expect(refusal).toMatchObject({ type: 'error', status: 429, error: { type: 'rate_limit_error', code: 'rate_limit_exceeded' } });
    expect(refusal.error.resets_at).toBeDefined();
    expect(c.ws.readyState).toBe(WebSocket.OPEN);
    expect(gw.mock.wsConnections[0]!.frames).toHaveLength(1);
  });

  it('a response.create behind a UTF-8 byte-order mark is admitted like any other: refused model, counted request, limit', async () => {
    const withBom = (frame: unknown) => Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(JSON.stringify(frame))]).toString('utf8');
    const restricted = await gw.createKey({ allowed_models: ['gpt-5-mini'], limits: [{ limit_type: 'requests', limit_window: 'daily', max_value: 1 }] });
    const c = await client({ authorization: `Bearer ${restricted.secret}` });
    c.ws.send(withBom({ type: 'response.create', model: 'gpt-5', input: 'hi' }));
    const [refusal] = await c.events('error');
    expect(refusal).toMatchObject({ status: 403, error: { code: 'model_not_allowed' } });

    c.ws.send(withBom({ type: 'response.create', model: 'gpt-5-mini', input: 'hi' }));
    await c.events('response.completed');
    await until(async () => (await usageOf(gw, restricted.secret)).request_count).toBe(1);
    c.ws.send(withBom({ type: 'response.create', model: 'gpt-5-mini', input: 'again' }));
    const [overLimit] = await c.events('error');
    expect(overLimit).toMatchObject({ status: 429, error: { code: 'rate_limit_exceeded' } });
    // the admitted frame went upstream without its mark, as the gateway read it
    expect(gw.mock.wsConnections[0]!.frames).toEqual([{ type: 'response.create', model: 'gpt-5-mini', input: 'hi' }]);
  });

  it('frames that are not response.create pass as they are, in order', async () => {
    const c = await client({ authorization: `Bearer ${gw.key.secret}` });
    c.ws.send('not json');
    c.send({ type: 'response.cancel' });
    c.send({ type: 'response.create', model: 'gpt-5', input: 'hi' });
    const events = await c.events('response.completed');
    expect(events.slice(0, 2).map((e) => e.error.code)).toEqual(['invalid_json', 'unknown_event_type']);
    expect(gw.mock.wsConnections[0]!.frames).toEqual(['not json', { type: 'response.cancel' }, { type: 'response.create', model: 'gpt-5', input: 'hi' }]);
  });

  it('binary frames stay binary and text frames stay text', async () => {
    const c = await client({ authorization: `Bearer ${gw.key.secret}` });
    const bytes = Buffer.from([0, 1, 2, 0xfe, 0xff]);
    c.ws.send(bytes, { binary: true });
    const echoed = await c.next();
    expect(echoed.isBinary).toBe(true);
    expect(echoed.data.equals(bytes)).toBe(true);
    expect(gw.mock.wsConnections[0]!.binaryFrames.map((b) => [...b])).toEqual([[...bytes]]);

    c.send({ type: 'response.create', model: 'gpt-5', input: 'hi' });
    await c.events('response.completed');
    expect(c.received.slice(1).every((frame) => !frame.isBinary)).toBe(true);
  });

  it("the upstream's close code and reason reach the client", async () => {
    const c = await client({ authorization: `Bearer ${gw.key.secret}` });
    gw.mock.closeWsNext(4001, 'bye');
    c.send({ type: 'response.create', model: 'gpt-5', input: 'hi' });
    expect(await c.closed).toEqual({ code: 4001, reason: 'bye' });
    await until(() => metricValue(gw, 'tollgate_websocket_sessions', {})).toBe(0);
  });

  it("the client's close code reaches the upstream", async () => {
    const c = await client({ authorization: `Bearer ${gw.key.secret}` });
    c.ws.close(4002, 'done');
    await until(() => gw.mock.wsConnections[0]?.closed).toBe(true);
    expect(gw.mock.wsConnections[0]!.closeCode).toBe(4002);
  });

  it('a client that disconnects abruptly mid-response closes the upstream socket and frees the slot', async () => {
    const release = gw.mock.holdStreams();
    try {
      const c = await client({ authorization: `Bearer ${gw.key.secret}` });
      c.send({ type: 'response.create', model: 'gpt-5', input: 'hi' });
      expect((await c.events('response.created')).at(-1).type).toBe('response.created');
      expect(gw.app.gateway.pools.get('openai')!.inFlightOf('oa-1')).toBe(1);
      expect(await metricValue(gw, 'tollgate_websocket_sessions', {})).toBe(1);
      c.ws.terminate();
      await until(() => gw.mock.wsConnections[0]!.closed).toBe(true);
      expect(gw.mock.wsConnections[0]!.closeCode).toBe(1011);
      await until(() => gw.app.gateway.pools.get('openai')!.inFlightOf('oa-1')).toBe(0);
      await until(() => metricValue(gw, 'tollgate_websocket_sessions', {})).toBe(0);
    } finally {
      release();
    }
  });

  it('a client that leaves during the handshake leaves no upstream socket open', async () => {
    const { port } = new URL(gw.url);
    const socket = connect(Number(port), '127.0.0.1');
    await new Promise<void>((resolve) => socket.once('connect', resolve));
    socket.write(
      'GET /v1/responses HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n` +
        `Authorization: Bearer ${gw.key.secret}\r\n\r\n`,
    );
    socket.destroy();
    await until(() => gw.mock.wsConnections.length).toBe(1);
    await until(() => gw.mock.wsConnections[0]!.closed).toBe(true);
    await until(() => gw.app.gateway.pools.get('openai')!.inFlightOf('oa-1')).toBe(0);
  });

  it('a key revoked mid-session is refused on its next response.create and the socket closed', async () => {
    const doomed = await gw.createKey();
    const c = await client({ authorization: `Bearer ${doomed.secret}` });
    const record = (await gw.store.getKeyById(doomed.id))!;
    await gw.store.putKey({ ...record, disabled: true });
    gw.app.gateway.keys.forget(record);
    c.send({ type: 'response.create', model: 'gpt-5', input: 'hi' });
    const [refusal] = await c.events('error');
    expect(refusal).toMatchObject({ status: 401, error: { code: 'invalid_api_key' } });
    expect((await c.closed).code).toBe(1008);
    expect(gw.mock.wsConnections[0]!.frames).toEqual([]);
  });

  it('a client that does not read pauses the upstream instead of buffering without bound', async () => {
    // random bytes and no deflate on this hop: compression would only cost time here
    const c = await client({ authorization: `Bearer ${gw.key.secret}` }, undefined, false);
    const frame = randomBytes(1024 * 1024);
    const count = 32;
    const relayed = () => metricValue(gw, 'tollgate_websocket_frames_total', { direction: 'upstream_to_client' });
    const before = await relayed();
    c.ws.pause();
    for (let i = 0; i < count; i++) c.ws.send(frame, { binary: true });
    // the upstream got (and echoed) every frame, but the gateway stopped reading its echoes
    // after about the high-water mark plus what the kernel's socket buffers hold: many of them
    // are stuck at the upstream, which could not send them (a gateway that buffered without
    // bound would read them all, and the upstream would hold none). 32 MiB each way takes
    // seconds on a busy machine: these waits are bounded only against a hang.
    await until(() => gw.mock.wsConnections[0]?.binaryFrames.length ?? 0, 60_000).toBe(count);
    await until(() => gw.mock.unsentWsBytes(), 60_000).toBeGreaterThan((count / 4) * frame.length);
    expect((await relayed()) - before).toBeLessThan(count / 2);
    c.ws.resume();
    await until(() => c.received.length, 60_000).toBe(count);
    expect(c.received.every((r) => r.isBinary && r.data.equals(frame))).toBe(true);
    expect((await relayed()) - before).toBe(count);
  }, 180_000);
});

describe('Responses over WebSocket: provider and upstream refusals', () => {
  let mock: MockUpstream;
  let gw: TestGateway | undefined;
  beforeAll(async () => {
    mock = await startMockUpstream();
  });
  afterAll(() => mock.close());
  afterEach(async () => {
    await gw?.close();
    gw = undefined;
    mock.reset();
  });

  const twoAccounts = (accounts: Array<Record<string, string>>, extra: Record<string, unknown> = {}) => ({
    mock,
    config: (url: string) => ({ providers: { openai: { baseUrl: url, strategy: 'fill_first', accounts, ...extra } } }),
  });

  it('426 at once for a provider configured without WebSocket; the upstream sees nothing', async () => {
    gw = await startTestGateway(twoAccounts([{ id: 'oa-1', apiKey: OPENAI_SECRET }], { websocket: false }));
    const key = await gw.createKey();
    const refused = await refusedUpgrade(gw, { authorization: `Bearer ${key.secret}` });
    expect(refused.status).toBe(426);
    expect(refused.json).toMatchObject({ error: { code: 'websocket_not_supported', type: 'invalid_request_error' } });
    expect(mock.wsConnections).toHaveLength(0);
    expect(mock.requests).toHaveLength(0);
    expect(await metricValue(gw, 'tollgate_websocket_handshake_failures_total', { reason: 'websocket_not_supported' })).toBe(1);
  });

  it('every account refusing the handshake: each is tried and the status passes through', async () => {
    gw = await startTestGateway(
      twoAccounts([
        { id: 'oa-1', apiKey: OPENAI_SECRET },
        { id: 'oa-2', apiKey: SECOND_SECRET },
      ]),
    );
    const key = await gw.createKey();
    mock.rejectWsUpgrades(503);
    const refused = await refusedUpgrade(gw, { authorization: `Bearer ${key.secret}` });
    expect(refused.status).toBe(503);
    expect(refused.json).toMatchObject({ error: { message: 'WebSocket upgrade rejected by mock' } });
    expect(mock.wsConnections.map((c) => [c.rejectedStatus, c.headers.authorization])).toEqual([
      [503, `Bearer ${OPENAI_SECRET}`],
      [503, `Bearer ${SECOND_SECRET}`],
    ]);
    expect(await metricValue(gw, 'tollgate_websocket_handshake_failures_total', { reason: 'upstream_503' })).toBe(1);
    for (const id of ['oa-1', 'oa-2']) expect(gw.app.gateway.pools.get('openai')!.inFlightOf(id)).toBe(0);
  });

  it('one account unreachable, the other live: the socket opens on the live one', async () => {
    const deadUrl = `http://127.0.0.1:${await closedPort()}`;
    gw = await startTestGateway(
      twoAccounts([
        { id: 'oa-1', apiKey: OPENAI_SECRET, baseUrl: deadUrl },
        { id: 'oa-2', apiKey: SECOND_SECRET },
      ]),
    );
    const key = await gw.createKey();
    const c = await openClient(gw, { authorization: `Bearer ${key.secret}` });
    c.send({ type: 'response.create', model: 'gpt-5', input: 'hi' });
    await c.events('response.completed');
    expect(mock.wsConnections).toHaveLength(1);
    expect(mock.wsConnections[0]!.headers.authorization).toBe(`Bearer ${SECOND_SECRET}`);
    c.ws.close();
  });

  it('closing the app closes open sockets with 1001, upstream included', async () => {
    gw = await startTestGateway(twoAccounts([{ id: 'oa-1', apiKey: OPENAI_SECRET }]));
    const key = await gw.createKey();
    const c = await openClient(gw, { authorization: `Bearer ${key.secret}` });
    const closing = gw.close();
    gw = undefined;
    expect((await c.closed).code).toBe(1001);
    await closing;
    await until(() => mock.wsConnections[0]!.closed).toBe(true);
    expect(mock.wsConnections[0]!.closeCode).toBe(1001);
  });
});
