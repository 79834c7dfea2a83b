import type { Span } from '@opentelemetry/api';
import type { ErrorCode } from '../errors.js';
import type { Principal } from '../auth/authenticate.js';
import type { ProviderName } from '../config/schema.js';
import type { TokenUsage } from '../usage/tokens.js';
import type { TopLevel } from './json-depth.js';

/** What a request learned on its way, for the access log line (and its server span). */
export interface RequestFacts {
  keyId?: string;
  provider?: ProviderName;
  accountId?: string;
  /** the model a model call asked for */
  model?: string;
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
    /** the request's server span; null unless tracing is on (then no span work is done at all) */
    span: Span | null;
  }
}
