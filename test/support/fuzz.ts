/**
 * Fuzz support: fast-check arbitraries for hostile HTTP requests and WebSocket sessions, a raw
 * socket client that sends bytes fetch/undici refuse to (CR/LF in values, odd methods, broken
 * framing), a WebSocket session runner, and the checks every answer must pass.
 */
import { connect } from 'node:net';
import fc from 'fast-check';
import WebSocket from 'ws';

/** A client-side bound on every exchange: past it the gateway is hanging. */
export const CASE_TIMEOUT_MS = 10_000;

// ---- what must never reach a client ----

export interface Secret {
  name: string;
  value: string;
}

/** A secret the case itself sent may come back (e.g. echoed in a 404 path); any other may not. */
export function leakedSecret(answer: Buffer, sent: Buffer, secrets: readonly Secret[]): Secret | undefined {
  return secrets.find((s) => answer.includes(s.value) && !sent.includes(s.value));
}

/**
 * A 500 made by the gateway (its `internal_error`, or Fastify's or Node's own 500), as opposed to
 * an upstream 500 passed through, which the mock upstream words as `server_error` with a null code.
 */
export function gatewayInternalError(status: number, body: Buffer): boolean {
  let json: { error?: { code?: unknown; type?: unknown } } | undefined;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch {
    json = undefined;
  }
  if (json?.error?.code === 'internal_error') return true;
  if (status !== 500) return false;
  return !(json?.error?.type === 'server_error' && json.error.code === null);
}

// ---- raw HTTP over node:net ----

export type Framing = 'length' | 'chunked' | 'none' | 'short' | 'long';

export interface RawHttpCase {
  method: string;
  /** request target, bytes as given (may hold non-ASCII) */
  path: string;
  /** header lines as written; a value may carry CR/LF */
  headers: Array<[string, string]>;
  body: Uint8Array;
  /** how the body is framed: right Content-Length, chunked, none, too short, too long */
  framing: Framing;
}

export interface RawAnswer {
  /** null: the server closed without a complete status line (a refusal, not a hang) */
  status: number | null;
  headers: Record<string, string>;
  body: Buffer;
  /** every byte received */
  raw: Buffer;
}

export function requestBytes(c: RawHttpCase): Buffer {
  const body = Buffer.from(c.body);
  const lines = [`${c.method} ${c.path} HTTP/1.1`, 'host: 127.0.0.1', ...c.headers.map(([n, v]) => `${n}: ${v}`)];
  let payload = body;
  switch (c.framing) {
    case 'length':
      lines.push(`content-length: ${body.length}`);
      break;
    case 'short':
      lines.push(`content-length: ${Math.floor(body.length / 2)}`);
      break;
    case 'long':
      lines.push(`content-length: ${body.length + 17}`);
      break;
    case 'chunked': {
      lines.push('transfer-encoding: chunked');
      const parts: Buffer[] = [];
      for (let at = 0; at < body.length; at += 4096) {
        const chunk = body.subarray(at, at + 4096);
        parts.push(Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n'));
      }
      payload = Buffer.concat([...parts, Buffer.from('0\r\n\r\n')]);
      break;
    }
    case 'none':
      break;
  }
  lines.push('connection: close');
  return Buffer.concat([Buffer.from(lines.join('\r\n') + '\r\n\r\n', 'utf8'), payload]);
}

/** The first complete response in `raw` (1xx interim answers skipped), or null if more is due. */
function parseResponse(raw: Buffer, method: string, closed: boolean): RawAnswer | null {
  let at = 0;
  for (;;) {
    const end = raw.indexOf('\r\n\r\n', at);
    if (end === -1) return closed ? { status: null, headers: {}, body: Buffer.alloc(0), raw } : null;
    const [statusLine, ...headerLines] = raw.subarray(at, end).toString('latin1').split('\r\n');
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine ?? '')?.[1] ?? NaN);
    if (Number.isNaN(status)) return closed ? { status: null, headers: {}, body: Buffer.alloc(0), raw } : null;
    const headers: Record<string, string> = {};
    for (const line of headerLines) {
      const colon = line.indexOf(':');
      if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    const bodyStart = end + 4;
    if (status >= 100 && status < 200 && status !== 101) {
      at = bodyStart;
      continue;
    }
    const rest = raw.subarray(bodyStart);
    if (status === 101 || status === 204 || status === 304 || method === 'HEAD') return { status, headers, body: Buffer.alloc(0), raw };
    if (headers['transfer-encoding']?.toLowerCase().includes('chunked')) {
      const body = dechunk(rest);
      if (body) return { status, headers, body, raw };
      return closed ? { status, headers, body: rest, raw } : null;
    }
    if (headers['content-length'] !== undefined) {
      const length = Number(headers['content-length']);
      if (rest.length >= length) return { status, headers, body: rest.subarray(0, length), raw };
      return closed ? { status, headers, body: rest, raw } : null;
    }
    return closed ? { status, headers, body: rest, raw } : null;
  }
}

