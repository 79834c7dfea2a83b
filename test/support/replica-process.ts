import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

/** A replica's config file (JSON is YAML) in a fresh temporary directory; returns its path. */
export function writeReplicaConfig(config: Record<string, unknown>): string {
  const path = join(mkdtempSync(join(tmpdir(), 'tollgate-replica-')), 'tollgate.json');
  writeFileSync(path, JSON.stringify(config));
  return path;
}

/**
 * A replica process as production starts it (`src/main.ts`, through tsx), with `env` over this
 * process's environment — without its OTEL_* variables: a developer's tracing settings must not
 * reach the tests' replicas. `imports` are loaded before src/main.ts.
 */
export function spawnReplica(env: Record<string, string>, options: { imports?: string[]; stdio?: StdioOptions } = {}): ChildProcess {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('OTEL_')));
  const imports = ['tsx', ...(options.imports ?? [])].flatMap((module) => ['--import', module]);
  return spawn(process.execPath, [...imports, 'src/main.ts'], { env: { ...inherited, ...env }, stdio: options.stdio ?? ['ignore', 'pipe', 'pipe'] });
}

/** The replica's URLs from its "tollgate listening" log line; undefined for any other line. */
export function listeningUrls(line: string): { publicUrl: string; internalUrl: string } | undefined {
  try {
    const entry = JSON.parse(line) as { msg?: string; publicUrl: string; internalUrl: string };
    return entry.msg === 'tollgate listening' ? { publicUrl: entry.publicUrl, internalUrl: entry.internalUrl } : undefined;
  } catch {
    return undefined; // not a log line
  }
}

export interface ReplicaRun {
  /** whether it got as far as listening */
  listening: boolean;
  code: number | null;
  stderr: string;
}

export interface ReplicaProcessOptions {
  /** the raw config file's content */
  config: Record<string, unknown>;
  /** extra `--import` modules, loaded before src/main.ts */
  imports?: string[];
  /** run while it listens (its URLs from the "tollgate listening" line); it is stopped afterwards */
  whileListening?: (urls: { publicUrl: string; internalUrl: string }) => Promise<void>;
}

/** One replica process run until it has listened (and `whileListening` settled) or until it exits by itself. */
export function runReplicaProcess(options: ReplicaProcessOptions): Promise<ReplicaRun> {
  const child = spawnReplica({ TOLLGATE_CONFIG: writeReplicaConfig(options.config) }, { imports: options.imports });
  let stderr = '';
  let listening = false;
  let failure: unknown;
  child.stderr!.on('data', (chunk) => (stderr += chunk));
  createInterface({ input: child.stdout! }).on('line', (line) => {
    const urls = listening ? undefined : listeningUrls(line);
    if (!urls) return;
    listening = true;
    void (options.whileListening?.(urls) ?? Promise.resolve())
      .catch((err: unknown) => void (failure = err))
      .finally(() => child.kill('SIGTERM'));
  });
  return new Promise((resolve, reject) =>
    child.once('close', (code) => (failure ? reject(failure) : resolve({ listening, code, stderr }))),
  );
}
