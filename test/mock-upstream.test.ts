import { describe, it, expect, beforeAll, afterAll, beforeEach } from 'vitest';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import WebSocket from 'ws';
import { once } from 'node:events';
import type { IncomingMessage } from 'node:http';
import { startMockUpstream, usageFor, type MockUpstream } from '../src/mock/upstream.js';

let mock: MockUpstream;
let openai: OpenAI;
let anthropic: Anthropic;

beforeAll(async () => {
  mock = await startMockUpstream();
  openai = new OpenAI({ apiKey: 'sk-test', baseURL: mock.url + '/v1', maxRetries: 0 });
  anthropic = new Anthropic({ apiKey: 'x', baseURL: mock.url, maxRetries: 0 });
});
afterAll(() => mock.close());
beforeEach(() => mock.reset());

const lastBodyBytes = () => Buffer.byteLength(mock.requests.at(-1)!.body);

/** Opens a ws and returns helpers to send frames and await the next JSON frame. */
async function openWs(path = '/v1/responses') {
  const ws = new WebSocket(mock.url.replace('http', 'ws') + path, { headers: { authorization: 'Bearer sk-ws' } });
  const inbox: any[] = [];
  const waiters: ((m: any) => void)[] = [];
  ws.on('message', (d) => {
    const m = JSON.parse(d.toString());
    const w = waiters.shift();
    if (w) w(m);
    else inbox.push(m);
  });
  let upgrade!: IncomingMessage;
  ws.once('upgrade', (res) => (upgrade = res)); // fires just before 'open'
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  const next = () => (inbox.length ? Promise.resolve(inbox.shift()) : new Promise<any>((r) => waiters.push(r)));
  const until = async (type: string) => {
    const seen: any[] = [];
    for (;;) {
      const m = await next();
      seen.push(m);
      if (m.type === type || m.type === 'error') return seen;
    }
  };
  return { ws, upgrade, send: (f: unknown) => ws.send(JSON.stringify(f)), next, until };
}

describe('mock upstream: OpenAI', () => {
  it('serves a streamed Responses call to the SDK and records it', async () => {
    const stream = await openai.responses.create({ model: 'gpt-5', input: 'hi', stream: true });
    const types: string[] = [];
    let text = '';
    for await (const e of stream) {
      types.push(e.type);
      if (e.type === 'response.output_text.delta') text += e.delta;
    }
    expect(types[0]).toBe('response.created');
    expect(types.at(-1)).toBe('response.completed');
    expect(text).toBe('Hello from mock');

    const req = mock.requests[0];
    expect(req.method).toBe('POST');
    expect(req.path).toBe('/v1/responses');
    expect(req.headers.authorization).toBe('Bearer sk-test');
    expect(req.json).toMatchObject({ model: 'gpt-5', input: 'hi', stream: true });
    expect(mock.served).toEqual([
      { path: '/v1/responses', transport: 'http', stream: true, usage: usageFor(lastBodyBytes()) },
    ]);
  });

  it('supports responses.stream().finalResponse() and non-stream create', async () => {
    const final = await openai.responses.stream({ model: 'gpt-5', input: 'hello there' }).finalResponse();
    expect(final.output_text).toBe('Hello from mock');
    const u = usageFor(lastBodyBytes());
    expect(final.usage).toMatchObject({ input_tokens: u.input_tokens, output_tokens: u.output_tokens, total_tokens: u.total_tokens });
    expect(final.usage?.input_tokens_details.cached_tokens).toBe(u.cached_input_tokens);

    const plain = await openai.responses.create({ model: 'gpt-5-mini', input: 'x' });
    expect(plain.object).toBe('response');
    expect(plain.status).toBe('completed');
    expect(plain.output_text).toBe('Hello from mock');
    expect(plain.id).not.toBe(final.id);
    expect(mock.served.map((s) => s.stream)).toEqual([true, false]);
  });

  it('streams chat completions with usage only when include_usage is set', async () => {
    const withUsage = await openai.chat.completions.create({
      model: 'gpt-5', messages: [{ role: 'user', content: 'hi' }], stream: true, stream_options: { include_usage: true },
    });
    let text = '';
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const c of withUsage) {
      text += c.choices[0]?.delta.content ?? '';
      if (c.usage) usage = c.usage;
    }
    const u = usageFor(lastBodyBytes());
    expect(text).toBe('Hello from mock');
    expect(usage).toMatchObject({ prompt_tokens: u.input_tokens, completion_tokens: u.output_tokens, total_tokens: u.total_tokens });
    expect(mock.served).toHaveLength(1);

    const noUsage = await openai.chat.completions.create({ model: 'gpt-5', messages: [{ role: 'user', content: 'hi' }], stream: true });
    for await (const c of noUsage) expect(c.usage ?? null).toBeNull();
    expect(mock.served).toHaveLength(1); // nothing added without a usage report
  });

  it('lists models, 400s malformed JSON, 404s unknown paths', async () => {
    const models = await openai.models.list();
    expect(models.data.map((m) => m.id)).toContain('gpt-5');
    const bad = await fetch(mock.url + '/v1/chat/completions', { method: 'POST', body: '{nope' });
    expect(bad.status).toBe(400);
    expect((await bad.json()).error.type).toBe('invalid_request_error');
    expect((await fetch(mock.url + '/nope')).status).toBe(404);
  });
});