/** A chunked body decoded, or null while its last chunk has not arrived. */
function dechunk(data: Buffer): Buffer | null {
  const parts: Buffer[] = [];
  let at = 0;
  for (;;) {
    const lineEnd = data.indexOf('\r\n', at);
    if (lineEnd === -1) return null;
    const size = parseInt(data.subarray(at, lineEnd).toString('latin1'), 16);
    if (Number.isNaN(size)) return Buffer.concat(parts);
    if (size === 0) return Buffer.concat(parts);
    if (data.length < lineEnd + 2 + size + 2) return null;
    parts.push(data.subarray(lineEnd + 2, lineEnd + 2 + size));
    at = lineEnd + 2 + size + 2;
  }
}

/**
 * Sends the bytes on a fresh connection and reads the first answer. The server closing without
 * one is an answer too (a refused request); silence past `CASE_TIMEOUT_MS` is a hang.
 */
export function sendRaw(baseUrl: string, c: RawHttpCase): Promise<RawAnswer> {
  const { hostname, port } = new URL(baseUrl);
  const bytes = requestBytes(c);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: hostname, port: Number(port) });
    const chunks: Buffer[] = [];
    let settled = false;
    const settle = (outcome: RawAnswer | Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (outcome instanceof Error) reject(outcome);
      else resolve(outcome);
    };
    const timer = setTimeout(() => settle(new Error(`hang: no answer and no close within ${CASE_TIMEOUT_MS} ms`)), CASE_TIMEOUT_MS);
    const check = (closed: boolean) => {
      const answer = parseResponse(Buffer.concat(chunks), c.method, closed);
      if (answer) settle(answer);
    };
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      check(false);
    });
    socket.on('close', () => check(true));
    // a reset after the server answered or refused is still an answer; the close handler reads it
    socket.on('error', () => {});
    socket.write(bytes, () => {
      // a body shorter than announced: end our side so the server sees the request will not complete
      if (c.framing === 'long') socket.end();
    });
  });
}

// ---- WebSocket sessions ----

export type WsFrame =
  | { kind: 'text'; text: string }
  | { kind: 'bytes-as-text'; bytes: Uint8Array }
  | { kind: 'binary'; bytes: Uint8Array };

export interface WsCase {
  path: string;
  headers: Record<string, string>;
  deflate: boolean;
  frames: WsFrame[];
  /** `sentinel`: end with a valid response.create and wait for its completion; `terminate`: drop the TCP connection */
  ending: 'sentinel' | 'terminate';
}

export const SENTINEL_INSTRUCTIONS = 'fuzz-sentinel';
export const SENTINEL_FRAME = JSON.stringify({ type: 'response.create', model: 'gpt-5', input: 'sentinel', instructions: SENTINEL_INSTRUCTIONS });

