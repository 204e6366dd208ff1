// A real redis-server (Debian package `redis-server`) for integration tests, on 127.0.0.1 and a
// free port, with persistence off so a restart starts empty.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { freePort, killOnExit, makeTempDir } from './proc';

export const REDIS_SERVER = process.env.NCPS_TEST_REDIS_SERVER || 'redis-server';

export interface RedisServer {
  host: string;
  port: number;
  /** `127.0.0.1:PORT`, the form `--cache-redis-addrs` takes. */
  addr: string;
  password?: string;
  logs(): string;
  /** Stops the server (SIGTERM, SIGKILL after 5 s). */
  stop(): Promise<void>;
  /** Stops it and starts a fresh one on the same port (data is not kept). */
  restart(): Promise<void>;
  /** SIGSTOP: the process stalls with its connections open (commands queue unanswered). */
  pause(): void;
  /** SIGCONT after pause(). */
  resume(): void;
}

export interface RedisServerOptions {
  /** Sets `--requirepass`. */
  password?: string;
  /** More redis-server arguments (e.g. `--cluster-enabled yes`). */
  extraArgs?: string[];
  readyTimeoutMs?: number;
}

/** Whether a redis-server binary can be run here. */
export function redisAvailable(): boolean {
  const probe = spawnSync(REDIS_SERVER, ['--version'], { stdio: 'ignore', timeout: 10_000 });
  return probe.status === 0;
}


export async function startRedis(options: RedisServerOptions = {}): Promise<RedisServer> {
  const dir = await makeTempDir('redis');
  const port = await freePort();
  let output = '';
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();

  const launch = async () => {
    const args = [
      '--port', String(port),
      '--bind', '127.0.0.1',
      '--save', '',
      '--appendonly', 'no',
      '--dir', dir,
      '--daemonize', 'no',
      '--loglevel', 'notice',
    ];
    if (options.password !== undefined) args.push('--requirepass', options.password);
    args.push(...(options.extraArgs ?? []));
    const proc = spawn(REDIS_SERVER, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child = proc;
    killOnExit(proc);
    exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    const timeoutMs = options.readyTimeoutMs ?? 15_000;
    await new Promise<void>((resolve, reject) => {
      let done = false;
      const finish = (error?: Error) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        proc.off('exit', onExit);
        if (error) {
          proc.kill('SIGKILL');
          reject(error);
        } else resolve();
      };
      const timer = setTimeout(() => finish(new Error(`redis-server did not start within ${timeoutMs} ms:\n${output}`)), timeoutMs);
      const onExit = (code: number | null) => finish(new Error(`redis-server exited (${code}) before it was ready:\n${output}`));
      const onData = (chunk: Buffer) => {
        output += chunk.toString('utf8');
        if (output.includes('Ready to accept connections')) finish();
      };
      proc.stdout!.on('data', onData);
      proc.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
      proc.once('exit', onExit);
      proc.once('error', (e) => finish(e));
    });
  };

  const stop = async () => {
    const proc = child;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill('SIGCONT'); // a paused server would not see the SIGTERM
    proc.kill('SIGTERM');
    const killer = setTimeout(() => proc.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(killer);
  };

  await launch();
  return {
    host: '127.0.0.1',
    port,
    addr: `127.0.0.1:${port}`,
    password: options.password,
    logs: () => output,
    stop,
    async restart() {
      await stop();
      output += '\n--- restart ---\n';
      await launch();
    },
    pause() {
      child?.kill('SIGSTOP');
    },
    resume() {
      child?.kill('SIGCONT');
    },
  };
}
