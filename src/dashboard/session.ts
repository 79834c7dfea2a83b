import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { GatewayError } from '../errors.js';

export const SESSION_COOKIE = 'tollgate_dashboard';
export const CSRF_HEADER = 'x-csrf-token';

/** A dashboard login as the page sees it: the CSRF token to send on mutations, and the expiry. */
export interface SessionInfo {
  csrf_token: string;
  expires_at: string;
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * TLS here or at a proxy in front (`X-Forwarded-Proto: https`). Trusting the header without
 * knowing the proxy is safe in this one use: a false claim only makes the cookie stricter.
 */
function overTls(request: FastifyRequest): boolean {
  const forwarded = request.headers['x-forwarded-proto'];
  const first = (Array.isArray(forwarded) ? forwarded[0] : forwarded)?.split(',')[0]?.trim().toLowerCase();
  return request.protocol === 'https' || first === 'https';
}

const mac = (key: Buffer, text: string): Buffer => createHmac('sha256', key).update(text).digest();

function equal(a: string, b: Buffer): boolean {
  const presented = Buffer.from(a, 'base64url');
  return presented.length === b.length && timingSafeEqual(presented, b);
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/**
 * Dashboard logins as signed, stateless cookies: `<expiresAt>.<nonce>.<mac>`, the MAC keyed by a
 * key derived from the admin token. Any replica checks one without a store round trip; rotating
 * the admin token ends every login. The price: logout clears the browser's cookie, but a copy
 * taken before stays valid until it expires (`dashboard.sessionTtlMs`, 8 hours by default).
 *
 * CSRF: the cookie is SameSite=Strict, and every mutation must also carry the session's CSRF
 * token (HMAC of its nonce) in `x-csrf-token`, which only the dashboard page learns (from the
 * login reply or `GET /dashboard/api/session`); a cross-site form can set neither.
 */
export class DashboardSessions {
  private readonly key: Buffer;

  constructor(adminToken: string, private readonly ttlMs: number) {
    this.key = mac(Buffer.from(adminToken), 'tollgate dashboard session v1');
  }

  /** Sets a fresh session cookie on the reply. */
  start(request: FastifyRequest, reply: FastifyReply, now = Date.now()): SessionInfo {
    const expiresAt = now + this.ttlMs;
    const nonce = randomBytes(18).toString('base64url');
    const body = `${expiresAt}.${nonce}`;
    const attributes = [`Max-Age=${Math.floor(this.ttlMs / 1000)}`, 'Path=/', 'HttpOnly', 'SameSite=Strict', ...(overTls(request) ? ['Secure'] : [])];
    reply.header('set-cookie', `${SESSION_COOKIE}=${body}.${mac(this.key, body).toString('base64url')}; ${attributes.join('; ')}`);
    return this.info(expiresAt, nonce);
  }

  /** Clears the cookie in the browser. */
  end(reply: FastifyReply): void {
    reply.header('set-cookie', `${SESSION_COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict`);
  }

  /** The request's valid session, or null (none, forged or expired). */
  current(request: FastifyRequest, now = Date.now()): SessionInfo | null {
    const [expires, nonce, signature, extra] = (cookieValue(request.headers.cookie, SESSION_COOKIE) ?? '').split('.');
    if (!expires || !nonce || !signature || extra !== undefined) return null;
    if (!equal(signature, mac(this.key, `${expires}.${nonce}`))) return null;
    const expiresAt = Number(expires);
    return expiresAt > now ? this.info(expiresAt, nonce) : null;
  }

  /**
   * Whether the request is admitted by its session: false without one; a mutation without the
   * session's CSRF token is refused outright.
   */
  admits(request: FastifyRequest): boolean {
    const session = this.current(request);
    if (!session) return false;
    if (SAFE_METHODS.has(request.method)) return true;
    const presented = request.headers[CSRF_HEADER];
    if (typeof presented === 'string' && equal(presented, Buffer.from(session.csrf_token, 'base64url'))) return true;
    throw new GatewayError('csrf_token_invalid', `Dashboard session: a change needs the session's CSRF token in "${CSRF_HEADER}".`);
  }

  private info(expiresAt: number, nonce: string): SessionInfo {
    return { csrf_token: mac(this.key, `csrf.${nonce}`).toString('base64url'), expires_at: new Date(expiresAt).toISOString() };
  }
}