export interface WsOutcome {
  /** the handshake's status when it was refused over HTTP */
  refusedStatus?: number;
  /** everything the server sent: refusal headers and body, frames, close reason */
  received: Buffer[];
  closeCode?: number;
}

export function wsSentBytes(c: WsCase): Buffer {
  return Buffer.concat([
    Buffer.from(c.path + JSON.stringify(c.headers)),
    ...c.frames.map((f) => (f.kind === 'text' ? Buffer.from(f.text) : Buffer.from(f.bytes))),
  ]);
}

/** Opens the session, sends the frames, then ends it as the case says; resolves when it is over. */
export function runWs(baseUrl: string, c: WsCase): Promise<WsOutcome> {
  const outcome: WsOutcome = { received: [] };
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(baseUrl.replace(/^http/, 'ws') + c.path, {
      headers: c.headers,
      perMessageDeflate: c.deflate,
      maxPayload: 128 * 1024 * 1024,
    });
    let settled = false;
    const settle = (err?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      ws.terminate();
      if (err) reject(err);
      else resolve(outcome);
    };
    const timer = setTimeout(
      () => settle(new Error(`hang: WebSocket session not over within ${CASE_TIMEOUT_MS} ms (state ${ws.readyState})`)),
      CASE_TIMEOUT_MS,
    );
    ws.on('unexpected-response', (_req, res) => {
      outcome.refusedStatus = res.statusCode;
      outcome.received.push(Buffer.from(JSON.stringify(res.headers)));
      res.on('data', (chunk: Buffer) => outcome.received.push(chunk));
      res.on('end', () => settle());
      res.on('error', () => settle());
    });
    ws.on('open', () => {
      for (const frame of c.frames) {
        if (frame.kind === 'text') ws.send(frame.text);
        else ws.send(Buffer.from(frame.bytes), { binary: frame.kind === 'binary' });
      }
      if (c.ending === 'terminate') return settle();
      ws.send(SENTINEL_FRAME);
    });
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      outcome.received.push(Buffer.from(data));
      if (isBinary) return;
      const text = data.toString('utf8');
      if (text.includes('"response.completed"') && text.includes(SENTINEL_INSTRUCTIONS)) ws.close(1000);
    });
    ws.on('close', (code: number, reason: Buffer) => {
      outcome.closeCode = code;
      outcome.received.push(reason);
      settle();
    });
    // protocol errors (a refused extension, a bad frame) end in 'close'; the outcome is what matters
    ws.on('error', () => {
      if (ws.readyState === WebSocket.CLOSED) settle();
    });
  });
}

// ---- arbitraries ----

/** Valid-looking request bodies per route, the material that mutations start from. */
const TEMPLATES: Record<string, () => Record<string, unknown>> = {
  '/v1/responses': () => ({ model: 'gpt-5', input: 'Say hello' }),
  '/backend-api/codex/responses': () => ({ model: 'gpt-5', input: [{ role: 'user', content: 'hi' }], stream: true, store: false }),
  '/v1/chat/completions': () => ({ model: 'gpt-5', messages: [{ role: 'user', content: 'hi' }] }),
  '/v1/messages': () => ({ model: 'claude-sonnet-4-5', max_tokens: 64, messages: [{ role: 'user', content: 'hi' }] }),
  '/v1/messages/count_tokens': () => ({ model: 'claude-sonnet-4-5', messages: [{ role: 'user', content: 'hi' }] }),
  '/admin/keys': () => ({ name: 'fuzz', allowed_models: ['gpt-5'], limits: [] }),
};

export const PUBLIC_PATHS = [
  '/v1/responses',
  '/v1/chat/completions',
  '/v1/messages',
  '/v1/messages/count_tokens',
  '/v1/models',
  '/v1/usage',
  '/backend-api/codex/responses',
  '/health/live',
  '/health/ready',
  '/metrics',
  '/admin/keys',
  '/admin/keys/key_0000000000000000',
  '/admin/accounts',
  '/admin/accounts/no-such-account/disable',
  '/admin/accounts/no-such-account/enable',
  '/',
  '/v1',
  '/v2/responses',
  '/internal/bridge/responses',
];

