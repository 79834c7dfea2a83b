import type { FastifyRequest } from 'fastify';
import { authenticate, type AuthSource } from './authenticate.js';
import type { KeyDirectory, KeyProblem } from './keys.js';

/** onRequest hook of every route a proxy key opens; sets `request.principal`. */
export function proxyKeyAuth(keys: KeyDirectory, onFailure: (source: AuthSource | 'none', problem: KeyProblem) => void) {
  return async (request: FastifyRequest): Promise<void> => {
    request.principal = await authenticate(request.headers, keys, onFailure);
    request.facts.keyId = request.principal.key.id;
  };
}
