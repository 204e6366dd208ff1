// Runs the real ncps bundle (dist/ncps.cjs) as a child process for integration tests.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { request } from './http';
import { freePort, killOnExit, makeTempDir, run, sleep, type RunResult } from './proc';

// Tests import it from here.
export { freePort } from './proc';

/** Repository root: this file is compiled to build/test/helpers/ncps.js. */
export const REPO_ROOT = path.resolve(__dirname, '../../..');
/** The bundle to run; NCPS_TEST_BUNDLE overrides it (e.g. to test an installed build). */
export const NCPS_BUNDLE = process.env.NCPS_TEST_BUNDLE || path.join(REPO_ROOT, 'dist', 'ncps.cjs');

export interface NcpsOptions {
  upstreams: string[];
  publicKeys: string[];
  /** Storage directory (also holds db.sqlite). A fresh temp dir when omitted. */
  dataDir?: string;
  extraArgs?: string[];
  env?: Record<string, string>;
  /** How long to wait for /healthz. Default 15 s. */
  readyTimeoutMs?: number;
  /** Use this cache hostname (= signing key name). Default `ncps-test`. */
  hostname?: string;
  /** What runs `serve …` instead of `node dist/ncps.cjs` (a launcher, or a docker-run style argv). */
  command?: string[];
  /** Give ncps none of the flags above, only `serve` and extraArgs; the listen address goes in
   * SERVER_ADDR (the configuration under test comes from the environment or a config file). */
  bare?: boolean;
  /** Listen on this port (when the configuration under test names it); a free one otherwise. */
  port?: number;
  /** A file descriptor to give the process as its stdout (then logs() holds stderr only). */
  stdoutFd?: number;
  /** A command that runs node, e.g. `['setpriv', '--reuid=65534', …]` to serve as another user. */
  wrapper?: string[];
}

export interface NcpsProcess {
  /** `http://127.0.0.1:PORT` (no trailing slash). */
  url: string;
  port: number;
  dataDir: string;
  proc: ChildProcess;
  /** Everything the process wrote to stdout and stderr so far. */
  logs(): string;
  /** GET /pubkey, trimmed. */
  publicKey(): Promise<string>;
  /** Sends `signal` (default SIGTERM), SIGKILL after 10 s; resolves with the exit code
   * (null when the process died from a signal). */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

// Environment variables ncps reads; stripped from the inherited environment so a developer's
// shell cannot change what the tests run against.
const NCPS_ENV = /^(CACHE_|NCPS_|OTEL_|PROMETHEUS_|REDIS_)|^(SERVER_ADDR|LOG_LEVEL|NETRC_FILE|NOTIFY_SOCKET)$/;

function childEnv(extra?: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!NCPS_ENV.test(k)) env[k] = v;
  return { ...env, ...extra };
}


function assertBundle(): void {
  if (!existsSync(NCPS_BUNDLE)) throw new Error(`${NCPS_BUNDLE} does not exist: run \`npm run build\` first`);
}

async function startOnce(opts: NcpsOptions, dataDir: string): Promise<NcpsProcess> {
  const port = opts.port ?? (await freePort());
  const url = `http://127.0.0.1:${port}`;
  const fixed = [
    `--cache-hostname=${opts.hostname ?? 'ncps-test'}`,
    `--server-addr=127.0.0.1:${port}`,
    `--cache-storage-local=${dataDir}`,
    `--cache-database-url=sqlite:${path.join(dataDir, 'db.sqlite')}`,
    ...opts.upstreams.map((u) => `--cache-upstream-url=${u}`),
    ...opts.publicKeys.map((k) => `--cache-upstream-public-key=${k}`),
    '--log-level=debug',
  ];
  const args = [...(opts.command ? opts.command.slice(1) : [NCPS_BUNDLE]), 'serve', ...(opts.bare ? [] : fixed), ...(opts.extraArgs ?? [])];
  const [command, ...prefix] = opts.command ? [opts.command[0]!] : [...(opts.wrapper ?? []), process.execPath];
  const proc = spawn(command!, [...prefix, ...args], {
    cwd: REPO_ROOT,
    env: childEnv({ ...(opts.bare ? { SERVER_ADDR: `127.0.0.1:${port}` } : {}), ...opts.env }),
    stdio: ['ignore', opts.stdoutFd ?? 'pipe', 'pipe'],
  });
  killOnExit(proc);
  const chunks: string[] = [];
  const echo = process.env.NCPS_TEST_ECHO_LOGS === '1';
  const capture = (b: Buffer): void => {
    const s = b.toString('utf8');
    chunks.push(s);
    if (echo) process.stderr.write(s);
  };
  proc.stdout?.on('data', capture);
  proc.stderr?.on('data', capture);
  const logs = (): string => chunks.join('');

  let exitCode: number | null | undefined;
  const exited = new Promise<number | null>((resolve) => {
    proc.on('exit', (code) => {
      exitCode = code;
      resolve(code);
    });
    proc.on('error', (e) => {
      chunks.push(`\n[spawn error: ${e.message}]\n`);
      exitCode = null;
      resolve(null);
    });
  });

  const stop = async (signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> => {
    if (exitCode !== undefined) return exitCode;
    proc.kill(signal);
    const killer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
    const code = await exited;
    clearTimeout(killer);
    return code;
  };

  const deadline = Date.now() + (opts.readyTimeoutMs ?? 15_000);
  for (;;) {
    if (exitCode !== undefined) {
      // Let the stdio pipes drain so the error message is complete.
      await sleep(50);
      throw Object.assign(new Error(`ncps exited with code ${exitCode} before becoming healthy:\n${logs()}`), {
        ncpsLogs: logs(),
      });
    }
    try {
      const r = await request(url, '/healthz', { timeoutMs: 1_000 });
      if (r.status === 200) break;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) {
      await stop('SIGKILL');
      throw new Error(`ncps did not answer 200 on /healthz within ${opts.readyTimeoutMs ?? 15_000} ms:\n${logs()}`);
    }
    await sleep(100);
  }

  return {
    url,
    port,
    dataDir,
    proc,
    logs,
    async publicKey() {
      const r = await request(url, '/pubkey', { timeoutMs: 10_000 });
      if (r.status !== 200) throw new Error(`GET /pubkey answered ${r.status}: ${r.text}`);
      return r.text.trim();
    },
    stop,
  };
}

/** Starts `node dist/ncps.cjs serve …` and waits until /healthz answers 200. */
export async function startNcps(opts: NcpsOptions): Promise<NcpsProcess> {
  assertBundle();
  const dataDir = opts.dataDir ?? (await makeTempDir('ncps-data'));
  // The port is only probed free; if another process grabs it in between, try again.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(opts, dataDir);
    } catch (e) {
      const logs = (e as { ncpsLogs?: string }).ncpsLogs ?? '';
      if (attempt < 3 && /EADDRINUSE/.test(logs)) continue;
      throw e;
    }
  }
}

/** Runs the ncps CLI with `args` to completion (for CLI tests). */
export async function runNcps(
  args: string[],
  opts: { env?: Record<string, string>; timeoutMs?: number; cwd?: string } = {},
): Promise<RunResult> {
  assertBundle();
  return run(process.execPath, [NCPS_BUNDLE, ...args], {
    cwd: opts.cwd ?? REPO_ROOT,
    env: childEnv(opts.env),
    timeoutMs: opts.timeoutMs ?? 30_000,
  });
}