export const INTERNAL_PATHS = ['/internal/bridge/responses', '/health/live', '/', '/internal/bridge', '/v1/responses', '/metrics'];

const odd = fc.oneof(
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.constantFrom('', ' ', '\u0000', '\u00e9', '\ud83d\ude00', '\u202e', '\ufeff', '%', '%%', '%zz', '%00', '%0d%0a', '..', '\\', '"', "'", '<script>'),
);

const methodArb = fc.oneof(
  { weight: 6, arbitrary: fc.constant('POST') },
  { weight: 4, arbitrary: fc.constant('GET') },
  { weight: 3, arbitrary: fc.constantFrom('PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS') },
  { weight: 2, arbitrary: fc.constantFrom('TRACE', 'PROPFIND', 'MKCOL', 'PURGE', 'QUERY', 'SEARCH', 'LINK', 'M-SEARCH', 'post', 'Get') },
  { weight: 1, arbitrary: fc.stringMatching(/^[A-Z]{1,12}$/) },
  { weight: 1, arbitrary: fc.constantFrom('G\u00e9T', 'PO ST', 'GET\t', '', 'CONNECT') },
);

function pathArb(bases: readonly string[]): fc.Arbitrary<string> {
  const base = fc.constantFrom(...bases);
  return fc.oneof(
    { weight: 14, arbitrary: base },
    { weight: 2, arbitrary: fc.tuple(base, fc.array(fc.tuple(odd, odd), { maxLength: 4 })).map(([p, q]) => `${p}?${q.map(([k, v]) => `${k}=${v}`).join('&')}`) },
    { weight: 1, arbitrary: base.map((p) => `/v1/../${p.slice(1)}`) },
    { weight: 1, arbitrary: base.map((p) => p.replace(/\//g, '%2f')) },
    { weight: 1, arbitrary: base.map((p) => `/%2e%2e${p}`) },
    { weight: 1, arbitrary: base.map((p) => `/${p}`) },
    { weight: 1, arbitrary: base.map((p) => `${p}/`) },
    { weight: 1, arbitrary: base.map((p) => p.toUpperCase()) },
    { weight: 1, arbitrary: base.map((p) => p.replace('s', '%73')) },
    { weight: 1, arbitrary: fc.tuple(base, odd).map(([p, o]) => p + o) },
    { weight: 1, arbitrary: fc.tuple(base, fc.integer({ min: 1_000, max: 20_000 })).map(([p, n]) => p + '/' + 'a'.repeat(n)) },
    { weight: 1, arbitrary: fc.constantFrom('*', 'http://127.0.0.1/v1/responses', '//evil.example/v1/models', '/..%2f..%2fetc/passwd', '/v1/responses#frag', '/v1/responses;x=1', '/\u00fc\u00f1\u00ee/\u2603') },
  );
}

/** Credentials a case presents; keys are looked up by label when the case is sent. */
export type KeyLabel = 'valid' | 'restricted' | 'expired' | 'disabled' | 'admin' | 'upstream' | 'garbage' | 'empty';

const keyLabel = fc.constantFrom<KeyLabel>('valid', 'valid', 'valid', 'valid', 'valid', 'restricted', 'restricted', 'expired', 'disabled', 'admin', 'upstream', 'garbage', 'empty');

export type AuthSpec =
  | { kind: 'none' }
  | { kind: 'bearer' | 'x-api-key' | 'both' | 'raw-authorization'; key: KeyLabel; scheme?: string; noise?: string };

/** Credentials in well-formed headers (also all a WebSocket client can send). */
const credentialArb: fc.Arbitrary<AuthSpec> = fc.oneof(
  { weight: 1, arbitrary: fc.constant({ kind: 'none' as const }) },
  { weight: 4, arbitrary: fc.record({ kind: fc.constantFrom('bearer' as const, 'x-api-key' as const, 'both' as const), key: keyLabel }) },
);

const authArb: fc.Arbitrary<AuthSpec> = fc.oneof(
  { weight: 5, arbitrary: credentialArb },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('raw-authorization' as const),
      key: keyLabel,
      scheme: fc.constantFrom('Bearer', 'bearer', 'BEARER', 'Basic', 'Token', '', 'Bearer  ', '\tBearer'),
      noise: odd,
    }),
  },
);

