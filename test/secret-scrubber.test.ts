import { describe, expect, it } from 'vitest';
import { SecretScrubber } from '../src/http/scrubber.js';

const LONG = 'sk-abc123def456ghi789WXYZ';
const SHORT = 'tok-1234567'; // 11 characters: verbatim only
const scrubber = new SecretScrubber([LONG, SHORT, 'tiny']);

describe('SecretScrubber', () => {
  it.each([
    ['verbatim', `key=${LONG};`, 'key=[redacted];'],
    ['first 6, ellipsis, last 4', 'sk-abc…WXYZ', '[redacted]'],
    ['a longer prefix and three dots', 'sk-abc123d...WXYZ', '[redacted]'],
    ['stars, as OpenAI echoes a refused key', `Incorrect API key provided: sk-abc1${'*'.repeat(30)}WXYZ.`, 'Incorrect API key provided: [redacted].'],
    ['mixed mask and shown middle', 'sk-abc1**…**89WXYZ', '[redacted]'],
    ['a short secret verbatim', `t=${SHORT}`, 't=[redacted]'],
  ])('removes %s', (_name, text, expected) => {
    expect(scrubber.text(text)).toBe(expected);
  });

  it.each([
    ['only 5 characters of the prefix', 'sk-ab…WXYZ'],
    ['another suffix', 'sk-abc…WXYQ'],
    ['no mask between prefix and suffix', 'sk-abcWXYZ'],
    ['a single dot is no mask', 'sk-abc.WXYZ'],
    ['masked forms of short secrets', 'tok-12…4567'],
    ['secrets under 8 characters', 'tiny'],
  ])('keeps %s', (_name, text) => {
    expect(scrubber.text(text)).toBe(text);
  });

  it('scrubs header values, arrays included', () => {
    expect(scrubber.headers({ 'x-a': `Bearer ${LONG}`, 'set-cookie': ['a=1', `b=${LONG}`] })).toEqual({
      'x-a': 'Bearer [redacted]',
      'set-cookie': ['a=1', 'b=[redacted]'],
    });
  });

  it('touches only WebSocket frames that report a failure', () => {
    const success = Buffer.from(JSON.stringify({ type: 'response.output_text.delta', delta: LONG, response: { error: null } }));
    expect(scrubber.failureFrame(success)).toBe(success);
    const failed = Buffer.from(JSON.stringify({ type: 'error', status: 401, error: { message: `bad key ${LONG}` } }));
    expect(scrubber.failureFrame(failed).toString()).toBe(JSON.stringify({ type: 'error', status: 401, error: { message: 'bad key [redacted]' } }));
  });

  it('keeps a scrubbed close reason within 123 bytes', () => {
    // an 8-character secret grows by 2 bytes as `[redacted]`
    const reason = Buffer.from(`${'x'.repeat(115)}abcd1234`);
    const scrubbed = new SecretScrubber(['abcd1234']).closeReason(reason);
    expect(scrubbed.length).toBe(123);
    expect(scrubbed.toString()).toBe(`${'x'.repeat(115)}[redacte`);
  });

  it('with no secrets configured, passes everything', () => {
    expect(new SecretScrubber([]).text(`a ${LONG}`)).toBe(`a ${LONG}`);
  });
});
