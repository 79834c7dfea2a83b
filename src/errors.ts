/**
 * Every error the gateway makes itself, in one table: a stable code, an HTTP status and the
 * error types of both provider shapes. Upstream errors are not made here: they pass through.
 */
export type ErrorShape = 'openai' | 'anthropic';

interface ErrorKind {
  status: number;
  openaiType: string;
  anthropicType: string;
}

const KINDS = {
  invalid_request: { status: 400, openaiType: 'invalid_request_error', anthropicType: 'invalid_request_error' },
  invalid_json: { status: 400, openaiType: 'invalid_request_error', anthropicType: 'invalid_request_error' },
  invalid_api_key: { status: 401, openaiType: 'invalid_request_error', anthropicType: 'authentication_error' },
  invalid_admin_token: { status: 401, openaiType: 'invalid_request_error', anthropicType: 'authentication_error' },
  context_malformed: { status: 400, openaiType: 'invalid_request_error', anthropicType: 'invalid_request_error' },
  context_bad_signature: { status: 401, openaiType: 'invalid_request_error', anthropicType: 'authentication_error' },
  context_expired: { status: 401, openaiType: 'invalid_request_error', anthropicType: 'authentication_error' },
  context_replayed: { status: 401, openaiType: 'invalid_request_error', anthropicType: 'authentication_error' },
  context_wrong_target: { status: 400, openaiType: 'invalid_request_error', anthropicType: 'invalid_request_error' },
  context_body_mismatch: { status: 400, openaiType: 'invalid_request_error', anthropicType: 'invalid_request_error' },
  csrf_token_invalid: { status: 403, openaiType: 'invalid_request_error', anthropicType: 'permission_error' },
  model_not_allowed: { status: 403, openaiType: 'invalid_request_error', anthropicType: 'permission_error' },
  not_found: { status: 404, openaiType: 'invalid_request_error', anthropicType: 'not_found_error' },
  method_not_allowed: { status: 405, openaiType: 'invalid_request_error', anthropicType: 'invalid_request_error' },
  request_timeout: { status: 408, openaiType: 'invalid_request_error', anthropicType: 'invalid_request_error' },
  request_too_large: { status: 413, openaiType: 'invalid_request_error', anthropicType: 'request_too_large' },
  unsupported_media_type: { status: 415, openaiType: 'invalid_request_error', anthropicType: 'invalid_request_error' },
  unsupported_content_encoding: { status: 415, openaiType: 'invalid_request_error', anthropicType: 'invalid_request_error' },
  websocket_not_supported: { status: 426, openaiType: 'invalid_request_error', anthropicType: 'invalid_request_error' },
  rate_limit_exceeded: { status: 429, openaiType: 'rate_limit_error', anthropicType: 'rate_limit_error' },
  usage_limit_reached: { status: 429, openaiType: 'rate_limit_error', anthropicType: 'rate_limit_error' },
  internal_error: { status: 500, openaiType: 'server_error', anthropicType: 'api_error' },
  encryption_key_missing: { status: 500, openaiType: 'server_error', anthropicType: 'api_error' },
  upstream_unreachable: { status: 502, openaiType: 'server_error', anthropicType: 'api_error' },
  no_accounts: { status: 503, openaiType: 'server_error', anthropicType: 'overloaded_error' },
  store_unavailable: { status: 503, openaiType: 'server_error', anthropicType: 'api_error' },
  owner_unavailable: { status: 503, openaiType: 'server_error', anthropicType: 'api_error' },
  login_refresh_failed: { status: 503, openaiType: 'server_error', anthropicType: 'api_error' },
  forward_loop: { status: 503, openaiType: 'server_error', anthropicType: 'api_error' },
  shutting_down: { status: 503, openaiType: 'server_error', anthropicType: 'overloaded_error' },
  upstream_timeout: { status: 504, openaiType: 'server_error', anthropicType: 'api_error' },
} satisfies Record<string, ErrorKind>;

export type ErrorCode = keyof typeof KINDS;

export interface GatewayErrorOptions {
  /** seconds; sent as Retry-After (always set on 429 and 503) */
  retryAfter?: number;
  /** a limit's reset time, ms since epoch */
  resetsAt?: number;
  param?: string;
  cause?: unknown;
  /** overrides the kind's status, e.g. 400 for a malformed internal context */
  status?: number;
}

export class GatewayError extends Error {
  override name = 'GatewayError';
  readonly status: number;
  readonly retryAfter?: number;
  readonly resetsAt?: number;
  readonly param?: string;

  constructor(readonly code: ErrorCode, message: string, options: GatewayErrorOptions = {}) {
    super(message, { cause: options.cause });
    this.status = options.status ?? KINDS[code].status;
    this.resetsAt = options.resetsAt;
    this.param = options.param;
    this.retryAfter = options.retryAfter ?? (this.status === 429 || this.status === 503 ? 1 : undefined);
  }
}

export interface RenderedError {
  status: number;
  headers: Record<string, string>;
  body: Record<string, unknown>;
}

/** The one place an error becomes a response body, in the shape of the route's provider. */
export function renderError(err: GatewayError, shape: ErrorShape): RenderedError {
  const kind = KINDS[err.code];
  const headers: Record<string, string> = {};
  if (err.retryAfter !== undefined) headers['retry-after'] = String(Math.max(1, Math.ceil(err.retryAfter)));
  const resets = err.resetsAt !== undefined ? { resets_at: new Date(err.resetsAt).toISOString() } : {};
  const body =
    shape === 'anthropic'
      ? { type: 'error', error: { type: kind.anthropicType, message: err.message, code: err.code, ...resets } }
      : { error: { message: err.message, type: kind.openaiType, code: err.code, param: err.param ?? null, ...resets } };
  return { status: err.status, headers, body };
}

/** Anthropic routes answer in Anthropic's shape; everything else in OpenAI's. */
export function shapeForPath(url: string): ErrorShape {
  return url.startsWith('/v1/messages') ? 'anthropic' : 'openai';
}

/** undici failures (by `err.code`) as gateway errors: timeouts 504, the rest 502. */
export function upstreamFailure(err: unknown): GatewayError {
  const code = (err as { code?: string })?.code ?? '';
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT') {
    return new GatewayError('upstream_timeout', 'The upstream did not answer in time.', { cause: err });
  }
  return new GatewayError('upstream_unreachable', `The upstream could not be reached (${code || 'connection failed'}).`, {
    cause: err,
  });
}
