/** Mixed caller traffic for the fault tests: seeded, every kind of call a user makes, every answer checked. */

/** mulberry32: a seeded PRNG, so a failing run can be replayed with its seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** The seed of a fault test: CHAOS_SEED to replay one, else a fresh one, printed either way. */
export function chaosSeed(name: string): number {
  const seed = Number(process.env.CHAOS_SEED ?? Math.floor(Math.random() * 2 ** 31));
  console.log(`${name} seed ${seed} (replay with CHAOS_SEED=${seed})`);
  return seed;
}

export const KINDS = ['responses', 'chat', 'messages', 'bridged'] as const;
export type Kind = (typeof KINDS)[number];

export interface Call {
  kind: Kind;
  stream: boolean;
  text: string;
  /** session headers of a bridged turn (session-id, x-codex-turn-state) */
  session?: Record<string, string>;
  /** a bridged turn continuing this response */
  previousResponseId?: string;
}

export interface Outcome {
  kind: Kind;
  stream: boolean;
  status: number;
  /** the provider-shaped error code of a refusal */
  code?: string;
  retryAfter?: string | null;
  /** a 200 whose body ended before its final event (or did not parse) */
  incomplete?: boolean;
}

/** What a caller sends for each kind: path, body, extra headers. */
function requestFor({ kind, stream, text, session, previousResponseId }: Call) {
  switch (kind) {
    case 'responses':
      return { path: '/v1/responses', body: { model: 'gpt-5', input: text, stream }, headers: {} };
    case 'bridged':
      // a session id makes it a bridged turn: served by the session's owner over its upstream WebSocket
      return {
        path: '/v1/responses',
        body: { model: 'gpt-5', input: text, stream, store: false, ...(previousResponseId && { previous_response_id: previousResponseId }) },
        headers: session ?? {},
      };
    case 'chat':
      return {
        path: '/v1/chat/completions',
        body: { model: 'gpt-5', messages: [{ role: 'user', content: text }], stream, ...(stream && { stream_options: { include_usage: true } }) },
        headers: {},
      };
    case 'messages':
      return { path: '/v1/messages', body: { model: 'claude-sonnet-4-6', max_tokens: 16, messages: [{ role: 'user', content: text }], stream }, headers: {} };
  }
}

/** The event that ends a complete stream of each kind. */
const FINAL_EVENT: Record<Kind, string> = {
  responses: 'event: response.completed',
  bridged: 'event: response.completed',
  chat: 'data: [DONE]',
  messages: 'event: message_stop',
};

/** The id of a Responses answer, streamed or not (for `previous_response_id`). */
function responseIdOf(text: string, stream: boolean): string | undefined {
  if (!stream) return (JSON.parse(text) as { id?: string }).id;
  const completed = text.split('\n\n').find((event) => event.startsWith('event: response.completed'));
  const data = completed?.split('\n').find((line) => line.startsWith('data: '));
  return data ? (JSON.parse(data.slice(6)) as { response: { id: string } }).response.id : undefined;
}

/**
 * Sends one call to a replica and reads its whole answer. A call not answered completely within
 * `timeoutMs` fails, naming the call: no caller may hang.
 */
export async function send(
  baseUrl: string,
  key: string,
  call: Call,
  timeoutMs = 20_000,
): Promise<{ outcome: Outcome; turnState: string | null; responseId?: string }> {
  const { path, body, headers } = requestFor(call);
  const described = `${call.kind}${call.stream ? ' streamed' : ''} call to ${baseUrl}${path} (${JSON.stringify(headers)})`;
  let res: Response;
  let text: string;
  try {
    res = await fetch(baseUrl + path, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': key, ...headers },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
    text = await res.text();
  } catch (err) {
    throw new Error(`${described} got no complete answer: ${String(err)}`, { cause: err });
  }
  const outcome: Outcome = { kind: call.kind, stream: call.stream, status: res.status };
  let responseId: string | undefined;
  if (res.status === 200) {
    try {
      if (call.stream && !text.includes(FINAL_EVENT[call.kind])) outcome.incomplete = true;
      else if (call.kind === 'responses' || call.kind === 'bridged') responseId = responseIdOf(text, call.stream);
      else JSON.parse(call.stream ? '{}' : text);
    } catch {
      outcome.incomplete = true;
    }
  } else {
    outcome.retryAfter = res.headers.get('retry-after');
    try {
      // OpenAI errors carry a code, Anthropic ones only a type
      const { error } = JSON.parse(text) as { error?: { code?: string; type?: string } };
      outcome.code = error?.code ?? error?.type ?? 'not provider-shaped';
    } catch {
      outcome.code = `not JSON: ${text.slice(0, 200)}`;
    }
  }
  return { outcome, turnState: res.headers.get('x-codex-turn-state'), responseId };
}
