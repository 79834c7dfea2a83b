import { describe, expect, it } from 'vitest';
import { SseParser, type SseEvent } from '../src/usage/sse.js';
import { addUsage, fromAnthropicUsage, fromChatUsage, fromResponsesUsage, ZERO_USAGE, type TokenUsage, type WireFormat } from '../src/usage/tokens.js';
import { createUsageMeter } from '../src/usage/meter.js';
import { usageFromResponsesEvent } from '../src/usage/responses-events.js';

const SSE = 'text/event-stream; charset=utf-8';

/** Builds an SSE body from [event, payload] pairs the way upstreams emit it. */
function sse(events: Array<[string | null, unknown]>): string {
  return events
    .map(([ev, data]) => `${ev ? `event: ${ev}\n` : ''}data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`)
    .join('');
}

const usage = (input: number, output: number, cached: number): TokenUsage => ({
  input_tokens: input,
  output_tokens: output,
  cached_input_tokens: cached,
  total_tokens: input + output,
});

// --- realistic upstream streams -------------------------------------------------

const respBase = { id: 'resp_67c9', object: 'response', created_at: 1741290958, model: 'gpt-5-codex', output: [] as unknown[] };
const RESPONSES_STREAM = sse([
  ['response.created', { type: 'response.created', sequence_number: 0, response: { ...respBase, status: 'in_progress', usage: null } }],
  ['response.in_progress', { type: 'response.in_progress', sequence_number: 1, response: { ...respBase, status: 'in_progress', usage: null } }],
  ['response.output_item.added', { type: 'response.output_item.added', sequence_number: 2, output_index: 0, item: { id: 'msg_1', type: 'message', status: 'in_progress', role: 'assistant', content: [] } }],
  ['response.output_text.delta', { type: 'response.output_text.delta', sequence_number: 3, item_id: 'msg_1', output_index: 0, content_index: 0, delta: 'Héllo — 你好 🚀 ' }],
  // Model output that *mentions* usage must not confuse the meter.
  ['response.output_text.delta', { type: 'response.output_text.delta', sequence_number: 4, item_id: 'msg_1', output_index: 0, content_index: 0, delta: 'set "usage": {"input_tokens": 9999}' }],
  ['response.output_text.done', { type: 'response.output_text.done', sequence_number: 5, item_id: 'msg_1', output_index: 0, content_index: 0, text: 'Héllo — 你好 🚀 set "usage": {"input_tokens": 9999}' }],
  [
    'response.completed',
    {
      type: 'response.completed',
      sequence_number: 6,
      response: {
        ...respBase,
        status: 'completed',
        output: [{ id: 'msg_1', type: 'message', status: 'completed', role: 'assistant', content: [{ type: 'output_text', text: 'Héllo', annotations: [] }] }],
        usage: { input_tokens: 120, input_tokens_details: { cached_tokens: 100 }, output_tokens: 30, output_tokens_details: { reasoning_tokens: 12 }, total_tokens: 999 },
      },
    },
  ],
]);

const chunk = (delta: unknown, finish: string | null, usageField: unknown = null) => ({
  id: 'chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT',
  object: 'chat.completion.chunk',
  created: 1741569952,
  model: 'gpt-4o-2024-08-06',
  system_fingerprint: 'fp_eb9dce56a8',
  choices: delta === null ? [] : [{ index: 0, delta, logprobs: null, finish_reason: finish }],
  usage: usageField,
});
const CHAT_CHUNKS: Array<[null, unknown]> = [
  [null, chunk({ role: 'assistant', content: '', refusal: null }, null)],
  [null, chunk({ content: 'Bonjour ' }, null)],
  [null, chunk({ content: 'ça va? 😀' }, null)],
  [null, chunk({}, 'stop')],
];
const CHAT_USAGE = { prompt_tokens: 1557, completion_tokens: 17, total_tokens: 1574, prompt_tokens_details: { cached_tokens: 1280, audio_tokens: 0 }, completion_tokens_details: { reasoning_tokens: 0 } };
const CHAT_STREAM = sse([...CHAT_CHUNKS, [null, chunk(null, null, CHAT_USAGE)], [null, '[DONE]']]);
const CHAT_STREAM_NO_USAGE = sse([...CHAT_CHUNKS, [null, '[DONE]']]);

