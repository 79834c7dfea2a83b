import { TURN_STATE_HEADER } from '../http/session-key.js';
import type { Store } from '../store/types.js';
import { affinityAccount } from '../upstream/affinity.js';
import type { Dispatcher, ModelCall } from './call.js';

/**
 * Sessions on a provider without WebSocket: the inner dispatcher, bound to the session's
 * account (upstream prompt caches), on whichever replica the turn arrives.
 */
export function withSessionAffinity(inner: Dispatcher, store: Store, leaseMs: number): Dispatcher {
  return {
    async dispatch(call: ModelCall) {
      if (!call.session) return inner.dispatch(call);
      const accountId = await affinityAccount(store, call.session.key, call.pool, leaseMs, call.scope);
      call.reply.header(TURN_STATE_HEADER, call.session.turnState);
      return inner.dispatch({ ...call, accountId });
    },
  };
}
