import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { describe, expect, it } from 'vitest';
import { ANTHROPIC_SECRET, OPENAI_SECRET, allHeaderText, servedTotals, useTestGateway } from './support/gateway.js';

const gw = useTestGateway();

type Mode = 'bearer' | 'x-api-key';
const MODES: Mode[] = ['bearer', 'x-api-key'];

function openai(mode: Mode) {
  return mode === 'bearer'
    ? new OpenAI({ apiKey: gw.key.secret, baseURL: `${gw.url}/v1`, maxRetries: 0 })
    : // a client that can only send x-api-key: no Authorization at all
      new OpenAI({ apiKey: 'unused', baseURL: `${gw.url}/v1`, maxRetries: 0, defaultHeaders: { authorization: null, 'x-api-key': gw.key.secret } });
}

function anthropic(mode: Mode) {
  return mode === 'bearer'
    ? new Anthropic({ apiKey: null, authToken: gw.key.secret, baseURL: gw.url, maxRetries: 0 })
    : new Anthropic({ apiKey: null, authToken: null, baseURL: gw.url, maxRetries: 0, defaultHeaders: { 'X-Api-Key': gw.key.secret } });
}

/** What reached the upstream carries the account's credential and never the proxy key. */
function expectUpstreamCredential(expected: { header: string; value: string }) {
  expect(gw.mock.requests.length).toBeGreaterThan(0);
  for (const request of gw.mock.requests) {
    expect(request.headers[expected.header]).toBe(expected.value);
    expect(allHeaderText(request.headers)).not.toContain(gw.key.secret);
  }
}

async function usageOf(secret: string) {
  const res = await fetch(`${gw.url}/v1/usage`, { headers: { 'x-api-key': secret } });
  expect(res.status).toBe(200);
  return res.json() as Promise<Record<string, number>>;
}

async function expectUsageMatchesServed() {
  // usage is written when the stream ends; give the store a moment
  const served = gw.mock.served;
  expect(served.length).toBeGreaterThan(0);
  const expected = servedTotals(gw.mock);
  await expect.poll(async () => (await usageOf(gw.key.secret)).total_tokens).toBe(expected.total_tokens);
  const usage = await usageOf(gw.key.secret);
  expect(usage).toMatchObject({ ...expected, request_count: served.length });
}

describe.each(MODES)('official SDKs through the gateway, key as %s', (mode) => {
  it('openai responses.create, not streamed', async () => {
    const response = await openai(mode).responses.create({ model: 'gpt-5', input: 'Say hello' });
    expect(response.status).toBe('completed');
    expect(response.output_text).toContain('mock');
    expectUpstreamCredential({ header: 'authorization', value: `Bearer ${OPENAI_SECRET}` });
    expect(gw.mock.requests[0]!.path).toBe('/v1/responses');
    await expectUsageMatchesServed();
  });

  it('openai responses stream', async () => {
    const stream = openai(mode).responses.stream({ model: 'gpt-5', input: 'Stream please' });
    const deltas: string[] = [];
    stream.on('response.output_text.delta', (e) => deltas.push(e.delta));
    const final = await stream.finalResponse();
    expect(final.status).toBe('completed');
    expect(deltas.length).toBeGreaterThan(1);
    expectUpstreamCredential({ header: 'authorization', value: `Bearer ${OPENAI_SECRET}` });
    await expectUsageMatchesServed();
  });

  it('openai chat completions stream', async () => {
    const stream = await openai(mode).chat.completions.create({
      model: 'gpt-5',
      messages: [{ role: 'user', content: 'hi' }],
      stream: true,
    });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
    expect(text.length).toBeGreaterThan(0);
    expectUpstreamCredential({ header: 'authorization', value: `Bearer ${OPENAI_SECRET}` });
    // the gateway asked for the usage chunk so a streamed call is not metered as zero
    expect((gw.mock.requests[0]!.json as any).stream_options).toEqual({ include_usage: true });
    await expectUsageMatchesServed();
  });

  it('anthropic messages stream', async () => {
    const message = await anthropic(mode)
      .messages.stream({ model: 'claude-sonnet-4-6', max_tokens: 64, messages: [{ role: 'user', content: 'hi' }] })
      .finalMessage();
    expect(message.content[0]).toMatchObject({ type: 'text' });
    expectUpstreamCredential({ header: 'x-api-key', value: ANTHROPIC_SECRET });
    expect(gw.mock.requests[0]!.headers.authorization).toBeUndefined();
    expect(gw.mock.requests[0]!.headers['anthropic-version']).toBeDefined();
    await expectUsageMatchesServed();
  });

  it('anthropic countTokens (not metered)', async () => {
    const result = await anthropic(mode).messages.countTokens({ model: 'claude-sonnet-4-6', messages: [{ role: 'user', content: 'hi' }] });
    expect(result.input_tokens).toBeGreaterThan(0);
    expectUpstreamCredential({ header: 'x-api-key', value: ANTHROPIC_SECRET });
    expect(gw.mock.requests[0]!.path).toBe('/v1/messages/count_tokens');
    expect((await usageOf(gw.key.secret)).request_count).toBe(0);
  });
});
