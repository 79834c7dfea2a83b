import { EventEmitter } from 'node:events';
import type { FastifyReply } from 'fastify';

/** Emits 'abort' to cancel a call in flight (undici takes an EventEmitter as well as an AbortSignal). */
export type CancelSignal = EventEmitter & { readonly aborted: boolean };

/** Set and emitted ('abort') when the client went away before its response finished. */
class ClientGone extends EventEmitter {
  aborted = false;
}

/**
 * A signal that cancels the upstream call when the client goes away first. A plain emitter:
 * undici accepts one, and it is much cheaper per request than an AbortController.
 */
export function clientGoneSignal(reply: FastifyReply): CancelSignal {
  const signal = new ClientGone();
  reply.raw.once('close', () => {
    if (reply.raw.writableFinished) return;
    signal.aborted = true;
    signal.emit('abort');
  });
  return signal;
}
