import { brotliCompressSync, createGzip, deflateSync, gzipSync } from 'node:zlib';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startTestGateway, servedTotals, type TestGateway } from './support/gateway.js';
import { OPENAI_BODY, rawRequest, usageOf } from './support/http.js';

let gw: TestGateway;
let key: { id: string; secret: string };

beforeAll(async () => {
  gw = await startTestGateway();
});
afterAll(() => gw.close());
beforeEach(async () => {
  gw.mock.reset();
  key = await gw.createKey({ allowed_models: ['gpt-5'] });
});

/** `{"model":"gpt-5","input":"zstd zstd … request"}`, compressed by the zstd CLI (-19): a real compressed frame. */
const ZSTD_BODY = Buffer.from('KLUv/STrhQEAhAJ7Im1vZGVsIjoiZ3B0LTUiLCJpbnB1dCI6InpzdGQgcmVxdWVzdCJ9AQADQRUnTHlsmw==', 'base64');
const ZSTD_JSON = { model: 'gpt-5', input: 'zstd '.repeat(40) + 'request' };

function send(path: string, body: Buffer, encoding: string) {
  return rawRequest(gw.url, {
    path,
    headers: { 'content-type': 'application/json', 'content-encoding': encoding, 'x-api-key': key.secret, 'content-length': body.length },
    body,
  });
}

/** What the upstream received: plain JSON and no content-encoding. */
function expectPlainUpstream(json: unknown) {
  expect(gw.mock.requests).toHaveLength(1);
  const received = gw.mock.requests[0]!;
  expect(received.headers['content-encoding']).toBeUndefined();
  expect(received.json).toEqual(json);
}

describe('compressed request bodies', () => {
  it('a gzip streamed chat completion is decoded, gets include_usage, and is metered as the upstream reported', async () => {
    const body = { model: 'gpt-5', stream: true, messages: [{ role: 'user', content: 'hi' }] };
    const res = await send('/v1/chat/completions', gzipSync(JSON.stringify(body)), 'gzip');
    expect(res.status, res.text).toBe(200);
    expectPlainUpstream({ ...body, stream_options: { include_usage: true } });
    const served = servedTotals(gw.mock);
    expect(served.total_tokens).toBeGreaterThan(0);
    await expect.poll(async () => (await usageOf(gw, key.secret)).total_tokens).toBe(served.total_tokens);
    expect(await usageOf(gw, key.secret)).toMatchObject({ request_count: 1, input_tokens: served.input_tokens, output_tokens: served.output_tokens });
  });

  it('a zstd body is decoded, forwarded plain and metered', async () => {
    const res = await send('/v1/responses', ZSTD_BODY, 'zstd');
    expect(res.status, res.text).toBe(200);
    expectPlainUpstream(ZSTD_JSON);
    const served = servedTotals(gw.mock);
    await expect.poll(async () => (await usageOf(gw, key.secret)).total_tokens).toBe(served.total_tokens);
  });

  it.each([
    ['deflate', deflateSync],
    ['br', brotliCompressSync],
    ['x-gzip', gzipSync],
  ] as const)('a %s body is decoded and forwarded plain', async (encoding, compress) => {
    const res = await send('/v1/responses', compress(JSON.stringify(OPENAI_BODY)), encoding);
    expect(res.status, res.text).toBe(200);
    expectPlainUpstream(OPENAI_BODY);
  });

  it('a disallowed model inside a gzip body is refused with 403', async () => {
    const res = await send('/v1/responses', gzipSync(JSON.stringify({ ...OPENAI_BODY, model: 'gpt-5-mini' })), 'gzip');
    expect(res.status).toBe(403);
    expect(JSON.parse(res.text).error.code).toBe('model_not_allowed');
    expect(gw.mock.requests).toHaveLength(0);
  });

  it('an unknown or stacked encoding is refused with 415 unsupported_content_encoding', async () => {
    for (const encoding of ['compress', 'gzip, br', 'snappy']) {
      const res = await send('/v1/responses', Buffer.from(JSON.stringify(OPENAI_BODY)), encoding);
      expect(res.status, encoding).toBe(415);
      expect(JSON.parse(res.text).error).toMatchObject({ code: 'unsupported_content_encoding', type: 'invalid_request_error' });
    }
    expect(gw.mock.requests).toHaveLength(0);
  });

  it('a body that is not valid for its encoding is a 400', async () => {
    const res = await send('/v1/responses', Buffer.from(JSON.stringify(OPENAI_BODY)), 'gzip');
    expect(res.status).toBe(400);
    expect(JSON.parse(res.text).error.code).toBe('invalid_request');
    expect(gw.mock.requests).toHaveLength(0);
  });

  it('a gzip bomb (64 MiB of zeros) gets 413 without being inflated past the body limit', async () => {
    const bomb = await gzipOfZeros(64 * 1024 * 1024);
    const rssBefore = process.memoryUsage().rss;
    const res = await send('/v1/responses', bomb, 'gzip');
    const growth = process.memoryUsage().rss - rssBefore;
    expect(res.status).toBe(413);
    expect(JSON.parse(res.text).error.code).toBe('request_too_large');
    // the limit (16 MiB) is all that is ever held; inflating the whole bomb would take 64 MiB
    expect(growth).toBeLessThan(40 * 1024 * 1024);
    expect(gw.mock.requests).toHaveLength(0);
  });

  it('a zstd frame declaring a window beyond the body limit gets 413 before anything is allocated', async () => {
    // magic, descriptor (no single segment, no content size), window 2^41, one raw last block of 1 byte
    const frame = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0xf8, 0x09, 0x00, 0x00, 0x7b]);
    const res = await send('/v1/responses', frame, 'zstd');
    expect(res.status).toBe(413);
    expect(JSON.parse(res.text).error.code).toBe('request_too_large');
  });
});

/** gzip of `size` zero bytes, compressed from a reused 1 MiB buffer so the test never holds them all. */
function gzipOfZeros(size: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const gzip = createGzip({ level: 9 });
    const chunks: Buffer[] = [];
    gzip.on('data', (chunk: Buffer) => chunks.push(chunk));
    gzip.on('end', () => resolve(Buffer.concat(chunks)));
    gzip.on('error', reject);
    const zeros = Buffer.alloc(1024 * 1024);
    for (let written = 0; written < size; written += zeros.length) gzip.write(zeros);
    gzip.end();
  });
}