/** Header material: names and values that matter to a gateway, and hostile shapes of each. */
const headerName = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.constantFrom(
      'content-type', 'content-encoding', 'content-length', 'transfer-encoding', 'accept', 'accept-encoding', 'expect',
      'connection', 'upgrade', 'host', 'x-request-id', 'session-id', 'session_id', 'thread-id', 'x-codex-turn-state',
      'openai-organization', 'openai-project', 'chatgpt-account-id', 'openai-beta', 'anthropic-version', 'anthropic-beta',
      'x-forwarded-for', 'forwarded', 'cookie', 'x-tollgate-context', 'authorization', 'x-api-key', 'range', 'te', 'trailer',
      'sec-websocket-key', 'sec-websocket-version', 'sec-websocket-extensions', 'x-stainless-lang', 'idempotency-key',
    ),
  },
  { weight: 2, arbitrary: fc.stringMatching(/^[a-z][a-z0-9-]{0,30}$/) },
  { weight: 1, arbitrary: fc.constantFrom('X-\u00e9', 'x y', 'x:y', '', 'x\u0000', '(x)', 'x\r\ny') },
);

const headerValue = fc.oneof(
  { weight: 4, arbitrary: fc.string({ maxLength: 40 }) },
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      'application/json', 'text/plain', 'application/json; charset=utf-16', 'multipart/form-data; boundary=x', 'gzip', 'br',
      'zstd', 'deflate', 'identity', 'gzip, gzip', 'chunked', 'chunked, gzip', '100-continue', 'websocket', 'upgrade',
      'keep-alive', 'close', '-1', '99999999999999999999', '0', 'fuzz-session', 'tg1.' + 'Zm9v', 'tg1.!!!', 'org-doesnotexist',
      'bytes=0-1', 'dGhlIHNhbXBsZSBub25jZQ==', '13',
    ),
  },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 40 }) },
  { weight: 1, arbitrary: odd.map((s) => `a\r\nx-injected: ${s}`) },
  { weight: 1, arbitrary: fc.constantFrom('a\nx-injected: 1', 'a\rb', 'a\r\n\r\nGET /health/live HTTP/1.1', '\u0000', '\u00ff\u00fe', '\u2028') },
  { weight: 1, arbitrary: fc.integer({ min: 1_000, max: 20_000 }).map((n) => 'v'.repeat(n)) },
);

const hostileHeaders = fc
  .tuple(fc.array(fc.tuple(headerName, headerValue), { maxLength: 8 }), fc.nat({ max: 3 }))
  .map(([headers, dup]) => (headers.length > 0 && dup > 0 ? [...headers, ...headers.slice(0, dup)] : headers));

/** What real clients send, so most cases get past the HTTP parser and the auth hook. */
const clientHeaders = fc.subarray<[string, string]>([
  ['content-type', 'application/json'],
  ['accept', 'text/event-stream'],
  ['openai-beta', 'responses=experimental'],
  ['session-id', 'fuzz-session-1'],
  ['x-stainless-lang', 'js'],
  ['anthropic-version', '2023-06-01'],
  ['user-agent', 'codex_cli_rs/0.0.0'],
]);

const printable = fc.stringMatching(/^[ -~]{0,60}$/);

const headersArb = fc.oneof(
  { weight: 4, arbitrary: clientHeaders },
  { weight: 3, arbitrary: fc.tuple(clientHeaders, fc.array(fc.tuple(headerName, fc.oneof(printable, headerValue)), { maxLength: 3 })).map(([a, b]) => [...a, ...b]) },
  { weight: 2, arbitrary: hostileHeaders },
);