// Anthropic puts spaces after colons in its JSON; written out literally on purpose.
const ANTHROPIC_STREAM = [
  'event: message_start',
  'data: {"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", "role": "assistant", "content": [], "model": "claude-sonnet-4-5", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 25, "cache_creation_input_tokens": 1000, "cache_read_input_tokens": 2000, "output_tokens": 1}}}',
  '',
  'event: content_block_start',
  'data: {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}',
  '',
  'event: ping',
  'data: {"type": "ping"}',
  '',
  'event: content_block_delta',
  'data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Grüße ✨"}}',
  '',
  'event: content_block_delta',
  'data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}',
  '',
  'event: content_block_stop',
  'data: {"type": "content_block_stop", "index": 0}',
  '',
  'event: message_delta',
  'data: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 15}}',
  '',
  'event: message_stop',
  'data: {"type": "message_stop"}',
  '',
  '',
].join('\n');

const STREAMS: Array<[WireFormat, string, TokenUsage | null]> = [
  ['openai-responses', RESPONSES_STREAM, usage(120, 30, 100)],
  ['openai-chat', CHAT_STREAM, usage(1557, 17, 1280)],
  ['anthropic-messages', ANTHROPIC_STREAM, usage(3025, 15, 2000)],
];

// --- helpers ---------------------------------------------------------------------

function meterChunks(format: WireFormat, chunks: Buffer[], contentType: string | undefined) {
  const m = createUsageMeter(format, contentType);
  for (const c of chunks) m.push(c);
  return m.finish();
}

function parseChunks(chunks: Buffer[]): SseEvent[] {
  const p = new SseParser();
  return [...chunks.flatMap((c) => p.push(c)), ...p.end()];
}

/** Every way of cutting `buf` in two, plus one byte at a time. */
function splits(buf: Buffer): Buffer[][] {
  const out: Buffer[][] = [];
  for (let i = 0; i <= buf.length; i++) out.push([buf.subarray(0, i), buf.subarray(i)]);
  out.push([...buf].map((b) => Buffer.from([b])));
  return out;
}

// --- SseParser -------------------------------------------------------------------

describe('SseParser', () => {
  it('parses events, event names, comments, multi-line data and the optional space', () => {
    const p = new SseParser();
    const evs = p.push(': keep-alive\n\nevent: greet\ndata: a\ndata:b\ndata:  c\n\ndata\n\nid: 7\nretry: 10\n\ndata: {"x":1}\n\n');
    expect(evs).toEqual([{ event: 'greet', data: 'a\nb\n c' }, { data: '' }, { data: '{"x":1}' }]);
  });

  it('treats \\n, \\r\\n and \\r line endings alike, at every split position', () => {
    const lf = 'event: e1\ndata: one\ndata: twö\n\n: c\ndata: 🚀\n\n';
    const expected = [{ event: 'e1', data: 'one\ntwö' }, { data: '🚀' }];
    for (const text of [lf, lf.replace(/\n/g, '\r\n'), lf.replace(/\n/g, '\r')]) {
      for (const chunks of splits(Buffer.from(text))) expect(parseChunks(chunks)).toEqual(expected);
    }
  });

  it('yields identical events for realistic streams regardless of where chunks split (incl. inside UTF-8 chars)', () => {
    for (const [, body] of STREAMS) {
      const buf = Buffer.from(body);
      const whole = parseChunks([buf]);
      expect(whole.length).toBeGreaterThan(3);
      for (const chunks of splits(buf)) expect(parseChunks(chunks)).toEqual(whole);
    }
  });

  it('strips a leading BOM and dispatches a final event missing its blank line on end()', () => {
    const p = new SseParser();
    expect(p.push('\uFEFFdata: a\n\ndata: last')).toEqual([{ data: 'a' }]);
    expect(p.end()).toEqual([{ data: 'last' }]);
  });

  it('drops an over-long unterminated line (and its event) and keeps going', () => {
    const p = new SseParser({ maxBuffer: 64 });
    expect(p.push('data: ok1\n\nevent: big\ndata: ' + 'x'.repeat(50))).toEqual([{ data: 'ok1' }]);
    expect(p.push('y'.repeat(50))).toEqual([]); // over the cap: buffered partial is discarded
    expect((p as unknown as { partial: string }).partial).toBe('');
    expect(p.push('z'.repeat(1000))).toEqual([]); // rest of the line is skipped, not buffered
    expect((p as unknown as { partial: string }).partial).toBe('');
    expect(p.push('zz\ndata: tail-of-event\n\ndata: ok2\n\n')).toEqual([{ data: 'ok2' }]);
  });

  it('bounds memory with the default 1 MiB cap on a stream that never breaks a line', () => {
    const p = new SseParser();
    const junk = Buffer.alloc(64 * 1024, 'a');
    for (let i = 0; i < 40; i++) p.push(junk); // 2.5 MiB without a line break
    expect((p as unknown as { partial: string }).partial.length).toBeLessThanOrEqual(1024 * 1024 + junk.length);
    expect(p.push('\n\ndata: alive\n\n')).toEqual([{ data: 'alive' }]);
  });

  it('caps the data accumulated by many short data lines in one event', () => {
    const p = new SseParser({ maxBuffer: 100 });
    expect(p.push('data: 0123456789\n'.repeat(20) + '\ndata: next\n\n')).toEqual([{ data: 'next' }]);
  });
});