describe('mock upstream: Anthropic', () => {
  it('streams messages via the SDK and counts tokens', async () => {
    const msg = await anthropic.messages
      .stream({ model: 'claude-sonnet-4-6', max_tokens: 64, messages: [{ role: 'user', content: 'hi' }] })
      .finalMessage();
    const u = usageFor(lastBodyBytes());
    expect(msg.content).toEqual([{ type: 'text', text: 'Hello from mock' }]);
    expect(msg.stop_reason).toBe('end_turn');
    expect(msg.usage).toMatchObject({
      input_tokens: u.input_tokens - u.cached_input_tokens,
      cache_read_input_tokens: u.cached_input_tokens,
      output_tokens: u.output_tokens,
    });
    const h = mock.requests[0].headers;
    expect(h['anthropic-version']).toBeTruthy();
    expect(h['x-api-key'] ?? h.authorization).toMatch(/^(Bearer )?x$/); // SDK versions differ in auth header
    expect(mock.served[0]).toEqual({ path: mock.requests[0].path, transport: 'http', stream: true, usage: u });

    const count = await anthropic.messages.countTokens({ model: 'claude-sonnet-4-6', messages: [{ role: 'user', content: 'hi' }] });
    expect(count.input_tokens).toBe(usageFor(lastBodyBytes()).input_tokens);
    expect(mock.served).toHaveLength(1);

    const bad = await fetch(mock.url + '/v1/messages?beta=true', { method: 'POST', body: 'nope' });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({ type: 'error', error: { type: 'invalid_request_error' } });
  });
});

