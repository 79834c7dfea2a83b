/**
 * The parent/child protocol of the bench's own child processes (mock, gateways): a child
 * announces itself with one `READY <json>` line on stdout and exits when told to
 * (SIGTERM/SIGINT) or when its parent goes away (stdin closes), so a crashed or killed bench
 * never leaves a child behind.
 */

export const READY_PREFIX = 'BENCH_READY ';

export function announceReady(info: Record<string, unknown>): void {
  process.stdout.write(READY_PREFIX + JSON.stringify(info) + '\n');
}

/** Runs `shutdown` once (bounded by a hard exit) on SIGTERM, SIGINT or the parent's end. */
export function exitWithParent(shutdown: () => Promise<void>): void {
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    setTimeout(() => process.exit(0), 3_000).unref();
    shutdown().then(
      () => process.exit(0),
      (err: unknown) => {
        console.error(err);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdin.on('end', stop);
  process.stdin.on('error', stop);
  process.stdin.resume();
}

/** A module of the compiled build (`dist/`, made by `npm run build` before the bench runs). */
export function fromDist<T>(path: string): Promise<T> {
  return import(new URL(`../dist/${path}`, import.meta.url).href) as Promise<T>;
}
