import type { ErrorCode } from '../errors.js';
import type { Principal } from '../auth/authenticate.js';
import type { TokenUsage } from '../usage/tokens.js';

/** What a request learned on its way, for the access log line. */
export interface RequestFacts {
  keyId?: string;
  provider?: string;
  accountId?: string;
  tokens?: TokenUsage;
  /** the gateway error this request was answered with, if any */
  errorCode?: ErrorCode;
}

export interface ParsedBody {
  raw: Buffer;
  /** the parsed JSON document, or undefined when the body is not JSON */
  json: unknown;
}

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | null;
    facts: RequestFacts;
  }
}