/** JSON nested `depth` levels deep, arrays or objects. */
const deepJson = fc
  .tuple(fc.oneof(fc.integer({ min: 10, max: 600 }), fc.integer({ min: 3_000, max: 6_000 })), fc.boolean(), fc.constantFrom('model', 'input', 'messages', 'x'))
  .map(([depth, arrays, field]) => {
    const open = arrays ? '['.repeat(depth) : '{"a":'.repeat(depth);
    const close = arrays ? ']'.repeat(depth) : '}'.repeat(depth);
    return `{"model":"gpt-5","stream":true,"${field}":${open}1${close}}`;
  });

const wrongValue = fc.oneof(
  fc.constantFrom(null, true, false, 0, -1, 1e308, '', 'true', [], {}, ['gpt-5'], { model: 'gpt-5' }, '\u0000', '\ud800'),
  fc.jsonValue({ maxDepth: 3 }),
  fc.integer({ min: 1_000, max: 400_000 }).map((n) => 'x'.repeat(n)),
);

/** A route's valid body with some fields replaced by values of the wrong type or shape. */
function mutatedBody(path: string): fc.Arbitrary<string> {
  const template = TEMPLATES[path.split('?')[0]!] ?? TEMPLATES['/v1/responses']!;
  const field = fc.constantFrom('model', 'stream', 'input', 'messages', 'stream_options', 'max_tokens', 'instructions', 'type', 'name', 'limits');
  return fc.array(fc.tuple(field, wrongValue), { maxLength: 4 }).map((changes) => {
    const body: Record<string, unknown> = template();
    for (const [name, value] of changes) body[name] = value;
    return JSON.stringify(body);
  });
}

function bodyArb(path: string): fc.Arbitrary<Uint8Array> {
  const text = fc.oneof(
    { weight: 4, arbitrary: mutatedBody(path) },
    { weight: 2, arbitrary: fc.tuple(mutatedBody(path), fc.double({ min: 0, max: 1, noNaN: true })).map(([s, f]) => s.slice(0, Math.floor(s.length * f))) },
    { weight: 1, arbitrary: fc.json({ maxDepth: 4 }) },
    { weight: 2, arbitrary: deepJson },
    { weight: 1, arbitrary: fc.constantFrom('', '{', '{bad', 'null', '[]', '"str"', '{"model":', '\ufeff{"model":"gpt-5"}', '{"__proto__":{"x":1}}', '{"constructor":{"prototype":{}}}') },
    { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 200 }) },
  );
  return fc.oneof(
    { weight: 8, arbitrary: text.map((s) => new Uint8Array(Buffer.from(s, 'utf8'))) },
    // not UTF-8: random bytes, lone continuation bytes, an encoded surrogate, UTF-16 with a BOM
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 2_000 }) },
    { weight: 1, arbitrary: fc.constantFrom('{"model":"\xff\xfe"}', '\xc0\xaf', '{"input":"\xed\xa0\x80"}').map((s) => new Uint8Array(Buffer.from(s, 'latin1'))) },
    { weight: 1, arbitrary: fc.constant(new Uint8Array(Buffer.from('\ufeff{"model":"gpt-5","input":"hi"}', 'utf16le'))) },
  );
}

const framingArb = fc.oneof(
  { weight: 12, arbitrary: fc.constant<Framing>('length') },
  { weight: 2, arbitrary: fc.constant<Framing>('chunked') },
  { weight: 1, arbitrary: fc.constantFrom<Framing>('none', 'short', 'long') },
);

export interface HttpCase {
  method: string;
  path: string;
  auth: AuthSpec;
  headers: Array<[string, string]>;
  body: Uint8Array;
  framing: Framing;
}

