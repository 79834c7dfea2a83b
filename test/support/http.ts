import { request as httpRequest, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http';
import { createServer } from 'node:net';
import type { TestGateway } from './gateway.js';

/** A loopback port nothing listens on: bound once, then closed. */
export async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export const OPENAI_BODY = { model: 'gpt-5', input: 'Say hello' };
export const ANTHROPIC_BODY = { model: 'claude-sonnet-4-5', max_tokens: 64, messages: [{ role: 'user', content: 'hi' }] };

export interface Reply {
  status: number;
  headers: Headers;
  text: string;
  /** the parsed body, or undefined when it is not JSON */
  json: any;
}

/** fetch that reads the whole body; `body` objects are sent as JSON. */
export async function call(
  base: string,
  path: string,
  init: { method?: string; headers?: Record<string, string>; body?: unknown } = {},
): Promise<Reply> {
  const body = init.body === undefined || typeof init.body === 'string' ? init.body : JSON.stringify(init.body);
  const res = await fetch(base + path, {
    method: init.method ?? (body === undefined ? 'GET' : 'POST'),
    headers: { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...init.headers },
    body: body as string | undefined,
  });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, text, json };
}

/** GET /v1/usage of a key (by x-api-key), expecting 200. */
export async function usageOf(gw: TestGateway, secret: string): Promise<any> {
  const res = await call(gw.url, '/v1/usage', { headers: { 'x-api-key': secret } });
  if (res.status !== 200) throw new Error(`GET /v1/usage answered ${res.status}: ${res.text}`);
  return res.json;
}

/**
 * A request through node:http, which (unlike fetch/undici) lets a test send any header,
 * hop-by-hop ones included, and shows every response header as received.
 */
export function rawRequest(
  url: string,
  options: { method?: string; path: string; headers?: OutgoingHttpHeaders; body?: string | Buffer },
): Promise<{ status: number; headers: IncomingHttpHeaders; rawHeaderNames: string[]; text: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      url + options.path,
      { method: options.method ?? 'POST', headers: options.headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () =>
          resolve({
            status: res.statusCode!,
            headers: res.headers,
            rawHeaderNames: res.rawHeaders.filter((_, i) => i % 2 === 0).map((name) => name.toLowerCase()),
            text: Buffer.concat(chunks).toString('utf8'),
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

/** The value of one Prometheus sample in `GET /metrics` (internal listener), 0 when absent. */
export async function metricValue(gw: Pick<TestGateway, 'internalUrl'>, name: string, labels: Record<string, string>): Promise<number> {
  const text = await (await fetch(`${gw.internalUrl}/metrics`)).text();
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const found = Object.fromEntries([...(match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([k, v]) => found[k] === v)) return Number(match[3]);
  }
  return 0;
}

/** Reads an SSE body until `count` complete events arrived; fails after `timeoutMs`. */
export async function readEvents(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  state: { buffer: string },
  count: number,
  timeoutMs = 10_000,
): Promise<string[]> {
  const decoder = new TextDecoder();
  const deadline = Date.now() + timeoutMs;
  while (state.buffer.split('\n\n').length - 1 < count) {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no SSE event within ${timeoutMs} ms`)), Math.max(0, deadline - Date.now()));
    });
    try {
      const { value, done } = await Promise.race([reader.read(), timeout]);
      if (done) break;
      state.buffer += decoder.decode(value, { stream: true });
    } finally {
      clearTimeout(timer);
    }
  }
  const events = state.buffer.split('\n\n');
  state.buffer = events.pop() ?? '';
  return events;
}

/** The `type` of each SSE event (from its data line). */
export function eventTypes(events: string[]): string[] {
  return events.map((event) => {
    const data = event.split('\n').find((line) => line.startsWith('data: '));
    return data ? (JSON.parse(data.slice(6)) as { type: string }).type : '';
  });
}
