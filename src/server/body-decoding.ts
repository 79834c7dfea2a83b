import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { createBrotliDecompress, createGunzip, createInflate } from 'node:zlib';
import { Decompress as ZstdDecompress } from 'fzstd';
import { GatewayError } from '../errors.js';

/** The request `Content-Encoding`s the gateway decodes; any other is refused with 415. */
export const DECODED_ENCODINGS = ['gzip', 'x-gzip', 'deflate', 'br', 'zstd'] as const;
type Encoding = (typeof DECODED_ENCODINGS)[number];

const tooLarge = (limit: number) => new GatewayError('request_too_large', `Decoded request body is larger than the limit of ${limit} bytes.`);

/**
 * The body's encoding, or null for none/identity. Throws 415 `unsupported_content_encoding` for
 * anything else, stacked encodings included (no client sends those).
 */
export function requestEncoding(header: string | string[] | undefined): Encoding | null {
  const value = (Array.isArray(header) ? header.join(',') : header ?? '').trim().toLowerCase();
  if (value === '' || value === 'identity') return null;
  if ((DECODED_ENCODINGS as readonly string[]).includes(value)) return value as Encoding;
  throw new GatewayError(
    'unsupported_content_encoding',
    `Content-Encoding "${value}" is not supported; send one of ${DECODED_ENCODINGS.join(', ')} or none.`,
  );
}

/** A decoded body stream as Fastify's body reader expects one: it also counts the bytes received. */
export type DecodedBody = Transform & { receivedEncodedLength: number };

/**
 * `payload` decoded. The decoded size is bounded by `limit` while decoding (a zip bomb stops at the
 * bound with 413, it is never inflated past it); the received size is counted in
 * `receivedEncodedLength`, which Fastify holds to the same limit and to Content-Length.
 * Errors end the returned stream only: the request itself stays readable, so the error can be answered.
 */
export function decodedBody(payload: Readable, encoding: Encoding, limit: number): DecodedBody {
  const decoder = decoderFor(encoding, limit);
  let decoded = 0;
  const bounded = new Transform({
    transform(chunk: Buffer, _encoding, callback: TransformCallback) {
      decoded += chunk.length;
      callback(decoded > limit ? tooLarge(limit) : null, chunk);
    },
  }) as unknown as DecodedBody;
  bounded.receivedEncodedLength = 0;
  // counted before the chunk reaches the decoder (listener order)
  payload.on('data', (chunk: Buffer) => (bounded.receivedEncodedLength += chunk.length));
  decoder.on('error', (err: Error) =>
    bounded.destroy(err instanceof GatewayError ? err : new GatewayError('invalid_request', `Request body is not valid ${encoding}: ${err.message}`)),
  );
  bounded.on('close', () => {
    payload.unpipe(decoder);
    decoder.destroy();
  });
  payload.pipe(decoder).pipe(bounded);
  return bounded;
}

function decoderFor(encoding: Encoding, limit: number): Transform {
  switch (encoding) {
    case 'gzip':
    case 'x-gzip':
      return createGunzip();
    case 'deflate':
      return createInflate();
    case 'br':
      return createBrotliDecompress();
    case 'zstd':
      return zstdDecoder(limit);
  }
}

/**
 * zstd through fzstd (Node 20's zlib has none). fzstd allocates the window a frame header
 * declares, so the compressed body is collected first (Fastify bounds its size) and every frame's
 * declared sizes are checked against `limit` before anything is decoded.
 */
function zstdDecoder(limit: number): Transform {
  const chunks: Buffer[] = [];
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk);
      callback();
    },
    flush(callback) {
      const input = Buffer.concat(chunks);
      let decoded = 0;
      try {
        checkZstdFrames(input, limit);
        const decompressor = new ZstdDecompress((block) => {
          decoded += block.length;
          if (decoded > limit) throw tooLarge(limit); // fzstd hands out one block (≤ 128 KiB) at a time
          this.push(Buffer.from(block.buffer, block.byteOffset, block.length));
        });
        decompressor.push(input, true);
        callback();
      } catch (err) {
        callback(err as Error);
      }
    },
  });
}

const ZSTD_MAGIC = 0xfd2fb528;
const FRAME_CONTENT_SIZE_BYTES = [0, 2, 4, 8];
const DICTIONARY_ID_BYTES = [0, 1, 2, 4];

/**
 * Walks the frames of a zstd body (RFC 8878 §3.1) and refuses one whose window or declared content
 * size exceeds `limit`: 413 before any allocation. Malformed data is left to the decoder to report.
 */
function checkZstdFrames(data: Buffer, limit: number): void {
  let at = 0;
  while (at + 8 <= data.length) {
    const magic = data.readUInt32LE(at);
    if ((magic & 0xfffffff0) === 0x184d2a50) {
      at += 8 + data.readUInt32LE(at + 4); // skippable frame
      continue;
    }
    if (magic !== ZSTD_MAGIC) return;
    const descriptor = data[at + 4]!;
    const singleSegment = (descriptor >> 5) & 1;
    let cursor = at + 5;
    let windowSize = 0;
    if (!singleSegment) {
      const windowDescriptor = data[cursor++]!;
      const base = 2 ** (10 + (windowDescriptor >> 3));
      windowSize = base + (base / 8) * (windowDescriptor & 7);
    }
    cursor += DICTIONARY_ID_BYTES[descriptor & 3]!;
    const sizeBytes = FRAME_CONTENT_SIZE_BYTES[descriptor >> 6] || singleSegment;
    if (cursor + sizeBytes > data.length) return;
    const contentSize = sizeBytes === 0 ? 0 : Number(data.readUIntLE(cursor, Math.min(sizeBytes, 6))) + (sizeBytes === 2 ? 256 : 0);
    const hugeContent = sizeBytes === 8 && data.readUInt16LE(cursor + 6) !== 0;
    if (hugeContent || Math.max(windowSize, contentSize) > limit) throw tooLarge(limit);
    cursor += sizeBytes;
    for (;;) {
      if (cursor + 3 > data.length) return;
      const header = data.readUIntLE(cursor, 3);
      const type = (header >> 1) & 3;
      cursor += 3 + (type === 1 ? 1 : header >>> 3); // an RLE block carries one byte
      if (header & 1) break; // last block
    }
    at = cursor + ((descriptor >> 2) & 1) * 4; // content checksum
  }
}
