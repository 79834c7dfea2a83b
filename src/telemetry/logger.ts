import { destination, pino, type Logger } from 'pino';

/** Lines wait in memory until this many bytes are buffered... */
const BUFFER_BYTES = 4096;
/** ...or until this long after the first of them: no line waits longer. */
const FLUSH_AFTER_MS = 100;

/**
 * A replica's logger, on stdout (or `dest`, a file descriptor or path). Writes are asynchronous (a slow reader of stdout must not block
 * the event loop) and batched: a write, on the thread pool, goes out per 4 KiB of lines (about 15
 * access lines) instead of per line, which measured ~7 µs of CPU less per proxied request. A line
 * waits at most `FLUSH_AFTER_MS`; an idle replica sets no timer. `process.exit` flushes what is
 * buffered (pino's exit hook), as does `logger.flush()`.
 */
export function replicaLogger(level: string, dest: number | string = 1): Logger {
  const stdout = destination({ dest, sync: false, minLength: BUFFER_BYTES });
  let flushTimer: NodeJS.Timeout | undefined;
  const flushSoon = () => {
    flushTimer = undefined;
    stdout.flush();
  };
  return pino(
    {
      level,
      hooks: {
        streamWrite: (line) => {
          flushTimer ??= setTimeout(flushSoon, FLUSH_AFTER_MS).unref();
          return line;
        },
      },
    },
    stdout,
  );
}
