// Process and temp-dir utilities shared by the integration-test helpers.
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

export interface RunOptions {
  cwd?: string;
  /** Environment for the child; defaults to process.env. */
  env?: NodeJS.ProcessEnv;
  /** Kill the child (and its process group) after this long. Default 120 s. */
  timeoutMs?: number;
  /** Written to the child's stdin (stdin is closed either way). */
  input?: string | Buffer;
}

export interface RunResult {
  /** Exit code; -1 when the child was killed by a signal (see `signal`). */
  code: number;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/** Runs a command to completion, capturing its output. Never hangs: the child's whole
 * process group is SIGKILLed when `timeoutMs` expires. Never rejects for a non-zero exit;
 * rejects only when the command cannot be spawned at all. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 120_000;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
      // Own process group, so a timeout can kill grandchildren (builders) too.
      detached: true,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    let settled = false;
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child.pid, 'SIGKILL');
    }, timeoutMs);
    child.on('error', (e) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({
        code: code ?? -1,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8') + (timedOut ? `\n[run: killed after ${timeoutMs} ms]` : ''),
        timedOut,
      });
    });
    child.stdin.on('error', () => {
      /* child may exit before reading its stdin */
    });
    if (opts.input !== undefined) child.stdin.end(opts.input);
    else child.stdin.end();
  });
}

function killGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      /* already gone */
    }
  }
}

const tempDirs = new Set<string>();

/** Creates a fresh directory under os.tmpdir() (or under `parent`); removed by cleanupTempDirs(). */
export async function makeTempDir(prefix: string, parent = os.tmpdir()): Promise<string> {
  const safe = prefix.replace(/[^A-Za-z0-9._-]/g, '_');
  const dir = await mkdtemp(path.join(parent, `ncps-test-${safe}-`));
  tempDirs.add(dir);
  return dir;
}

/** Removes a directory tree, including read-only trees such as a chroot Nix store. */
export async function removeDir(dir: string): Promise<void> {
  try {
    await rm(dir, { recursive: true, force: true, maxRetries: 3 });
  } catch {
    // Nix makes store paths read-only; without root, rm needs write permission back first.
    await run('chmod', ['-R', 'u+w', dir], { timeoutMs: 60_000 }).catch(() => undefined);
    await rm(dir, { recursive: true, force: true, maxRetries: 3 }).catch(() => undefined);
  }
}

/** Removes every directory made by makeTempDir() so far. Call it from an `after` hook. */
export async function cleanupTempDirs(): Promise<void> {
  const dirs = [...tempDirs];
  tempDirs.clear();
  await Promise.all(dirs.map((d) => removeDir(d)));
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A TCP port that was free a moment ago (bind to 0, read it, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of running) {
    try {
      child.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }
});

/** Kills `child` if the test process exits while it still runs: servers are never left behind. */
export function killOnExit(child: ChildProcess): void {
  running.add(child);
  const forget = () => running.delete(child);
  child.once('exit', forget);
  child.once('error', forget);
}
