import type { FastifyRequest } from 'fastify';
import type { Gateway } from '../gateway.js';
import { authenticate } from './authenticate.js';

/** onRequest hook of every route a proxy key opens; sets `request.principal`. */
export function proxyKeyAuth(gateway: Gateway) {
  return async (request: FastifyRequest): Promise<void> => {
    request.principal = await authenticate(request.headers, gateway.keys, (source, reason) =>
      gateway.metrics.authFailures.inc({ source, reason }),
    );
    request.facts.keyId = request.principal.key.id;
  };
}