// --- token normalizers -----------------------------------------------------------

describe('token normalizers', () => {
  it('Responses usage: input includes cached; total recomputed', () => {
    expect(fromResponsesUsage({ input_tokens: 120, input_tokens_details: { cached_tokens: 100 }, output_tokens: 30, total_tokens: 1 })).toEqual(usage(120, 30, 100));
  });

  it('Chat usage', () => {
    expect(fromChatUsage(CHAT_USAGE)).toEqual(usage(1557, 17, 1280));
    expect(fromChatUsage({ prompt_tokens: 5 })).toEqual(usage(5, 0, 0));
  });

  it('Anthropic usage: cache creation and reads are added to input; reads are the cached part', () => {
    expect(fromAnthropicUsage({ input_tokens: 25, cache_creation_input_tokens: 1000, cache_read_input_tokens: 2000, output_tokens: 15 })).toEqual(usage(3025, 15, 2000));
    expect(fromAnthropicUsage({ input_tokens: 10, cache_creation_input_tokens: null, output_tokens: 2 })).toEqual(usage(10, 2, 0));
  });

  it('garbage numbers count as 0; absent/invalid usage is null', () => {
    expect(fromResponsesUsage({ input_tokens: -5, output_tokens: Infinity, input_tokens_details: { cached_tokens: NaN } })).toEqual(ZERO_USAGE);
    expect(fromChatUsage({ prompt_tokens: '12', completion_tokens: 3 })).toEqual(usage(0, 3, 0));
    for (const bad of [null, undefined, 42, 'x', [], {}]) {
      expect(fromResponsesUsage(bad)).toBeNull();
      expect(fromChatUsage(bad)).toBeNull();
      expect(fromAnthropicUsage(bad)).toBeNull();
    }
  });

  it('addUsage sums field by field', () => {
    expect(addUsage(usage(1, 2, 1), usage(10, 20, 5))).toEqual(usage(11, 22, 6));
    expect(addUsage(ZERO_USAGE, ZERO_USAGE)).toEqual(ZERO_USAGE);
  });
});

// --- meter: SSE ------------------------------------------------------------------

