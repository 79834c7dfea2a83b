import type { Dispatcher, ModelCall } from './call.js';

/** Which dispatcher serves a call: the one choice between direct, session affinity and the bridge. */
export interface Dispatchers {
  direct: Dispatcher;
  /** sessions on a provider without WebSocket: direct, bound to the session's account */
  affinity: Dispatcher;
  /** sessions on a WebSocket provider: the bridge decides between serving here and forwarding */
  bridge: Dispatcher;
}

export function chooseDispatcher(call: ModelCall, dispatchers: Dispatchers): Dispatcher {
  if (!call.session) return dispatchers.direct;
  return call.pool.websocket ? dispatchers.bridge : dispatchers.affinity;
}
