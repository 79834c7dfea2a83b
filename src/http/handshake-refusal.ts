import type { IncomingHttpHeaders } from 'node:http';
import type { FastifyReply } from 'fastify';
import { upstreamResponseHeaders } from './headers.js';
import type { SecretScrubber } from './scrubber.js';

/** What an upstream answered instead of upgrading a WebSocket. */
export interface RefusedHandshake {
  statusCode: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** An upstream's refusal of a WebSocket handshake, passed on like any upstream error. */
export function sendHandshakeRefusal(reply: FastifyReply, refusal: RefusedHandshake, scrubber: SecretScrubber): FastifyReply {
  return reply.code(refusal.statusCode).headers(scrubber.headers(upstreamResponseHeaders(refusal.headers))).send(scrubber.text(refusal.body));
}
