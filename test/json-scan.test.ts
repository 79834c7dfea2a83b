import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { LAZY_PARSE_BYTES } from '../src/server/http.js';
import { scanJson, topLevelOf } from '../src/server/json-depth.js';
import { useTestGateway } from './support/gateway.js';

/** What a top-level model/stream/prompt_cache_key (or metadata.user_id) may look like, alongside anything else. */
const topValue = fc.oneof(fc.string(), fc.boolean(), fc.constant(null), fc.integer(), fc.jsonValue({ maxDepth: 2 }));
const metadata = fc.oneof(topValue, fc.record({ user_id: topValue, other: fc.jsonValue({ maxDepth: 3 }) }, { requiredKeys: [] }));
const document = fc.oneof(
  fc.jsonValue({ maxDepth: 4 }),
  fc.record(
    {
      model: topValue,
      stream: topValue,
      prompt_cache_key: topValue,
      metadata,
      input: fc.jsonValue({ maxDepth: 4 }),
      'mod\\u0065l': fc.string(),
    },
    { requiredKeys: [] },
  ),
);

describe('scanJson reads what JSON.parse would, without building the document', () => {
  it('the same object-ness, model, stream, prompt_cache_key and metadata.user_id as the parsed document, for any JSON', () => {
    fc.assert(
      fc.property(document, fc.boolean(), (doc, spaced) => {
        const text = spaced ? JSON.stringify(doc, null, 1) : JSON.stringify(doc);
        if (text === undefined) return;
        const scanned = scanJson(Buffer.from(text), 512);
        expect(scanned.tooDeep).toBe(false);
        expect(scanned.top).toEqual(topLevelOf(JSON.parse(text)));
      }),
      { numRuns: 2_000 },
    );
  });

  it('escaped keys and quotes, duplicate keys (the last wins), brackets inside strings', () => {
    const text = '{"x":"\\\\","mod\\u0065l":"a\\"b","input":"[[{{","stream":true,"stream":false,"prompt_cache_key":"c-1"}';
    expect(scanJson(Buffer.from(text), 512).top).toEqual({ object: true, model: 'a"b', stream: false, prompt_cache_key: 'c-1' });
    const metadata = '{"metadata":{"user_id":"u-1"},"input":{"metadata":{"user_id":"nested"}},"meta\\u0064ata":{"user_id":"u-2","x":[{"user_id":3}]}}';
    expect(scanJson(Buffer.from(metadata), 512).top).toEqual({ object: true, metadataUserId: 'u-2' });
    expect(scanJson(Buffer.from('{"metadata":{"user_id":"u-1"},"metadata":null}'), 512).top).toEqual({ object: true });
  });

  it('nesting deeper than the maximum, not counting brackets inside strings', () => {
    expect(scanJson(Buffer.from('['.repeat(600)), 512).tooDeep).toBe(true);
    expect(scanJson(Buffer.from(`{"a":"${'['.repeat(600)}"}`), 512).tooDeep).toBe(false);
  });
});

describe('a large request body', () => {
  const env = useTestGateway();
  const large = (model: string, extraKey = 'model') =>
    `{"input":${JSON.stringify('x'.repeat(LAZY_PARSE_BYTES))},"${extraKey}":${JSON.stringify(model)},"stream":false}`;

  it('is forwarded byte for byte, its model checked against the key', async () => {
    const key = await env.createKey({ allowed_models: ['gpt-5'] });
    const send = (body: string) =>
      fetch(`${env.url}/v1/responses`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${key.secret}` }, body });
    const allowed = large('gpt-5');
    expect((await send(allowed)).status).toBe(200);
    expect(env.mock.requests.at(-1)!.body).toBe(allowed);
    // an escaped key is still "model"
    for (const refused of [large('gpt-5-mini'), large('gpt-5-mini', 'mod\\u0065l')]) {
      const res = await send(refused);
      expect(res.status).toBe(403);
      expect((await res.json()).error.code).toBe('model_not_allowed');
    }
    expect(env.mock.requests).toHaveLength(1);
  });
});
