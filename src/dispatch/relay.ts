import type { FastifyReply, FastifyRequest } from 'fastify';
import { firstValue, upstreamResponseHeaders } from '../http/headers.js';
import type { SecretScrubber } from '../http/scrubber.js';
import type { UpstreamReply } from '../upstream/client.js';
import { createUsageMeter } from '../usage/meter.js';
import type { TokenUsage, WireFormat } from '../usage/tokens.js';

/** Error bodies are buffered (bounded) so secrets can be scrubbed before they pass on. */
const ERROR_BODY_LIMIT = 1024 * 1024;

export interface RelayOptions {
  /** the wire format to meter, or null for calls that do not count (count_tokens, models) */
  format: WireFormat | null;
  /** removes account secrets from headers and error bodies */
  scrubber: SecretScrubber;
  /** called once when the upstream body has ended or was cut off, with what the upstream reported */
  onDone: (usage: TokenUsage | null) => void;
}

/**
 * Sends an upstream answer to the client. Success bodies stream through unbuffered (the meter
 * reads the same chunks as they pass); error bodies pass through with status and wording
 * unchanged, scrubbed of our secrets. Headers are scrubbed on every response: they are small.
 */
export async function relayUpstreamReply(
  request: FastifyRequest,
  reply: FastifyReply,
  upstream: UpstreamReply,
  options: RelayOptions,
): Promise<FastifyReply> {
  const { scrubber } = options;
  reply.code(upstream.statusCode).headers(scrubber.headers(upstreamResponseHeaders(upstream.headers)));

  if (upstream.statusCode >= 400) {
    const text = await readBounded(upstream);
    upstream.release();
    options.onDone(null);
    return reply.send(scrubber.text(text));
  }

  // the body passes unchanged: its length lets Node send it without chunked encoding
  const length = upstream.headers['content-length'];
  if (length !== undefined) reply.header('content-length', length);
  const contentType = firstValue(upstream.headers['content-type']);
  const meter = options.format ? createUsageMeter(options.format, contentType) : null;
  let done = false;
  const finish = () => {
    if (done) return;
    done = true;
    upstream.release();
    options.onDone(meter ? meter.finish() : null);
  };
  if (meter) upstream.body.on('data', (chunk: Buffer) => meter.push(chunk));
  upstream.body.once('end', finish);
  upstream.body.once('close', finish);
  upstream.body.once('error', (err) => request.log.warn({ reqId: request.id, err }, 'upstream body failed mid-stream'));
  return reply.send(upstream.body);
}

async function readBounded(upstream: UpstreamReply): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of upstream.body) {
    size += (chunk as Buffer).length;
    if (size > ERROR_BODY_LIMIT) break;
    chunks.push(chunk as Buffer);
  }
  if (size > ERROR_BODY_LIMIT) upstream.body.destroy();
  return Buffer.concat(chunks).toString('utf8');
}
