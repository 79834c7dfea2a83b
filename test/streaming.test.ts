import { once } from 'node:events';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { usageFor } from '../src/mock/upstream.js';
import { ANTHROPIC_SECRET, OPENAI_SECRET, startTestGateway, type TestGateway } from './support/gateway.js';
import { call, eventTypes, readEvents, usageOf } from './support/http.js';

const ADMIN_TOKEN = 'admin-token-for-streaming-tests';

let gw: TestGateway;
let key: { id: string; secret: string };
let release: (() => void) | undefined;

beforeAll(async () => {
  gw = await startTestGateway({
    config: (mockUrl) => ({
      adminToken: ADMIN_TOKEN,
      providers: {
        openai: { baseUrl: mockUrl, accounts: [{ id: 'oa-1', apiKey: OPENAI_SECRET }] },
        anthropic: { baseUrl: mockUrl, accounts: [{ id: 'an-1', apiKey: ANTHROPIC_SECRET }] },
      },
    }),
  });
});
afterAll(async () => {
  release?.();
  await gw.close();
});
beforeEach(async () => {
  release?.();
  release = undefined;
  gw.mock.reset();
  key = await gw.createKey();
});

const ROUTES = [
  {
    path: '/v1/responses',
    account: 'oa-1',
    body: (text: string) => ({ model: 'gpt-5', input: text, stream: true }),
    first: 'response.created',
    last: 'response.completed',
  },
  {
    path: '/v1/messages',
    account: 'an-1',
    body: (text: string) => ({ model: 'claude-sonnet-4-5', max_tokens: 64, stream: true, messages: [{ role: 'user', content: text }] }),
    first: 'message_start',
    last: 'message_stop',
  },
];

function startStream(path: string, body: object, signal?: AbortSignal) {
  return fetch(gw.url + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': key.secret },
    body: JSON.stringify(body),
    signal,
  });
}

async function inFlight(accountId: string): Promise<number> {
  const res = await call(gw.url, '/admin/accounts', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  const account = (res.json.data as Array<{ id: string; in_flight: number }>).find((a) => a.id === accountId);
  return account!.in_flight;
}

describe.each(ROUTES)('$path streamed', (route) => {
  it('delivers the first event while the upstream is still holding the rest', async () => {
    release = gw.mock.holdStreams();
    const res = await startStream(route.path, route.body('stream unbuffered please'));
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const reader = res.body!.getReader();
    const state = { buffer: '' };

    const early = await readEvents(reader, state, 1);
    // the first event arrived, the upstream has not finished (nor sent more)
    expect(eventTypes(early)).toEqual([route.first]);
    expect(gw.mock.served).toHaveLength(0);
    expect(await inFlight(route.account)).toBe(1);

    release();
    const rest = await readEvents(reader, state, Number.MAX_SAFE_INTEGER);
    expect(state.buffer).toBe('');
    const types = eventTypes([...early, ...rest]);
    expect(types.at(-1)).toBe(route.last);
    expect(types.length).toBeGreaterThan(5);
    expect(gw.mock.served).toHaveLength(1);

    // counted once, with the tokens the upstream reported at the end of the stream
    const served = gw.mock.served[0]!.usage;
    await expect.poll(async () => (await usageOf(gw, key.secret)).total_tokens).toBe(served.total_tokens);
    expect(await usageOf(gw, key.secret)).toMatchObject({
      request_count: 1,
      input_tokens: served.input_tokens,
      output_tokens: served.output_tokens,
      cached_input_tokens: served.cached_input_tokens,
    });
    expect(await inFlight(route.account)).toBe(0);
  });

  it('survives a client that disconnects mid-stream, without counting it twice', async () => {
    release = gw.mock.holdStreams();
    const abort = new AbortController();
    const abortedBody = route.body('this one is cut off');
    const res = await startStream(route.path, abortedBody, abort.signal);
    const reader = res.body!.getReader();
    expect(eventTypes(await readEvents(reader, { buffer: '' }, 1))).toEqual([route.first]);
    const cancelled = once(gw.mock.events, 'abandoned');
    abort.abort();
    await reader.closed.catch(() => {});

    // the gateway lets go of the upstream stream and its in-flight slot, and cancels the upstream
    // call: the mock sees its response cut before the end (and so will never serve it)
    await expect.poll(() => inFlight(route.account)).toBe(0);
    const [cut] = await cancelled;
    expect(cut.json).toEqual(abortedBody);
    release();
    release = undefined;

    // and keeps serving: a complete stream right after
    const nextBody = route.body('the next request, a little longer than the first');
    const next = await startStream(route.path, nextBody);
    expect(next.status).toBe(200);
    const types = eventTypes(await readEvents(next.body!.getReader(), { buffer: '' }, Number.MAX_SAFE_INTEGER));
    expect(types[0]).toBe(route.first);
    expect(types.at(-1)).toBe(route.last);
    expect(gw.mock.served).toHaveLength(1); // the complete one only

    // What the aborted request reported before it was cut off (Anthropic's message_start carries
    // the input tokens and 1 output token; a Responses stream reports usage only at the end).
    const aborted = usageFor(Buffer.byteLength(JSON.stringify(abortedBody)));
    const partial =
      route.path === '/v1/messages'
        ? { input_tokens: aborted.input_tokens, output_tokens: 1, cached_input_tokens: aborted.cached_input_tokens }
        : { input_tokens: 0, output_tokens: 0, cached_input_tokens: 0 };
    const complete = usageFor(Buffer.byteLength(JSON.stringify(nextBody)));
    const expected = {
      request_count: 2,
      input_tokens: partial.input_tokens + complete.input_tokens,
      output_tokens: partial.output_tokens + complete.output_tokens,
      cached_input_tokens: partial.cached_input_tokens + complete.cached_input_tokens,
      total_tokens: partial.input_tokens + partial.output_tokens + complete.total_tokens,
    };
    // usage is recorded once per request, when its in-flight slot is given back: with none left,
    // every write that will ever come for these two requests has been made
    await expect.poll(() => inFlight(route.account)).toBe(0);
    await expect.poll(async () => (await usageOf(gw, key.secret)).total_tokens).toBe(expected.total_tokens);
    expect(await usageOf(gw, key.secret)).toMatchObject(expected);
  });
});
