import { createHmac, hash, randomUUID, timingSafeEqual } from 'node:crypto';
import type { AuthSource } from '../auth/authenticate.js';
import { GatewayError } from '../errors.js';
import type { TraceCarrier } from '../telemetry/tracing.js';

export const CONTEXT_HEADER = 'x-tollgate-context';
const VERSION = 1;

/**
 * The signed re-auth context of an owner-forward hop: it stands in for the caller's raw
 * credential, which never travels between replicas.
 */
export interface ReauthContext {
  v: number;
  keyId: string;
  authSource: AuthSource;
  originInstance: string;
  targetInstance: string;
  sessionKey: string;
  /**
   * The public route the caller used (`/v1/responses`, `/backend-api/codex/responses`): it picks
   * the provider and upstream path on the owner. Absent in contexts of replicas that predate it,
   * which forwarded `/v1/responses` only.
   */
  route?: string;
  /** seconds since epoch */
  issuedAt: number;
  expiresAt: number;
  nonce: string;
  bodySha256: string;
  /**
   * The W3C trace context of the origin's forward span, when tracing is on there: signed with the
   * rest, so the owner continues the caller's trace and nobody else can graft spans onto it.
   */
  traceparent?: string;
  tracestate?: string;
}

export function bodyDigest(body: Buffer): string {
  // one-shot: no Hash object per hop (signed on the origin, checked on the owner)
  return hash('sha256', body, 'hex');
}

function hmac(secret: string, payload: string): Buffer {
  return createHmac('sha256', secret).update(payload).digest();
}

export function signContext(
  fields: Omit<ReauthContext, 'v' | 'issuedAt' | 'expiresAt' | 'nonce' | 'bodySha256' | 'traceparent' | 'tracestate'> & {
    body: Buffer;
    ttlSec: number;
    trace?: TraceCarrier;
  },
  secret: string,
  now = Date.now(),
): string {
  const issuedAt = Math.floor(now / 1000);
  const context: ReauthContext = {
    v: VERSION,
    keyId: fields.keyId,
    authSource: fields.authSource,
    originInstance: fields.originInstance,
    targetInstance: fields.targetInstance,
    sessionKey: fields.sessionKey,
    ...(fields.route !== undefined && { route: fields.route }),
    issuedAt,
    expiresAt: issuedAt + fields.ttlSec,
    // 122 random bits from Node's batched entropy: randomBytes would cost a getrandom call per hop
    nonce: randomUUID(),
    bodySha256: bodyDigest(fields.body),
    traceparent: fields.trace?.traceparent,
    tracestate: fields.trace?.tracestate,
  };
  const payload = Buffer.from(JSON.stringify(context)).toString('base64url');
  return `${payload}.${hmac(secret, payload).toString('base64url')}`;
}

const malformed = (why: string) => new GatewayError('context_malformed', `Internal context header is malformed: ${why}.`);

/**
 * Checks the header alone: signature, version, fields, target and expiry, so it can run before
 * the body is read. The body digest is `verifyContextBody`'s, the nonce's single use is the
 * caller's (it needs the store). Throws a GatewayError with a specific code on any failure.
 */
export function verifyContextHeader(header: string | undefined, secret: string, instanceId: string, now = Date.now()): ReauthContext {
  if (!header) throw new GatewayError('context_bad_signature', `Missing ${CONTEXT_HEADER} header.`);
  const [payload, signature, extra] = header.split('.');
  if (!payload || !signature || extra !== undefined) throw malformed('expected <payload>.<signature>');
  const expected = hmac(secret, payload);
  const presented = Buffer.from(signature, 'base64url');
  if (presented.length !== expected.length || !timingSafeEqual(presented, expected)) {
    throw new GatewayError('context_bad_signature', 'Internal context signature does not verify.');
  }
  let context: ReauthContext;
  try {
    context = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
  } catch {
    throw malformed('payload is not JSON');
  }
  if (context.v !== VERSION) throw malformed(`unsupported version ${String(context.v)}`);
  for (const field of ['keyId', 'originInstance', 'targetInstance', 'sessionKey', 'nonce', 'bodySha256'] as const) {
    if (typeof context[field] !== 'string' || !context[field]) throw malformed(`${field} missing`);
  }
  if (context.route !== undefined && (typeof context.route !== 'string' || !context.route.startsWith('/'))) throw malformed('route invalid');
  if (context.authSource !== 'bearer' && context.authSource !== 'x-api-key') throw malformed('authSource invalid');
  for (const field of ['traceparent', 'tracestate'] as const) {
    if (context[field] !== undefined && typeof context[field] !== 'string') throw malformed(`${field} is not a string`);
  }
  if (!Number.isFinite(context.issuedAt) || !Number.isFinite(context.expiresAt)) throw malformed('times missing');
  if (context.targetInstance !== instanceId) {
    throw new GatewayError('context_wrong_target', `Internal context is for ${context.targetInstance}, not this replica.`);
  }
  if (context.expiresAt * 1000 <= now) throw new GatewayError('context_expired', 'Internal context has expired.');
  return context;
}

/** The body, once read, must be the one the verified context was signed for. */
export function verifyContextBody(context: ReauthContext, body: Buffer): void {
  if (context.bodySha256 !== bodyDigest(body)) {
    throw new GatewayError('context_body_mismatch', 'Request body does not match the internal context digest.');
  }
}