/** The public listener's routes as served, so most cases reach a handler rather than a 404. */
const PUBLIC_ROUTES: Array<[string, string]> = [
  ['POST', '/v1/responses'],
  ['POST', '/backend-api/codex/responses'],
  ['POST', '/v1/chat/completions'],
  ['POST', '/v1/messages'],
  ['POST', '/v1/messages/count_tokens'],
  ['GET', '/v1/models'],
  ['GET', '/v1/usage'],
  ['GET', '/health/ready'],
  ['POST', '/admin/keys'],
  ['GET', '/admin/accounts'],
  ['PATCH', '/admin/keys/key_0000000000000000'],
];

export function httpCaseArb(paths: readonly string[]): fc.Arbitrary<HttpCase> {
  const target = fc.oneof(
    { weight: 2, arbitrary: fc.constantFrom(...PUBLIC_ROUTES) },
    { weight: 1, arbitrary: fc.tuple(methodArb, pathArb(paths)) },
  );
  return fc
    .tuple(target, authArb, headersArb, framingArb)
    .chain(([[method, path], auth, headers, framing]) =>
      bodyArb(path).map((body) => ({ method, path, auth, headers, framing, body })),
    );
}

/** How the internal route's signed context is made (or broken) for a case. */
export type ContextRecipe =
  | { kind: 'absent' | 'valid' | 'expired' | 'wrong-secret' | 'wrong-target' | 'unknown-key' | 'other-body' | 'replayed' }
  | { kind: 'truncated'; at: number }
  | { kind: 'flipped'; at: number }
  | { kind: 'garbage'; value: string };

const contextArb: fc.Arbitrary<ContextRecipe> = fc.oneof(
  // half valid, so the bodies and headers after the signature check get fuzzed too
  { weight: 4, arbitrary: fc.constant<ContextRecipe>({ kind: 'valid' }) },
  fc.constantFrom<ContextRecipe>(
    { kind: 'absent' },
    { kind: 'expired' },
    { kind: 'wrong-secret' },
    { kind: 'wrong-target' },
    { kind: 'unknown-key' },
    { kind: 'other-body' },
    { kind: 'replayed' },
  ),
  fc.record({ kind: fc.constant('truncated' as const), at: fc.nat({ max: 600 }) }),
  fc.record({ kind: fc.constant('flipped' as const), at: fc.nat({ max: 600 }) }),
  fc.record({
    kind: fc.constant('garbage' as const),
    value: fc.oneof(odd, fc.constantFrom('.', 'a.b', 'a.b.c', '..', 'e30.e30', 'eyJ2IjoxfQ.AAAA'), fc.base64String({ maxLength: 400 })),
  }),
);

export interface InternalCase extends HttpCase {
  context: ContextRecipe;
}

export function internalCaseArb(): fc.Arbitrary<InternalCase> {
  const method = fc.oneof({ weight: 6, arbitrary: fc.constant('POST') }, { weight: 1, arbitrary: methodArb });
  const path = fc.oneof({ weight: 6, arbitrary: fc.constant('/internal/bridge/responses') }, { weight: 1, arbitrary: pathArb(INTERNAL_PATHS) });
  const session = fc.constantFrom<Array<[string, string]>>(
    [['session-id', 'fuzz-internal-1']],
    [['session-id', 'fuzz-internal-2']],
    [['x-codex-turn-state', 'tg1.Zm9v']],
    [['thread-id', 'fuzz-internal-3']],
    [],
  );
  return fc
    .tuple(method, path, contextArb, session, headersArb, framingArb)
    .chain(([m, p, context, sessionHeaders, headers, framing]) =>
      fc.oneof({ weight: 3, arbitrary: fc.constant(new Uint8Array(Buffer.from(JSON.stringify({ model: 'gpt-5', input: 'fwd', store: false })))) }, { weight: 2, arbitrary: bodyArb('/v1/responses') }).map(
        (body): InternalCase => ({ method: m, path: p, auth: { kind: 'none' }, context, headers: [...sessionHeaders, ...headers], framing, body }),
      ),
    );
}