describe('usage meter: SSE', () => {
  for (const [format, body, expected] of STREAMS) {
    it(`${format}: same usage at every split position`, () => {
      const buf = Buffer.from(body);
      expect(meterChunks(format, [buf], SSE)).toEqual(expected);
      for (const chunks of splits(buf)) expect(meterChunks(format, chunks, SSE)).toEqual(expected);
    });

    it(`${format}: CRLF and CR line endings`, () => {
      for (const text of [body.replace(/\n/g, '\r\n'), body.replace(/\n/g, '\r')]) {
        const buf = Buffer.from(text);
        for (const chunks of splits(buf)) expect(meterChunks(format, chunks, SSE)).toEqual(expected);
      }
    });
  }

  it('openai-chat stream without a usage chunk → null', () => {
    expect(meterChunks('openai-chat', [Buffer.from(CHAT_STREAM_NO_USAGE)], SSE)).toBeNull();
  });

  it('openai-responses: response.incomplete / response.failed with usage count; without usage → null', () => {
    const u = { input_tokens: 50, output_tokens: 7 };
    for (const type of ['response.incomplete', 'response.failed']) {
      const body = sse([[type, { type, sequence_number: 3, response: { ...respBase, status: type.slice(9), usage: u } }]]);
      expect(meterChunks('openai-responses', [Buffer.from(body)], SSE)).toEqual(usage(50, 7, 0));
    }
    const noUsage = sse([['response.failed', { type: 'response.failed', response: { ...respBase, status: 'failed', usage: null } }]]);
    expect(meterChunks('openai-responses', [Buffer.from(noUsage)], SSE)).toBeNull();
    expect(meterChunks('openai-responses', [Buffer.from(RESPONSES_STREAM.split('event: response.completed')[0])], SSE)).toBeNull();
  });

  it('anthropic: message_delta input/cache fields override message_start', () => {
    const body = sse([
      ['message_start', { type: 'message_start', message: { id: 'msg_1', usage: { input_tokens: 10, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: 1 } } }],
      ['message_delta', { type: 'message_delta', delta: { stop_reason: 'tool_use' }, usage: { input_tokens: 12, cache_creation_input_tokens: 300, cache_read_input_tokens: 400, output_tokens: 88 } }],
      ['message_stop', { type: 'message_stop' }],
    ]);
    expect(meterChunks('anthropic-messages', [Buffer.from(body)], SSE)).toEqual(usage(712, 88, 400));
  });

  it('anthropic: a stream cut after message_start still reports input and the initial output count', () => {
    const cut = ANTHROPIC_STREAM.split('event: content_block_start')[0];
    expect(meterChunks('anthropic-messages', [Buffer.from(cut)], SSE)).toEqual(usage(3025, 1, 2000));
  });

  it('multi-line data payloads are rejoined before JSON parsing', () => {
    const json = JSON.stringify({ type: 'message_delta', usage: { output_tokens: 5, input_tokens: 3 } }, null, 2);
    const body = 'event: message_delta\n' + json.split('\n').map((l) => `data: ${l}`).join('\n') + '\n\n';
    expect(meterChunks('anthropic-messages', [Buffer.from(body)], SSE)).toEqual(usage(3, 5, 0));
  });

  it('an oversized junk line does not break metering of later events', () => {
    const junk = 'data: ' + 'x'.repeat(1.5 * 1024 * 1024) + '\n\n';
    expect(meterChunks('openai-responses', [Buffer.from(junk), Buffer.from(RESPONSES_STREAM)], SSE)).toEqual(usage(120, 30, 100));
  });

  it('finish() is idempotent and pushes after finish are ignored', () => {
    const m = createUsageMeter('openai-chat', 'TEXT/EVENT-STREAM');
    m.push(Buffer.from(CHAT_STREAM));
    expect(m.finish()).toEqual(usage(1557, 17, 1280));
    m.push(Buffer.from(sse([[null, chunk(null, null, { prompt_tokens: 1, completion_tokens: 1 })]])));
    expect(m.finish()).toEqual(usage(1557, 17, 1280));
  });
});

// --- meter: JSON -----------------------------------------------------------------

describe('usage meter: JSON bodies', () => {
  const bodies: Array<[WireFormat, unknown, TokenUsage]> = [
    ['openai-responses', { id: 'resp_1', object: 'response', status: 'completed', output: [], usage: { input_tokens: 120, input_tokens_details: { cached_tokens: 100 }, output_tokens: 30, output_tokens_details: { reasoning_tokens: 0 }, total_tokens: 150 } }, usage(120, 30, 100)],
    ['openai-chat', { id: 'chatcmpl-1', object: 'chat.completion', choices: [{ index: 0, message: { role: 'assistant', content: 'hi 👋' }, finish_reason: 'stop' }], usage: CHAT_USAGE }, usage(1557, 17, 1280)],
    ['anthropic-messages', { id: 'msg_1', type: 'message', role: 'assistant', content: [{ type: 'text', text: 'hi' }], stop_reason: 'end_turn', usage: { input_tokens: 4, cache_creation_input_tokens: 2048, cache_read_input_tokens: 512, output_tokens: 9 } }, usage(2564, 9, 512)],
  ];

  for (const [format, body, expected] of bodies) {
    it(`${format}: parses body.usage, chunked or not`, () => {
      const buf = Buffer.from(JSON.stringify(body));
      expect(meterChunks(format, [buf], 'application/json')).toEqual(expected);
      expect(meterChunks(format, [buf.subarray(0, 7), buf.subarray(7, 40), buf.subarray(40)], undefined)).toEqual(expected);
    });
  }

  it('invalid JSON, empty bodies and error bodies → null', () => {
    expect(meterChunks('openai-chat', [Buffer.from('{"usage": {"prompt_tokens": 3')], 'application/json')).toBeNull();
    expect(meterChunks('openai-chat', [], 'application/json')).toBeNull();
    expect(meterChunks('anthropic-messages', [Buffer.from('{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}')], 'application/json')).toBeNull();
  });

  it('gives up (null) past the 8 MiB cap', () => {
    const pad = Buffer.from(JSON.stringify({ pad: 'x'.repeat(9 * 1024 * 1024) }).slice(0, -1));
    const tail = Buffer.from(`,"usage":${JSON.stringify(CHAT_USAGE)}}`);
    expect(meterChunks('openai-chat', [pad, tail], 'application/json')).toBeNull();
    // Just under the cap still works.
    const small = Buffer.from(JSON.stringify({ pad: 'x'.repeat(7 * 1024 * 1024), usage: CHAT_USAGE }));
    expect(meterChunks('openai-chat', [small], 'application/json')).toEqual(usage(1557, 17, 1280));
  });
});

