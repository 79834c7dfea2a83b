// Per-response usage meter: sees the upstream body bytes as they are relayed
// to the client and extracts token usage without holding the stream back.
// SSE bodies are parsed incrementally (only usage-bearing events are
// JSON-parsed); JSON bodies are buffered up to a cap and their usage read at the end.
// Expects decoded (not gzip'd) bytes.
import { SseParser, type SseEvent } from './sse.js';
import { HAS_USAGE, usageFromResponsesEvent } from './responses-events.js';
import { fromAnthropicUsage, fromChatUsage, fromResponsesUsage, type TokenUsage, type WireFormat } from './tokens.js';

export interface UsageMeter {
  push(chunk: Buffer): void;
  /** Usage reported by the upstream, or null if it reported none. Idempotent. */
  finish(): TokenUsage | null;
}

const MAX_JSON_BODY = 8 * 1024 * 1024;

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

function parseJson(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    return undefined;
  }
}

export function createUsageMeter(format: WireFormat, contentType: string | undefined): UsageMeter {
  const isSse = (contentType ?? '').trimStart().toLowerCase().startsWith('text/event-stream');
  return isSse ? sseMeter(format) : jsonMeter(format);
}

/** Folds SSE events into a usage figure; one per wire format. */
interface Accumulator {
  onEvent(ev: unknown): void;
  result(): TokenUsage | null;
}

function responsesAccumulator(): Accumulator {
  let usage: TokenUsage | null = null;
  return {
    onEvent: (ev) => (usage = usageFromResponsesEvent(ev) ?? usage),
    result: () => usage,
  };
}

function chatAccumulator(): Accumulator {
  // The usage chunk (stream_options.include_usage) comes last; if a server
  // sends running usage on every chunk, the last one is cumulative anyway.
  let usage: TokenUsage | null = null;
  return {
    onEvent: (ev) => {
      if (isObj(ev)) usage = fromChatUsage(ev.usage) ?? usage;
    },
    result: () => usage,
  };
}

function anthropicAccumulator(): Accumulator {
  // message_start carries input/cache counts; message_delta carries the
  // cumulative output_tokens and may restate (override) the others.
  const raw: Obj = {};
  let seen = false;
  const merge = (u: unknown) => {
    if (!isObj(u)) return;
    for (const k of ['input_tokens', 'cache_creation_input_tokens', 'cache_read_input_tokens', 'output_tokens']) {
      if (typeof u[k] === 'number') raw[k] = u[k];
    }
    seen = true;
  };
  return {
    onEvent: (ev) => {
      if (!isObj(ev)) return;
      if (ev.type === 'message_start' && isObj(ev.message)) merge(ev.message.usage);
      else if (ev.type === 'message_delta') merge(ev.usage);
    },
    result: () => (seen ? fromAnthropicUsage(raw) : null),
  };
}

const ACCUMULATORS: Record<WireFormat, () => Accumulator> = {
  'openai-responses': responsesAccumulator,
  'openai-chat': chatAccumulator,
  'anthropic-messages': anthropicAccumulator,
};

function sseMeter(format: WireFormat): UsageMeter {
  const parser = new SseParser();
  const acc = ACCUMULATORS[format]();
  let done = false;
  let result: TokenUsage | null = null;
  const handle = (events: SseEvent[]) => {
    for (const { data } of events) {
      if (!HAS_USAGE.test(data)) continue; // also skips `[DONE]`
      const ev = parseJson(data);
      if (ev !== undefined) acc.onEvent(ev);
    }
  };
  return {
    push(chunk) {
      if (!done) handle(parser.push(chunk));
    },
    finish() {
      if (!done) {
        done = true;
        handle(parser.end());
        result = acc.result();
      }
      return result;
    },
  };
}

const JSON_NORMALIZERS: Record<WireFormat, (u: unknown) => TokenUsage | null> = {
  'openai-responses': fromResponsesUsage,
  'openai-chat': fromChatUsage,
  'anthropic-messages': fromAnthropicUsage,
};

/** Index of the `}` closing the object that opens at `open`, skipping strings; -1 if none. */
function closingBrace(text: string, open: number): number {
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      for (i++; i < text.length && text.charCodeAt(i) !== 0x22; i++) if (text.charCodeAt(i) === 0x5c /* \ */) i++;
    } else if (c === 0x7b /* { */) depth++;
    else if (c === 0x7d /* } */ && --depth === 0) return i;
  }
  return -1;
}

/**
 * The top-level `usage` of a JSON response body without parsing all of it: every provider puts
 * it after the content, so the last `"usage":{` is it (a `"usage"` inside a string value would
 * be escaped). Anything unexpected falls back to parsing the whole body.
 */
function usageOfJsonBody(text: string): unknown {
  const key = text.lastIndexOf('"usage"');
  const open = key === -1 ? -1 : text.indexOf('{', key);
  if (open !== -1 && /^"usage"\s*:\s*$/.test(text.slice(key, open))) {
    const close = closingBrace(text, open);
    const usage = close === -1 ? undefined : parseJson(text.slice(open, close + 1));
    if (isObj(usage)) return usage;
  }
  const body = parseJson(text);
  return isObj(body) ? body.usage : undefined;
}

function jsonMeter(format: WireFormat): UsageMeter {
  let chunks: Buffer[] = [];
  let size = 0;
  let overflow = false;
  let done = false;
  let result: TokenUsage | null = null;
  return {
    push(chunk) {
      if (done || overflow) return;
      size += chunk.length;
      if (size > MAX_JSON_BODY) {
        overflow = true; // too big to be worth metering; release what we hold
        chunks = [];
        return;
      }
      chunks.push(chunk);
    },
    finish() {
      if (!done) {
        done = true;
        if (!overflow && size > 0) {
          result = JSON_NORMALIZERS[format](usageOfJsonBody(Buffer.concat(chunks, size).toString('utf8')));
        }
        chunks = [];
      }
      return result;
    },
  };
}
