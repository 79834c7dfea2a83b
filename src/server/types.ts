import type { ErrorCode } from '../errors.js';
import type { Principal } from '../auth/authenticate.js';
import type { TokenUsage } from '../usage/tokens.js';
import type { TopLevel } from './json-depth.js';

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
  /** what is forwarded upstream, unchanged */
  raw: Buffer;
  /** what the gateway routes on (model, stream), read without building a large document */
  top: TopLevel;
  /**
   * The JSON document, or undefined when the body is not JSON. A large body is parsed only when
   * this is called (a bridged turn, a streamed Chat Completions call); most never are.
   */
  json(): unknown;
}

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | null;
    facts: RequestFacts;
  }
}