// --- WebSocket helper ------------------------------------------------------------

describe('usageFromResponsesEvent', () => {
  const u = { input_tokens: 120, input_tokens_details: { cached_tokens: 100 }, output_tokens: 30, total_tokens: 150 };
  it('reads usage from terminal events', () => {
    for (const type of ['response.completed', 'response.done', 'response.incomplete', 'response.failed']) {
      expect(usageFromResponsesEvent({ type, response: { id: 'resp_1', usage: u } })).toEqual(usage(120, 30, 100));
    }
  });

  it('returns null for other events and malformed frames', () => {
    expect(usageFromResponsesEvent({ type: 'response.created', response: { id: 'resp_1', usage: u } })).toBeNull();
    expect(usageFromResponsesEvent({ type: 'response.output_text.delta', delta: 'hi' })).toBeNull();
    expect(usageFromResponsesEvent({ type: 'response.failed', response: { usage: null } })).toBeNull();
    expect(usageFromResponsesEvent({ type: 'response.completed' })).toBeNull();
    for (const bad of [null, 'response.completed', 3, []]) expect(usageFromResponsesEvent(bad)).toBeNull();
  });
});

describe('usage meter: JSON bodies read without a full parse', () => {
  const meterOf = (format: 'openai-responses' | 'anthropic-messages', body: string) => {
    const meter = createUsageMeter(format, 'application/json');
    meter.push(Buffer.from(body));
    return meter.finish();
  };

  it('is not fooled by "usage" inside strings or nested tool input before the top-level usage', () => {
    const anthropic = JSON.stringify({
      id: 'msg_1',
      type: 'message',
      content: [
        { type: 'text', text: 'the "usage": {"input_tokens": 999} you asked about' },
        { type: 'tool_use', id: 't', name: 'report', input: { usage: { input_tokens: 777, output_tokens: 777 } } },
      ],
      usage: { input_tokens: 10, cache_creation_input_tokens: 2, cache_read_input_tokens: 3, output_tokens: 4 },
    });
    expect(meterOf('anthropic-messages', anthropic)).toEqual({ input_tokens: 15, output_tokens: 4, cached_input_tokens: 3, total_tokens: 19 });
  });

  it('falls back to a full parse when the last "usage" is not an object', () => {
    const responses = JSON.stringify({
      id: 'resp_1',
      object: 'response',
      usage: { input_tokens: 20, input_tokens_details: { cached_tokens: 5 }, output_tokens: 7, total_tokens: 27 },
      metadata: { usage: 'internal-billing' },
    });
    expect(meterOf('openai-responses', responses)).toEqual({ input_tokens: 20, output_tokens: 7, cached_input_tokens: 5, total_tokens: 27 });
  });

  it('handles pretty-printed bodies and escaped quotes and braces in strings', () => {
    const body = JSON.stringify(
      { output: [{ text: 'a \\"}{ brace' }], usage: { input_tokens: 1, output_tokens: 2, input_tokens_details: { cached_tokens: 0 } } },
      null,
      2,
    );
    expect(meterOf('openai-responses', body)).toEqual({ input_tokens: 1, output_tokens: 2, cached_input_tokens: 0, total_tokens: 3 });
  });
});
