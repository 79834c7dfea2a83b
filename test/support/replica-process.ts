import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

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

/**
 * One replica process as production starts it (src/main.ts, a config file, no OTEL_* from this
 * process), run until it has listened (and `whileListening` settled) or until it exits by itself.
 */
export function runReplicaProcess(options: ReplicaProcessOptions): Promise<ReplicaRun> {
  const configPath = join(mkdtempSync(join(tmpdir(), 'tollgate-replica-')), 'tollgate.json');
  writeFileSync(configPath, JSON.stringify(options.config));
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('OTEL_')));
  const imports = ['tsx', ...(options.imports ?? [])].flatMap((module) => ['--import', module]);
  const child = spawn(process.execPath, [...imports, 'src/main.ts'], {
    env: { ...env, TOLLGATE_CONFIG: configPath },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  let listening = false;
  let failure: unknown;
  child.stderr.on('data', (chunk) => (stderr += chunk));
  child.stdout.on('data', (chunk) => {
    stdout += chunk;
    const line = !listening && stdout.split('\n').find((l) => l.includes('"tollgate listening"'));
    if (!line) return;
    listening = true;
    const { publicUrl, internalUrl } = JSON.parse(line) as { publicUrl: string; internalUrl: string };
    void (options.whileListening?.({ publicUrl, internalUrl }) ?? Promise.resolve())
      .catch((err: unknown) => void (failure = err))
      .finally(() => child.kill('SIGTERM'));
  });
  return new Promise((resolve, reject) =>
    child.once('close', (code) => (failure ? reject(failure) : resolve({ listening, code, stderr }))),
  );
}
