import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import net from 'node:net';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';

export interface TestRedis {
  url: string;
  port: number;
  /** Graceful shutdown that keeps the data (SHUTDOWN SAVE); waits for the process to exit. */
  stop(): Promise<void>;
  /** Starts again on the same port with the data of the last `stop()`. */
  start(): Promise<void>;
  /** stop() then start(). */
  restart(): Promise<void>;
  /** SIGKILL: the server vanishes the way a crashed one does. */
  kill(): Promise<void>;
  /** SIGTERM: the server shuts down as an orchestrator stops it. */
  terminate(): Promise<void>;
}

export interface TestRedisOptions {
  /** a one-node Redis Cluster */
  cluster?: boolean;
  /** extra `redis-server` arguments, after (and so over) the defaults */
  args?: string[];
}

/** What production should run: every write on disk before its reply (see the README's Guarantees). */
export const AOF_ALWAYS = ['--appendonly', 'yes', '--appendfsync', 'always'];

const READY_TIMEOUT_MS = 10_000; // a slow start on a loaded machine is not a failure

function onPath(command: string): boolean {
  return (process.env.PATH ?? '').split(delimiter).some((dir) => {
    try {
      accessSync(join(dir, command), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** A port nobody listens on right now (the kernel picks it, we release it). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** One raw PING over TCP: true on +PONG. */
function answersPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.once('data', (data) => done(data.toString().startsWith('+PONG')));
  });
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** One raw command over TCP, for SHUTDOWN SAVE (the connection just closes). */
function sendCommand(port: number, command: string): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1' }, () => socket.write(`${command}\r\n`));
    socket.once('error', () => resolve());
    socket.once('close', () => resolve());
  });
}

/** Gives the single cluster node every slot and waits until the cluster reports ok. */
async function assignAllSlots(port: number): Promise<void> {
  const { Redis } = await import('ioredis');
  const admin = new Redis({ port, host: '127.0.0.1', lazyConnect: true });
  try {
    await admin.connect();
    await admin.call('CLUSTER', 'ADDSLOTSRANGE', '0', '16383');
    const deadline = Date.now() + READY_TIMEOUT_MS;
    while (!String(await admin.call('CLUSTER', 'INFO')).includes('cluster_state:ok')) {
      if (Date.now() > deadline) throw new Error(`redis cluster on port ${port} did not become ok`);
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    admin.disconnect();
  }
}

/**
 * Spawns a `redis-server` on a free loopback port in a directory of its own: no periodic saves,
 * but `stop()` saves, so a stop/start keeps the data as a real restart would. `start()` after
 * `kill()` keeps only what the AOF has (`args: AOF_ALWAYS`).
 */
export async function startRedis(options: TestRedisOptions = {}): Promise<TestRedis> {
  if (!onPath('redis-server')) throw new Error('redis-server not found on PATH (apt-get install redis-server)');
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-redis-'));
  let child: ChildProcess | null = null;
  // a one-node Redis Cluster: every slot on this node, so cross-slot commands fail as in production
  const clusterArgs = options.cluster ? ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-announce-ip', '127.0.0.1'] : [];

  const start = async (): Promise<void> => {
    const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...clusterArgs, ...(options.args ?? [])], {
      cwd: dir,
      stdio: 'ignore',
    });
    child = proc;
    let failure: Error | null = null;
    proc.once('error', (err) => (failure = err));
    proc.once('exit', (code, signal) => (failure ??= new Error(`redis-server exited early (code ${code}, signal ${signal})`)));
    const deadline = Date.now() + READY_TIMEOUT_MS;
    while (!(await answersPing(port))) {
      if (failure) throw failure;
      if (Date.now() > deadline) {
        proc.kill('SIGKILL');
        throw new Error(`redis-server on port ${port} did not answer PING within ${READY_TIMEOUT_MS} ms`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  const signal = async (sig: NodeJS.Signals): Promise<void> => {
    const proc = child;
    child = null;
    if (!proc) return;
    proc.kill(sig);
    await exited(proc);
  };

  const stop = async (): Promise<void> => {
    const proc = child;
    child = null;
    if (!proc) return;
    await sendCommand(port, 'SHUTDOWN SAVE');
    await exited(proc);
  };

  await start();
  if (options.cluster) await assignAllSlots(port);
  // A crashed test run must not leave servers behind.
  process.once('exit', () => child?.kill('SIGKILL'));
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    stop,
    start,
    kill: () => signal('SIGKILL'),
    terminate: () => signal('SIGTERM'),
    restart: async () => {
      await stop();
      await start();
    },
  };
}

export interface TestSentinel {
  port: number;
  stop(): Promise<void>;
}

/** A real Redis Sentinel (the same binary, `--sentinel`) watching `master` under the name `mymaster`. */
export async function startSentinel(master: TestRedis): Promise<TestSentinel> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-sentinel-'));
  const config = join(dir, 'sentinel.conf');
  writeFileSync(config, `port ${port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 ${master.port} 1\n`);
  const proc = spawn('redis-server', [config, '--sentinel'], { cwd: dir, stdio: 'ignore' });
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (!(await answersPing(port))) {
    if (proc.exitCode !== null) throw new Error(`redis sentinel exited early (code ${proc.exitCode})`);
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`redis sentinel on port ${port} did not answer PING within ${READY_TIMEOUT_MS} ms`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  process.once('exit', () => proc.kill('SIGKILL'));
  return {
    port,
    stop: async () => {
      proc.kill('SIGTERM');
      await exited(proc);
    },
  };
}