describe('mock upstream: WebSocket', () => {
  it('warm-up then chained turn on one connection; ids are per connection', async () => {
    const a = await openWs();
    expect(a.upgrade.headers['x-codex-turn-state']).toMatch(/^mock-turn-\d+$/);
    expect(a.upgrade.headers['x-models-etag']).toBe('mock-etag');

    a.send({ type: 'response.create', model: 'gpt-5', input: [], generate: false });
    const warm = await a.until('response.completed');
    expect(warm.map((m) => m.type)).toEqual(['response.created', 'response.completed']);
    const warmId = warm[1].response.id;
    expect(warm[1].response.output).toEqual([]);
    expect(warm[1].response.usage.output_tokens).toBe(0);

    a.send({ type: 'response.create', model: 'gpt-5', input: 'go', previous_response_id: warmId });
    const turn = await a.until('response.completed');
    expect(turn.at(-1).type).toBe('response.completed');
    expect(turn.filter((m) => m.type === 'response.output_text.delta')).toHaveLength(3);
    expect(turn.every((m, i) => m.sequence_number === i)).toBe(true);

    const b = await openWs('/backend-api/codex/responses');
    b.send({ type: 'response.create', model: 'gpt-5', input: 'go', previous_response_id: warmId });
    const [err] = await b.until('response.completed');
    expect(err).toMatchObject({ type: 'error', status: 400, error: { code: 'previous_response_not_found', param: 'previous_response_id' } });
    expect(b.ws.readyState).toBe(WebSocket.OPEN);

    b.send({ type: 'bogus' });
    expect((await b.next()).type).toBe('error');

    expect(mock.served.map((s) => [s.transport, s.usage.output_tokens > 0])).toEqual([['ws', false], ['ws', true]]);
    expect(mock.wsConnections).toHaveLength(2);
    expect(mock.wsConnections[0].headers.authorization).toBe('Bearer sk-ws');
    expect(mock.wsConnections[1].frames).toEqual([
      { type: 'response.create', model: 'gpt-5', input: 'go', previous_response_id: warmId },
      { type: 'bogus' },
    ]);

    mock.closeWsNext(4000, 'bye');
    a.send({ type: 'response.create', model: 'gpt-5', input: 'again' });
    const [code] = await new Promise<[number]>((r) => a.ws.once('close', (c) => r([c])));
    expect(code).toBe(4000);
    b.ws.close();
    await expect.poll(() => mock.wsConnections[0]).toMatchObject({ closed: true, closeCode: 4000 });
    await expect.poll(() => mock.wsConnections[1]!.closed).toBe(true);
  });

  it('rejects upgrades with the configured status', async () => {
    mock.rejectWsUpgrades(426);
    const ws = new WebSocket(mock.url.replace('http', 'ws') + '/v1/responses');
    const status = await new Promise<number>((r) => ws.once('unexpected-response', (_req, res) => r(res.statusCode!)));
    expect(status).toBe(426);
    mock.rejectWsUpgrades(null);
    const ok = await openWs();
    ok.ws.close();
  });
});

describe('mock upstream: scripting', () => {
  it('enqueue answers the next HTTP requests FIFO', async () => {
    mock.enqueue({ status: 429, headers: { 'retry-after': '1' }, body: { error: { message: 'slow down' } } }, { status: 200, body: 'plain' });
    const r1 = await fetch(mock.url + '/v1/responses', { method: 'POST', body: '{}' });
    expect(r1.status).toBe(429);
    expect(r1.headers.get('retry-after')).toBe('1');
    expect(await r1.json()).toEqual({ error: { message: 'slow down' } });
    const r2 = await fetch(mock.url + '/v1/models');
    expect(await r2.text()).toBe('plain');
    expect(mock.requests).toHaveLength(2);
    expect(mock.served).toHaveLength(0);
  });

  it('holdStreams sends the first event then waits for release', async () => {
    const release = mock.holdStreams();
    const res = await fetch(mock.url + '/v1/responses', { method: 'POST', body: JSON.stringify({ model: 'gpt-5', input: 'x', stream: true }) });
    const reader = res.body!.getReader();
    const dec = new TextDecoder();
    let got = '';
    while (!got.includes('\n\n')) got += dec.decode((await reader.read()).value);
    expect(got).toContain('event: response.created');

    const pending = reader.read();
    // an unheld stream is written whole and recorded as served in one go, before its first
    // event can reach the client: nothing served yet means the rest is held back
    expect(mock.served).toHaveLength(0);

    release();
    for (let r = await pending; !r.done; r = await reader.read()) got += dec.decode(r.value);
    expect(got).toContain('event: response.completed');
    expect(mock.served).toHaveLength(1);
  });

  it("reports a response the client cut off as 'abandoned', and never serves it", async () => {
    const release = mock.holdStreams();
    const abort = new AbortController();
    const res = await fetch(mock.url + '/v1/responses', { method: 'POST', body: JSON.stringify({ model: 'gpt-5', input: 'cut', stream: true }), signal: abort.signal });
    const abandoned = once(mock.events, 'abandoned');
    await res.body!.getReader().read(); // the first event: the stream is open and held
    abort.abort();
    const [cut] = await abandoned;
    expect(cut.json).toMatchObject({ input: 'cut' });
    release();
    const done = await fetch(mock.url + '/v1/responses', { method: 'POST', body: JSON.stringify({ model: 'gpt-5', input: 'whole' }) });
    expect(done.status).toBe(200);
    expect(mock.served).toHaveLength(1); // the whole one only
  });
});
