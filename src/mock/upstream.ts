/**
 * Mock LLM upstream: a plain node:http + ws server speaking enough of the OpenAI
 * (Responses, Chat Completions, Models) and Anthropic (Messages, count_tokens)
 * wire formats for the official SDKs to work against it.
 *
 * It records everything it receives so tests can assert what reached the
 * upstream, and reports deterministic token usage that varies with the request
 * body so usage mix-ups between requests are detectable.
 *
 * Deliberately not Fastify: it doubles as the backend for throughput
 * benchmarks, so the request path is kept minimal (one body buffer, one
 * JSON.parse, a handful of writes).
 */
import { EventEmitter } from 'node:events';
import { createServer, STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { WebSocketServer, WebSocket, type RawData } from 'ws';
import { conversationOf } from '../upstream/cache-affinity.js';
import { createOAuthMock, type OAuthMock } from './oauth.js';

export interface RecordedRequest {
  method: string;
  path: string; // incl. query string
  headers: Record<string, string | string[] | undefined>;
  body: string;
  json: unknown; // parsed body or undefined
}
/** Normalized usage: input_tokens includes cached input; total = input + output. */
export interface TokenUsageReport {
  input_tokens: number;
  output_tokens: number;
  cached_input_tokens: number;
  total_tokens: number;
}
export interface ServedCall {
  path: string;
  transport: 'http' | 'ws';
  stream: boolean;
  usage: TokenUsageReport;
  /** the conversation the call named (prompt_cache_key, session header, Claude Code session), if any */
  conversation?: string;
  /** whether its account served the conversation's previous call, i.e. the prompt cache hit */
  cacheHit?: boolean;
}
export interface WsConnectionRecord {
  path: string;
  headers: Record<string, string | string[] | undefined>;
  frames: unknown[]; // parsed client text frames (raw string if the frame was not valid JSON)
  /** Binary client frames: not Responses events; each is echoed back as a binary frame. */
  binaryFrames: Buffer[];
  closed: boolean;
  closeCode?: number;
  /** Set when the upgrade was refused via rejectWsUpgrades(); the socket never opened. */
  rejectedStatus?: number;
}
export interface ScriptedResponse {
  status: number;
  headers?: Record<string, string>;
  body: string | object;
}
/**
 * Requests the upstream refuses for reasons of the request, not of the credential (a header the
 * client chose, a model the account's project may not use), as OpenAI does: e.g. 401
 * `mismatched_organization`, 403 `model_not_found`. Matches HTTP requests and WebSocket upgrades.
 */
export interface RefusalRule {
  status: number;
  code: string;
  message?: string;
  /** a request header (lowercase name) and, optionally, its exact value */
  header?: { name: string; value?: string };
  /** the `model` of the JSON body */
  model?: string;
}
/** What happened at the mock, as it happens: tests wait on these instead of on the clock. */
export interface MockEvents {
  /** an HTTP response was cut by the peer before the mock finished it */
  abandoned: [RecordedRequest];
}
export interface MockUpstream {
  url: string;
  events: EventEmitter<MockEvents>;
  requests: RecordedRequest[];
  served: ServedCall[];
  wsConnections: WsConnectionRecord[];
  enqueue(...responses: ScriptedResponse[]): void;
  holdStreams(): () => void;
  closeWsNext(code: number, reason: string): void;
  /** the next ws response.create is answered with a text frame that is not valid UTF-8 (a protocol error at the client) */
  breakWsNext(): void;
  /** refuse every upgrade with `status`, optionally with these headers and body; null accepts again */
  rejectWsUpgrades(status: number | null, reply?: { headers?: Record<string, string>; body: string | object }): void;
  /** the next ws response.create is answered with this `error` event instead */
  errorWsNext(event: { status: number; error: object }): void;
  /** from now on these HTTP/upgrade requests are refused (null: none) */
  refuseMatching(rule: RefusalRule | null): void;
  /** credentials (Bearer or x-api-key values) that are no longer valid: every request with one gets 401 */
  revokeCredential(secret: string): void;
  /** bytes the mock has queued on its open WebSockets that the peer has not read yet */
  unsentWsBytes(): number;
  /** per credential, the most HTTP requests it had open at once (since the last reset) */
  peakInFlight: Map<string, number>;
  /** the auth server (`POST /oauth/token`) and the ChatGPT login checks of `/backend-api/codex/*` */
  oauth: OAuthMock;
  reset(): void;
  close(): Promise<void>;
}
export interface MockUpstreamOptions {
  port?: number;
  host?: string;
  /** Record requests/frames/served calls (default true). Benchmarks turn this off to keep memory flat. */
  record?: boolean;
}

type Json = Record<string, unknown>;

const TEXT_DELTAS = ['Hello', ' from', ' mock'];
const TEXT = TEXT_DELTAS.join('');
const MODELS = ['gpt-5', 'gpt-5-mini', 'claude-sonnet-4-5'];

/**
 * Deterministic usage derived from the request size:
 *   input  = 10 + (bytes % 50)     (includes cached)
 *   cached = floor(input / 4)
 *   output = 5 + TEXT_DELTAS.length + (bytes % 7)   (0 for a ws warm-up)
 */
export function usageFor(bodyBytes: number, generate = true): TokenUsageReport {
  const input = 10 + (bodyBytes % 50);
  const cached = Math.floor(input / 4);
  const output = generate ? 5 + TEXT_DELTAS.length + (bodyBytes % 7) : 0;
  return { input_tokens: input, output_tokens: output, cached_input_tokens: cached, total_tokens: input + output };
}

function openaiResponsesUsage(u: TokenUsageReport): Json {
  return {
    input_tokens: u.input_tokens,
    input_tokens_details: { cached_tokens: u.cached_input_tokens },
    output_tokens: u.output_tokens,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: u.total_tokens,
  };
}
function chatUsage(u: TokenUsageReport): Json {
  return {
    prompt_tokens: u.input_tokens,
    completion_tokens: u.output_tokens,
    total_tokens: u.total_tokens,
    prompt_tokens_details: { cached_tokens: u.cached_input_tokens },
    completion_tokens_details: { reasoning_tokens: 0 },
  };
}
/** Anthropic reports uncached input separately from cache reads/creations. */
function anthropicUsage(u: TokenUsageReport, outputTokens: number): Json {
  return {
    input_tokens: u.input_tokens - u.cached_input_tokens,
    cache_creation_input_tokens: 0,
    cache_read_input_tokens: u.cached_input_tokens,
    output_tokens: outputTokens,
  };
}

const openaiError = (message: string, type = 'invalid_request_error', code: string | null = null) =>
  ({ error: { message, type, param: null, code } });
const anthropicError = (message: string, type = 'invalid_request_error') =>
  ({ type: 'error', error: { type, message } });

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const str = (v: unknown, fallback: string) => (typeof v === 'string' ? v : fallback);
const sse = (type: string, data: unknown) => `event: ${type}\ndata: ${JSON.stringify(data)}\n\n`;

export async function startMockUpstream(opts: MockUpstreamOptions = {}): Promise<MockUpstream> {
  const host = opts.host ?? '127.0.0.1';
  const record = opts.record ?? true;

  const requests: RecordedRequest[] = [];
  const served: ServedCall[] = [];
  const wsConnections: WsConnectionRecord[] = [];
  const events = new EventEmitter<MockEvents>();
  let scripted: ScriptedResponse[] = [];
  let wsCloseNext: { code: number; reason: string } | null = null;
  let wsBreakNext = false;
  let wsRejectStatus: number | null = null;
  let wsRejectReply: { headers?: Record<string, string>; body: string | object } | undefined;
  let wsErrorNext: { status: number; error: object } | null = null;
  let refusal: RefusalRule | null = null;
  const revoked = new Set<string>();
  /**
   * Per conversation, the credential (account) that served its last call. A provider caches the
   * prompt prefix in one account, and a conversation's newest prefix only where its last turn ran.
   */
  const promptCaches = new Map<string, string>();
  /** per credential, HTTP requests open now, and the most at once */
  const inFlight = new Map<string, number>();
  const peakInFlight = new Map<string, number>();
  const oauth = createOAuthMock();
  let counter = 0; // shared by all ids so they are unique across connections
  let wsCounter = 0;
  const turnState = new WeakMap<IncomingMessage, number>(); // upgrade request -> connection number

  // Stream hold: a gate every stream awaits after its first event.
  let gate: { promise: Promise<void>; release: () => void } | null = null;
  const holdStreams = () => {
    let release!: () => void;
    const promise = new Promise<void>((r) => (release = r));
    const g = { promise, release };
    gate = g;
    return () => {
      g.release();
      if (gate === g) gate = null;
    };
  };

  const serve = (call: ServedCall) => {
    if (record) served.push(call);
  };

  /**
   * `usageFor`, with prompt caching like a provider's: a call naming a conversation reports
   * cached input only when the same account (credential) served that conversation's previous
   * call. Calls naming none keep the deterministic share.
   */
  function usageOf(headers: IncomingMessage['headers'], json: unknown, bytes: number, generate = true): Pick<ServedCall, 'usage' | 'conversation' | 'cacheHit'> {
    const usage = usageFor(bytes, generate);
    const conversation = conversationOf(headers, json);
    if (conversation === undefined) return { usage };
    const account = credentialOf(headers) ?? '';
    const cacheHit = promptCaches.get(conversation) === account;
    promptCaches.set(conversation, account);
    return { usage: cacheHit ? usage : { ...usage, cached_input_tokens: 0 }, conversation, cacheHit };
  }

  /** Sends events[0], waits for a hold if any, then the rest. Returns false if the peer went away. */
  async function emit<T>(events: T[], first: (e: T) => void, rest: (es: T[]) => void, alive: () => boolean) {
    first(events[0]);
    if (gate) await gate.promise;
    if (!alive()) return false;
    rest(events.slice(1));
    return true;
  }

  async function sendSse(res: ServerResponse, events: string[]): Promise<boolean> {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    // One write for the tail keeps the un-held hot path cheap.
    return emit(events, (s) => res.write(s), (rest) => res.end(rest.join('')), () => !res.destroyed);
  }

  function sendJson(res: ServerResponse, status: number, body: unknown, headers?: Record<string, string>) {
    const payload = typeof body === 'string' ? body : JSON.stringify(body);
    const out: Record<string, string | number> = { 'content-type': 'application/json' };
    for (const [k, v] of Object.entries(headers ?? {})) out[k.toLowerCase()] = v;
    out['content-length'] = Buffer.byteLength(payload);
    res.writeHead(status, out);
    res.end(payload);
  }

  // ---- OpenAI Responses (shared by HTTP SSE, HTTP JSON and WebSocket) ----

  function responseEvents(body: Json, usage: TokenUsageReport, generate: boolean): { id: string; events: Json[] } {
    const id = `resp_${++counter}`;
    const msgId = `msg_${counter}`;
    const base = {
      id, object: 'response', created_at: Math.floor(Date.now() / 1000), model: str(body.model, 'gpt-5'),
      error: null, incomplete_details: null, instructions: body.instructions ?? null,
      previous_response_id: body.previous_response_id ?? null, parallel_tool_calls: true,
      tool_choice: 'auto', tools: [], metadata: {},
    };
    const part = { type: 'output_text', text: TEXT, annotations: [], logprobs: [] };
    const item = { id: msgId, type: 'message', status: 'completed', role: 'assistant', content: [part] };
    const completed = { ...base, status: 'completed', output: generate ? [item] : [], usage: openaiResponsesUsage(usage) };
    const pos = { item_id: msgId, output_index: 0, content_index: 0 };
    const events: Json[] = [
      { type: 'response.created', response: { ...base, status: 'in_progress', output: [], usage: null } },
    ];
    if (generate) {
      events.push(
        { type: 'response.in_progress', response: { ...base, status: 'in_progress', output: [], usage: null } },
        { type: 'response.output_item.added', output_index: 0, item: { ...item, status: 'in_progress', content: [] } },
        { type: 'response.content_part.added', ...pos, part: { ...part, text: '' } },
        ...TEXT_DELTAS.map((delta) => ({ type: 'response.output_text.delta', ...pos, delta, logprobs: [] })),
        { type: 'response.output_text.done', ...pos, text: TEXT, logprobs: [] },
        { type: 'response.content_part.done', ...pos, part },
        { type: 'response.output_item.done', output_index: 0, item },
      );
    }
    events.push({ type: 'response.completed', response: completed });
    events.forEach((e, i) => (e.sequence_number = i));
    return { id, events };
  }

  async function handleResponses(req: IncomingMessage, res: ServerResponse, body: Json, bytes: number) {
    const cache = usageOf(req.headers, body, bytes);
    const { usage } = cache;
    const { events } = responseEvents(body, usage, true);
    const stream = body.stream === true;
    if (stream) {
      if (!(await sendSse(res, events.map((e) => sse(e.type as string, e))))) return;
    } else {
      sendJson(res, 200, (events.at(-1) as { response: Json }).response);
    }
    serve({ path: req.url ?? '', transport: 'http', stream, ...cache });
  }

  // ---- OpenAI Chat Completions ----

  async function handleChat(req: IncomingMessage, res: ServerResponse, body: Json, bytes: number) {
    const cache = usageOf(req.headers, body, bytes);
    const { usage } = cache;
    const id = `chatcmpl-${++counter}`;
    const base = { id, created: Math.floor(Date.now() / 1000), model: str(body.model, 'gpt-5'), system_fingerprint: 'fp_mock' };
    if (body.stream !== true) {
      sendJson(res, 200, {
        ...base, object: 'chat.completion',
        choices: [{ index: 0, message: { role: 'assistant', content: TEXT, refusal: null }, finish_reason: 'stop', logprobs: null }],
        usage: chatUsage(usage),
      });
      serve({ path: req.url ?? '', transport: 'http', stream: false, ...cache });
      return;
    }
    // Like the real API, usage is only streamed when explicitly requested.
    const includeUsage = isObject(body.stream_options) && body.stream_options.include_usage === true;
    const extra = includeUsage ? { usage: null } : {};
    const chunk = (delta: Json, finish: string | null) => ({
      ...base, object: 'chat.completion.chunk', choices: [{ index: 0, delta, finish_reason: finish, logprobs: null }], ...extra,
    });
    const chunks: unknown[] = [
      chunk({ role: 'assistant', content: '', refusal: null }, null),
      ...TEXT_DELTAS.map((t) => chunk({ content: t }, null)),
      chunk({}, 'stop'),
    ];
    if (includeUsage) chunks.push({ ...base, object: 'chat.completion.chunk', choices: [], usage: chatUsage(usage) });
    const lines = chunks.map((c) => `data: ${JSON.stringify(c)}\n\n`);
    lines.push('data: [DONE]\n\n');
    if (!(await sendSse(res, lines))) return;
    if (includeUsage) serve({ path: req.url ?? '', transport: 'http', stream: true, ...cache });
  }

  // ---- Anthropic Messages ----

  async function handleMessages(req: IncomingMessage, res: ServerResponse, body: Json, bytes: number) {
    const cache = usageOf(req.headers, body, bytes);
    const { usage } = cache;
    const id = `msg_${++counter}`;
    const model = str(body.model, 'claude-sonnet-4-5');
    const stream = body.stream === true;
    if (!stream) {
      sendJson(res, 200, {
        id, type: 'message', role: 'assistant', model, content: [{ type: 'text', text: TEXT }],
        stop_reason: 'end_turn', stop_sequence: null, usage: anthropicUsage(usage, usage.output_tokens),
      });
    } else {
      const events: [string, unknown][] = [
        ['message_start', {
          type: 'message_start',
          message: { id, type: 'message', role: 'assistant', model, content: [], stop_reason: null, stop_sequence: null, usage: anthropicUsage(usage, 1) },
        }],
        ['content_block_start', { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } }],
        ['ping', { type: 'ping' }],
        ...TEXT_DELTAS.map((text): [string, unknown] => ['content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text } }]),
        ['content_block_stop', { type: 'content_block_stop', index: 0 }],
        ['message_delta', { type: 'message_delta', delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: usage.output_tokens } }],
        ['message_stop', { type: 'message_stop' }],
      ];
      if (!(await sendSse(res, events.map(([t, d]) => sse(t, d))))) return;
    }
    serve({ path: req.url ?? '', transport: 'http', stream, ...cache });
  }

  // ---- HTTP dispatch ----

  type Route = { suffix: string; method: string; anthropic: boolean; handler?: typeof handleResponses };
  // Order matters: '/messages/count_tokens' must win over '/messages'.
  const routes: Route[] = [
    { suffix: '/responses', method: 'POST', anthropic: false, handler: handleResponses },
    { suffix: '/chat/completions', method: 'POST', anthropic: false, handler: handleChat },
    { suffix: '/messages/count_tokens', method: 'POST', anthropic: true },
    { suffix: '/messages', method: 'POST', anthropic: true, handler: handleMessages },
    { suffix: '/models', method: 'GET', anthropic: false },
  ];

  function onRequest(req: IncomingMessage, res: ServerResponse) {
    const rec: RecordedRequest = { method: req.method ?? 'GET', path: req.url ?? '', headers: req.headers, body: '', json: undefined };
    if (record) requests.push(rec); // pushed now so the list is in arrival order
    const credential = credentialOf(req.headers) ?? '';
    const open = (inFlight.get(credential) ?? 0) + 1;
    inFlight.set(credential, open);
    peakInFlight.set(credential, Math.max(open, peakInFlight.get(credential) ?? 0));
    res.once('close', () => {
      inFlight.set(credential, inFlight.get(credential)! - 1);
      if (!res.writableFinished) events.emit('abandoned', rec);
    });
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
      rec.body = raw.toString('utf8');
      if (raw.length > 0) {
        try { rec.json = JSON.parse(rec.body); } catch { /* recorded as undefined */ }
      }
      dispatch(req, res, rec, raw.length).catch((err: unknown) => {
        if (!res.headersSent) sendJson(res, 500, openaiError(String(err), 'server_error'));
        else res.destroy();
      });
    });
    req.on('error', () => res.destroy());
  }

  /** The credential a request carries: a Bearer token or an x-api-key. */
  function credentialOf(headers: IncomingMessage['headers']): string | undefined {
    const bearer = /^Bearer\s+(.+)$/i.exec(String(headers.authorization ?? ''))?.[1]?.trim();
    const apiKey = headers['x-api-key'];
    return bearer || (typeof apiKey === 'string' && apiKey ? apiKey : undefined);
  }

  /** Why the credential is refused (OpenAI's wording), or null. */
  function credentialProblem(headers: IncomingMessage['headers']): string | null {
    const credential = credentialOf(headers);
    if (!credential) return 'You didn\'t provide an API key.';
    // OpenAI echoes the refused key masked: first 6 + stars + last 4
    if (revoked.has(credential)) return `Incorrect API key provided: ${credential.slice(0, 6)}${'*'.repeat(20)}${credential.slice(-4)}.`;
    return null;
  }

  function refusalFor(headers: IncomingMessage['headers'], json: unknown): RefusalRule | null {
    if (!refusal) return null;
    const { header, model } = refusal;
    if (header && (headers[header.name] === undefined || (header.value !== undefined && headers[header.name] !== header.value))) return null;
    if (model !== undefined && (!isObject(json) || json.model !== model)) return null;
    return refusal;
  }

  const CODEX_PREFIX = '/backend-api/codex/';

  async function dispatch(req: IncomingMessage, res: ServerResponse, rec: RecordedRequest, bytes: number) {
    const pathname = rec.path.split('?', 1)[0];
    if (pathname === '/oauth/token' && rec.method === 'POST') {
      const answer = await oauth.handleToken(rec.json, () => !res.destroyed);
      return res.destroyed ? undefined : sendJson(res, answer.status, answer.body);
    }
    const next = scripted.shift();
    if (next) return sendJson(res, next.status, next.body, next.headers);

    if (pathname.startsWith(CODEX_PREFIX)) {
      // the ChatGPT backend: a login's access token, and the account's quota on every answer
      const problem = oauth.accessProblem(req.headers);
      if (problem) return sendJson(res, 401, openaiError(problem, 'invalid_request_error', 'invalid_token'));
      for (const [name, value] of Object.entries(oauth.quotaHeaders(req.headers))) res.setHeader(name, value);
    }
    const route = routes.find((r) => pathname.endsWith(r.suffix) && r.method === rec.method);
    const problem = credentialProblem(req.headers);
    // every path checks a revoked key; the model list (the gateway's probe) checks any credential
    if (problem && (route?.suffix === '/models' || credentialOf(req.headers) !== undefined)) {
      return route?.anthropic
        ? sendJson(res, 401, anthropicError(problem, 'authentication_error'))
        : sendJson(res, 401, openaiError(problem, 'invalid_request_error', 'invalid_api_key'));
    }
    const refused = refusalFor(req.headers, rec.json);
    if (refused) return sendJson(res, refused.status, openaiError(refused.message ?? `Refused by mock rule (${refused.code}).`, 'invalid_request_error', refused.code));
    if (!route) return sendJson(res, 404, openaiError(`Unknown path: ${rec.method} ${pathname}`, 'not_found_error', 'unknown_url'));

    if (route.suffix === '/models') {
      return sendJson(res, 200, { object: 'list', data: MODELS.map((id) => ({ id, object: 'model', created: 0, owned_by: 'mock' })) });
    }
    if (!isObject(rec.json)) {
      const msg = 'Malformed JSON body';
      return sendJson(res, 400, route.anthropic ? anthropicError(msg) : openaiError(msg));
    }
    if (route.suffix === '/messages/count_tokens') {
      return sendJson(res, 200, { input_tokens: usageFor(bytes).input_tokens });
    }
    await route.handler!(req, res, rec.json, bytes);
  }

  // ---- WebSocket (OpenAI Responses over ws) ----

  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: true });
  wss.on('headers', (headers, req) => {
    headers.push(`x-codex-turn-state: mock-turn-${turnState.get(req)}`, 'x-models-etag: mock-etag', 'openai-model: gpt-5');
    if (req.url?.startsWith(CODEX_PREFIX)) headers.push(...Object.entries(oauth.quotaHeaders(req.headers)).map(([name, value]) => `${name}: ${value}`));
  });

  function onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer) {
    const path = req.url ?? '';
    const refuse = (status: number, message: string | object, headers: Record<string, string> = {}) => {
      const body = typeof message === 'string' ? JSON.stringify(openaiError(message)) : JSON.stringify(message);
      const extra = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join('');
      socket.once('finish', () => socket.destroy());
      socket.end(
        `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nContent-Type: application/json\r\n${extra}` +
          `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
    };
    const reject = (status: number, message: string | object, headers?: Record<string, string>) => {
      if (record) wsConnections.push({ path, headers: req.headers, frames: [], binaryFrames: [], closed: true, rejectedStatus: status });
      refuse(status, message, headers);
    };
    if (!path.split('?', 1)[0].endsWith('/responses')) return refuse(404, `Unknown websocket path: ${path}`);
    const problem = credentialProblem(req.headers);
    if (problem && credentialOf(req.headers) !== undefined) return reject(401, openaiError(problem, 'invalid_request_error', 'invalid_api_key'));
    const loginProblem = path.startsWith(CODEX_PREFIX) ? oauth.accessProblem(req.headers) : null;
    if (loginProblem) return reject(401, openaiError(loginProblem, 'invalid_request_error', 'invalid_token'));
    const refused = refusalFor(req.headers, undefined);
    if (refused) return reject(refused.status, openaiError(refused.message ?? `Refused by mock rule (${refused.code}).`, 'invalid_request_error', refused.code));
    if (wsRejectStatus !== null) {
      return reject(wsRejectStatus, wsRejectReply?.body ?? 'WebSocket upgrade rejected by mock', wsRejectReply?.headers);
    }
    turnState.set(req, ++wsCounter);
    wss.handleUpgrade(req, socket, head, (ws) => onWsConnection(ws, req));
  }

  function onWsConnection(ws: WebSocket, req: IncomingMessage) {
    const conn: WsConnectionRecord = { path: req.url ?? '', headers: req.headers, frames: [], binaryFrames: [], closed: false };
    if (record) wsConnections.push(conn);
    const ownIds = new Set<string>(); // previous_response_id is only valid on the connection that created it
    const send = (e: unknown) => {
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(e));
    };
    const sendError = (code: string, message: string, param: string | null = null) =>
      send({ type: 'error', status: 400, error: { type: 'invalid_request_error', code, message, param } });

    ws.on('close', (code) => {
      conn.closed = true;
      conn.closeCode = code;
    });
    ws.on('message', (data: RawData, isBinary: boolean) => {
      if (isBinary) {
        if (record) conn.binaryFrames.push(Buffer.from(data as Buffer));
        if (ws.readyState === WebSocket.OPEN) ws.send(data, { binary: true });
        return;
      }
      const text = data.toString();
      let frame: unknown;
      try {
        frame = JSON.parse(text);
      } catch {
        if (record) conn.frames.push(text);
        return sendError('invalid_json', 'Frame is not valid JSON.');
      }
      if (record) conn.frames.push(frame);
      if (!isObject(frame) || frame.type !== 'response.create') {
        const type = isObject(frame) ? String(frame.type) : typeof frame;
        return sendError('unknown_event_type', `Unsupported event type '${type}'.`, 'type');
      }
      if (wsCloseNext) {
        const { code, reason } = wsCloseNext;
        wsCloseNext = null;
        return ws.close(code, reason);
      }
      if (wsErrorNext) {
        const event = wsErrorNext;
        wsErrorNext = null;
        return send({ type: 'error', ...event });
      }
      if (wsBreakNext) {
        wsBreakNext = false;
        return ws.send(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), { binary: false }); // ws does not check what it sends
      }
      // Codex sends the Responses params at top level; accept a nested `response` too.
      const params = isObject(frame.response) ? frame.response : frame;
      const prev = params.previous_response_id;
      if (typeof prev === 'string' && !ownIds.has(prev)) {
        return sendError('previous_response_not_found', `Previous response with id '${prev}' not found.`, 'previous_response_id');
      }
      const generate = params.generate !== false;
      const cache = usageOf(req.headers, params, Buffer.byteLength(text), generate);
      const { id, events } = responseEvents(params, cache.usage, generate);
      ownIds.add(id);
      const alive = () => ws.readyState === WebSocket.OPEN;
      void emit(events, send, (rest) => rest.forEach(send), alive).then((ok) => {
        if (ok) serve({ path: conn.path, transport: 'ws', stream: true, ...cache });
      });
    });
  }

  // ---- lifecycle ----

  const server = createServer(onRequest);
  server.keepAliveTimeout = 65_000; // longer than typical client pools so benchmarks don't see resets
  server.on('upgrade', onUpgrade);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
    events,
    requests,
    served,
    wsConnections,
    enqueue: (...r) => void scripted.push(...r),
    holdStreams,
    peakInFlight,
    closeWsNext: (code, reason) => void (wsCloseNext = { code, reason }),
    breakWsNext: () => void (wsBreakNext = true),
    rejectWsUpgrades: (status, reply) => {
      wsRejectStatus = status;
      wsRejectReply = reply;
    },
    errorWsNext: (event) => void (wsErrorNext = event),
    refuseMatching: (rule) => void (refusal = rule),
    revokeCredential: (secret) => void revoked.add(secret),
    unsentWsBytes: () => [...wss.clients].reduce((sum, ws) => sum + ws.bufferedAmount, 0),
    oauth,
    reset() {
      oauth.reset();
      // Truncate in place: callers may hold references to these arrays.
      requests.length = 0;
      served.length = 0;
      wsConnections.length = 0;
      promptCaches.clear();
      peakInFlight.clear();
      scripted = [];
      wsCloseNext = null;
      wsBreakNext = false;
      wsRejectStatus = null;
      wsRejectReply = undefined;
      wsErrorNext = null;
      refusal = null;
      revoked.clear();
      gate?.release(); // never leave a stream hanging
      gate = null;
    },
    async close() {
      gate?.release();
      gate = null;
      for (const ws of wss.clients) ws.terminate();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      wss.close();
    },
  };
}

// Standalone: `tsx src/mock/upstream.ts` (e.g. as a benchmark backend). Recording is off: nobody reads it.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const mock = await startMockUpstream({ port: Number(process.env.MOCK_PORT ?? 9090), host: process.env.MOCK_HOST, record: false });
  console.log(`mock upstream listening on ${mock.url}`);
  const shutdown = () => void mock.close().then(() => process.exit(0));
  process.on('SIGINT', shutdown);
  process.on('SIGTERM', shutdown);
}
