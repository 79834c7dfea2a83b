/**
 * Child processes of the bench: spawning, waiting for readiness, and stopping every one of them
 * on any way out (normal end, error, SIGINT/SIGTERM).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { READY_PREFIX } from './child-support.js';

const STDERR_TAIL_LINES = 30;

export interface Child {
  name: string;
  proc: ChildProcess;
  /** last lines the child wrote on stderr, for error messages */
  stderrTail(): string;
  stop(): Promise<void>;
}

const live = new Set<Child>();
/** Set once the bench is on its way out: nothing new starts after that. */
let stopping = false;

interface SpawnOptions<T> {
  name: string;
  command: string;
  args: string[];
  env?: Record<string, string>;
  /** returns the child's ready value when `line` (stdout) says it is ready */
  ready: (line: string) => T | undefined;
  timeoutMs?: number;
}

/** Spawns a child and resolves once it is ready; a child that exits or stalls first is an error. */
export function spawnChild<T>(opts: SpawnOptions<T>): Promise<{ child: Child; ready: T }> {
  if (stopping) return Promise.reject(new Error(`${opts.name}: not started, the bench is stopping`));
  const proc = spawn(opts.command, opts.args, {
    env: { ...process.env, ...opts.env },
    // stdin stays open as a lifeline: our children exit when it closes (i.e. when we die)
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const tail: string[] = [];
  const keepTail = (text: string) => {
    for (const line of text.split('\n')) if (line.trim()) tail.push(line);
    tail.splice(0, Math.max(0, tail.length - STDERR_TAIL_LINES));
  };
  proc.stderr!.setEncoding('utf8').on('data', keepTail);
  proc.stdin!.on('error', () => {}); // EPIPE when the child is already gone

  let exited = false;
  const exitedPromise = new Promise<void>((resolve) => {
    const done = () => ((exited = true), resolve());
    proc.once('exit', done);
    proc.once('error', done); // never started (e.g. ENOENT): there will be no 'exit'
  });
  const child: Child = {
    name: opts.name,
    proc,
    stderrTail: () => tail.join('\n'),
    async stop() {
      if (!exited) {
        proc.kill('SIGTERM');
        const killer = setTimeout(() => proc.kill('SIGKILL'), 3_000);
        await exitedPromise;
        clearTimeout(killer);
      }
      live.delete(child);
    },
  };
  live.add(child);

  return new Promise((resolve, reject) => {
    let buffered = '';
    const fail = (why: string) => {
      clearTimeout(timer);
      void child.stop();
      const stderr = child.stderrTail();
      reject(new Error(`${opts.name}: ${why}${stderr ? `\n--- ${opts.name} stderr ---\n${stderr}` : ''}`));
    };
    const timer = setTimeout(() => fail(`not ready after ${opts.timeoutMs ?? 15_000} ms`), opts.timeoutMs ?? 15_000);
    const onData = (text: string) => {
      buffered += text;
      let newline: number;
      while ((newline = buffered.indexOf('\n')) !== -1) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        const value = opts.ready(line);
        if (value !== undefined) {
          clearTimeout(timer);
          proc.off('exit', onExit);
          proc.stdout!.off('data', onData);
          proc.stdout!.resume(); // keep draining so the child never blocks on a full pipe
          resolve({ child, ready: value });
          return;
        }
      }
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null) =>
      fail(`exited before it was ready (${signal ?? `code ${code}`})`);
    proc.stdout!.setEncoding('utf8').on('data', onData);
    proc.once('exit', onExit);
    proc.once('error', (err) => fail(`could not start: ${err.message}`));
  });
}

/**
 * A TypeScript child of ours (`bench/*-process.ts`), run by node with the tsx loader.
 * `nodeArgs` go before the script (e.g. `--cpu-prof`); `timeoutMs` bounds the wait for its ready line.
 */
export function spawnTsChild<T>(
  name: string,
  script: string,
  env: Record<string, string> = {},
  nodeArgs: string[] = [],
  timeoutMs?: number,
): Promise<{ child: Child; ready: T }> {
  return spawnChild<T>({
    name,
    timeoutMs,
    command: process.execPath,
    args: [...nodeArgs, '--import', 'tsx', fileURLToPath(new URL(script, import.meta.url))],
    env,
    ready: (line) => (line.startsWith(READY_PREFIX) ? (JSON.parse(line.slice(READY_PREFIX.length)) as T) : undefined),
  });
}

/** Things started by helpers that are not ours (e.g. test/support/redis.ts), still starting. */
const pending = new Set<Promise<unknown>>();
/** ... and once started: how to stop them. */
const extraStops = new Set<() => Promise<void>>();

/**
 * Starts something through a helper that spawns its own process, tracked from the first moment:
 * a stop that comes while it is still starting waits for it (bounded), then stops it.
 */
export function startTracked<T>(start: () => Promise<T>, stop: (value: T) => Promise<void>): Promise<T> {
  if (stopping) return Promise.reject(new Error('the bench is stopping'));
  const started = start().then((value) => {
    extraStops.add(() => stop(value));
    return value;
  });
  const settled = started.then(
    () => {},
    () => {},
  );
  pending.add(settled);
  void settled.then(() => pending.delete(settled));
  return started;
}

export async function stopAllChildren(): Promise<void> {
  stopping = true;
  if (pending.size > 0) {
    await Promise.race([Promise.all(pending), new Promise((resolve) => setTimeout(resolve, 8_000).unref())]);
  }
  const stops = [...extraStops];
  extraStops.clear();
  // our children first: a gateway should not watch its store vanish under it
  await Promise.all([...live].map((child) => child.stop()));
  await Promise.all(stops.map((stop) => stop().catch(() => {})));
}

/**
 * Stops every child on the way out: SIGINT/SIGTERM stop them and exit 130/143; a synchronous
 * `exit` (including after an uncaught error) sends SIGKILL to any still running.
 */
export function installCleanup(): void {
  const onSignal = (signal: NodeJS.Signals, code: number) => {
    process.stderr.write(`\nbench: ${signal}, stopping child processes\n`);
    const hardExit = setTimeout(() => process.exit(code), 5_000);
    hardExit.unref();
    void stopAllChildren().finally(() => process.exit(code));
  };
  process.once('SIGINT', () => onSignal('SIGINT', 130));
  process.once('SIGTERM', () => onSignal('SIGTERM', 143));
  process.on('exit', () => {
    for (const child of live) if (child.proc.exitCode === null && child.proc.signalCode === null) child.proc.kill('SIGKILL');
  });
}
