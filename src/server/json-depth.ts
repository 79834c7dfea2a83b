/** How deep a request's JSON may nest; agent requests nest a handful of levels. */
export const MAX_JSON_DEPTH = 512;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_ARRAY = 0x5b;
const OPEN_OBJECT = 0x7b;
const CLOSE_ARRAY = 0x5d;
const CLOSE_OBJECT = 0x7d;
const COMMA = 0x2c;
const COLON = 0x3a;
const LETTER_T = 0x74;
const LETTER_F = 0x66;

/** What the gateway routes on, from the top level of a request's JSON. */
export interface TopLevel {
  /** the document is a JSON object */
  object: boolean;
  model?: string;
  stream?: boolean;
  /** OpenAI's conversation id for prompt caching, which cache affinity routes on */
  prompt_cache_key?: string;
  /** `metadata.user_id` (Anthropic Messages), where Claude Code names its session for cache affinity */
  metadataUserId?: string;
}

/** The top-level keys whose string value is read. */
type StringKey = 'model' | 'prompt_cache_key';

export interface JsonScan {
  /** nests arrays/objects deeper than the given maximum */
  tooDeep: boolean;
  /** as far as one pass can tell without building the document (it is not validated) */
  top: TopLevel;
}

/** Index of the quote that closes the string opened at `open`, or -1; memchr-fast over long strings. */
function stringEnd(bytes: Buffer, open: number): number {
  let at = open;
  for (;;) {
    at = bytes.indexOf(QUOTE, at + 1);
    if (at < 0) return -1;
    let backslashes = 0;
    for (let j = at - 1; bytes[j] === BACKSLASH; j--) backslashes++;
    if (backslashes % 2 === 0) return at;
  }
}

/** The string from `open` to `close` (its quotes), unescaped only when it has escapes. */
function stringAt(bytes: Buffer, open: number, close: number): string {
  const text = bytes.toString('utf8', open + 1, close);
  return text.includes('\\') ? (JSON.parse(bytes.toString('utf8', open, close + 1)) as string) : text;
}

/** `metadata.user_id` of a top-level `metadata` value (its text only: it is small), else undefined. */
function userIdIn(metadataText: string): string | undefined {
  try {
    const metadata = JSON.parse(metadataText) as { user_id?: unknown } | null;
    return typeof metadata?.user_id === 'string' ? metadata.user_id : undefined;
  } catch {
    return undefined; // the document is not valid JSON: the upstream refuses it
  }
}

/**
 * One linear pass over JSON bytes that builds nothing: whether it nests deeper than `maxDepth`
 * (run before JSON.parse, so `[[[[…` of many megabytes is refused without building it), and the
 * top-level `model`, `stream`, `prompt_cache_key` and `metadata.user_id` (the last of duplicates, as JSON.parse
 * takes). Strings, most of an agent's request, are skipped with `indexOf`.
 */
export function scanJson(bytes: Buffer, maxDepth: number): JsonScan {
  const top: TopLevel = { object: false };
  let depth = 0;
  let expectKey = false;
  /** the top-level key that matters whose value comes next */
  let key: StringKey | 'stream' | 'metadata' | undefined;
  /** where the top-level `metadata` object being read opened */
  let metadataStart = -1;
  let first = true;
  for (let i = 0; i < bytes.length; i++) {
    const byte = bytes[i]!;
    if (byte <= 0x20) continue; // whitespace (and control bytes JSON.parse would refuse)
    if (first) {
      top.object = byte === OPEN_OBJECT;
      first = false;
    }
    if (key !== undefined && byte !== COLON) {
      // the value of a key that matters starts here
      if (key === 'metadata') {
        delete top.metadataUserId;
        if (byte === OPEN_OBJECT) metadataStart = i;
      } else if (key !== 'stream') {
        if (byte === QUOTE) {
          const close = stringEnd(bytes, i);
          if (close < 0) break;
          top[key] = stringAt(bytes, i, close);
          i = close;
          key = undefined;
          continue;
        }
        delete top[key]; // not a string
      } else if (byte === LETTER_T || byte === LETTER_F) top.stream = byte === LETTER_T;
      else delete top.stream; // not a boolean
      key = undefined;
    }
    if (byte === QUOTE) {
      const close = stringEnd(bytes, i);
      if (close < 0) break;
      if (expectKey && depth === 1) {
        expectKey = false;
        const length = close - i - 1;
        // only four keys matter: the others are not decoded
        if (length === 5 || length === 6 || length === 8 || length === 16 || bytes.subarray(i, close).includes(BACKSLASH)) {
          const name = stringAt(bytes, i, close);
          if (name === 'model' || name === 'stream' || name === 'prompt_cache_key' || name === 'metadata') key = name;
        }
      }
      i = close;
    } else if (byte === OPEN_ARRAY || byte === OPEN_OBJECT) {
      if (++depth > maxDepth) return { tooDeep: true, top };
      if (depth === 1 && top.object) expectKey = true;
    } else if (byte === CLOSE_ARRAY || byte === CLOSE_OBJECT) {
      depth--;
      if (depth === 1 && metadataStart >= 0) {
        const userId = userIdIn(bytes.toString('utf8', metadataStart, i + 1));
        if (userId !== undefined) top.metadataUserId = userId;
        metadataStart = -1;
      }
    } else if (byte === COMMA && depth === 1 && top.object) {
      expectKey = true;
    }
  }
  return { tooDeep: false, top };
}

/** The same facts read from a document JSON.parse built. */
export function topLevelOf(json: unknown): TopLevel {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return { object: false };
  const { model, stream, prompt_cache_key, metadata } = json as { model?: unknown; stream?: unknown; prompt_cache_key?: unknown; metadata?: unknown };
  const userId = typeof metadata === 'object' && metadata !== null ? (metadata as { user_id?: unknown }).user_id : undefined;
  return {
    object: true,
    ...(typeof model === 'string' && { model }),
    ...(typeof stream === 'boolean' && { stream }),
    ...(typeof prompt_cache_key === 'string' && { prompt_cache_key }),
    ...(typeof userId === 'string' && { metadataUserId: userId }),
  };
}
