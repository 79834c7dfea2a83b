import type { FastifyReply, FastifyRequest } from 'fastify';
import type { SessionIdentity } from '../http/session-key.js';
import type { MeteredCall } from '../metering/metered-call.js';
import type { ParsedBody } from '../server/types.js';
import type { ProviderPool, Scope } from '../upstream/pool.js';
import type { ModelRoute } from '../upstream/routes.js';

/** One authenticated model call, as every dispatcher sees it. */
export interface ModelCall {
  request: FastifyRequest;
  reply: FastifyReply;
  route: ModelRoute;
  /** the pool of the route's first configured provider */
  pool: ProviderPool;
  body: ParsedBody;
  /** the session it belongs to (Responses calls that name one), or null */
  session: SessionIdentity | null;
  /** the call's usage metering; null for calls that do not count (count_tokens) */
  metered: MeteredCall | null;
  /** bind the upstream call to this account (session affinity) instead of choosing one */
  accountId?: string;
  /** the key's account pool and the call's prompt-cache affinity key: selection stays inside it */
  scope: Scope;
}

/**
 * Serves a model call and answers its client: straight to an upstream, on this replica's bridge
 * session, or over the peer hop to the session's owner. The route handler does not know which.
 */
export interface Dispatcher {
  dispatch(call: ModelCall): Promise<unknown>;
}
