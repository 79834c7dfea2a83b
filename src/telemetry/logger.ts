import { destination, pino, type Logger } from 'pino';

/** Lines wait in memory until this many bytes are buffered... */
const BUFFER_BYTES = 4096;
/** ...or until this long after the first of them: no line waits longer than this plus a write in progress. */
const FLUSH_AFTER_MS = 100;

/** What the flush policy needs of a sonic-boom destination. */
export interface BufferedStream {
  /** set by sonic-boom once closed (not in its type declarations) */
  readonly destroyed?: boolean;
  /** starts a write of what is buffered (a no-op while a write is in progress) */
  flush(): void;
  /** 'write': `bytes` of the buffer reached the destination */
  on(event: 'write', listener: (bytes: number) => void): unknown;
}

/**
 * The `streamWrite` hook that bounds how long a line stays buffered in `stream`: a timer is armed by
 * the first line not yet written and re-armed while any byte is still waiting (a flush does nothing
 * while a write is in progress, and a write leaves up to `BUFFER_BYTES` behind). An idle logger
 * has no timer, and no empty write is ever made.
 */
export function boundedWait(stream: BufferedStream, afterMs = FLUSH_AFTER_MS): (line: string) => string {
  let waitingBytes = 0;
  let timer: NodeJS.Timeout | undefined;
  stream.on('write', (bytes) => (waitingBytes -= bytes));
  const flushWaiting = () => {
    timer = undefined;
    if (waitingBytes <= 0 || stream.destroyed) return;
    stream.flush();
    timer = setTimeout(flushWaiting, afterMs).unref();
  };
  return (line) => {
    waitingBytes += Buffer.byteLength(line);
    timer ??= setTimeout(flushWaiting, afterMs).unref();
    return line;
  };
}

/**
 * A replica's logger, on stdout (or `dest`, a file descriptor or path). Writes are asynchronous
 * (a slow reader of stdout must not block the event loop) and batched: a write, on the thread
 * pool, goes out per 4 KiB of lines (about 15 access lines) instead of per line, which measured
 * ~7 µs of CPU less per proxied request. A line waits about `FLUSH_AFTER_MS` at most (see
 * `boundedWait`); at `process.exit` pino writes what is still buffered.
 */
export function replicaLogger(level: string, dest: number | string = 1): Logger {
  const out = destination({ dest, sync: false, minLength: BUFFER_BYTES });
  return pino({ level, hooks: { streamWrite: boundedWait(out) } }, out);
}