const frameArb: fc.Arbitrary<WsFrame> = fc.oneof(
  { weight: 4, arbitrary: fc.tuple(mutatedBody('/v1/responses'), fc.constantFrom('response.create', 'response.cancel', '', 'x')).map(([body, type]) => ({ kind: 'text' as const, text: JSON.stringify({ type, ...JSON.parse(body) }) })) },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom('\ufeff', '\ufeff\ufeff', ' \ufeff', '\u200b'), fc.constantFrom('gpt-5', 'not-allowed-model', 1)).map(([bom, model]) => ({ kind: 'text' as const, text: `${bom}${JSON.stringify({ type: 'response.create', model, input: 'x' })}` })) },
  { weight: 1, arbitrary: fc.constantFrom('{', '{"type":"response.create"', 'null', '[]', '"response.create"', '{"type":"response.create","response":{"model":7}}', '{"type":"response.create","response":null}').map((text) => ({ kind: 'text' as const, text })) },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 300 }).map((text) => ({ kind: 'text' as const, text })) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300 }).map((bytes) => ({ kind: 'binary' as const, bytes })) },
  { weight: 1, arbitrary: fc.oneof(fc.uint8Array({ maxLength: 100 }), fc.constant(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]))).map((bytes) => ({ kind: 'bytes-as-text' as const, bytes })) },
  { weight: 1, arbitrary: fc.integer({ min: 64 * 1024, max: 1024 * 1024 }).map((n) => ({ kind: 'text' as const, text: JSON.stringify({ type: 'response.create', model: 'gpt-5', input: 'y'.repeat(n) }) })) },
);

export function wsCaseArb(): fc.Arbitrary<{ ws: WsCase; auth: AuthSpec; extra: Array<[string, string]> }> {
  const wsHeader = fc.tuple(
    fc.constantFrom('openai-organization', 'chatgpt-account-id', 'sec-websocket-protocol', 'sec-websocket-extensions', 'session-id', 'x-request-id', 'openai-beta', 'x-stainless-lang'),
    fc.oneof(fc.stringMatching(/^[ -~]{0,40}$/), fc.constantFrom('permessage-deflate; server_max_window_bits=99', 'permessage-deflate; client_max_window_bits=0', 'x-webkit-deflate-frame', 'responses_websockets=2026-02-06')),
  );
  return fc
    .record({
      path: fc.oneof(
        { weight: 4, arbitrary: fc.constantFrom('/v1/responses', '/backend-api/codex/responses') },
        { weight: 1, arbitrary: fc.constantFrom('/v1/responses?x=%zz', '/v1/chat/completions', '/v1/models', '/v1/responses/', '/nope') },
      ),
      auth: fc.oneof({ weight: 5, arbitrary: fc.constant<AuthSpec>({ kind: 'bearer', key: 'valid' }) }, { weight: 2, arbitrary: credentialArb }),
      extra: fc.array(wsHeader, { maxLength: 3 }),
      deflate: fc.boolean(),
      frames: fc.array(frameArb, { maxLength: 6 }),
      ending: fc.constantFrom<WsCase['ending']>('sentinel', 'sentinel', 'sentinel', 'terminate'),
    })
    .map(({ path, auth, extra, deflate, frames, ending }) => ({ ws: { path, headers: {}, deflate, frames, ending }, auth, extra }));
}

/** A case in a few lines: method, path, headers, and the head of the body. */
export function describeCase(value: unknown): string {
  return JSON.stringify(
    value,
    (_key, v: unknown) => {
      if (v instanceof Uint8Array) {
        const text = Buffer.from(v).toString('utf8');
        return `<${v.length} bytes> ${JSON.stringify(text.slice(0, 200))}${text.length > 200 ? '…' : ''}`;
      }
      if (typeof v === 'string' && v.length > 300) return `${v.slice(0, 200)}…<${v.length} chars>`;
      return v;
    },
    2,
  );
}
