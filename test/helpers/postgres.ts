// A real, throwaway PostgreSQL server for integration tests: initdb into a temp dir, listen on
// 127.0.0.1 (free port) and on a unix socket inside that dir, trust auth, fsync off.
// Debian's server binaries live in /usr/lib/postgresql/<version>/bin. As root, initdb and the
// server must run as another user, so they run as the `postgres` system user via runuser.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { appendFile, chown, mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { freePort, run, sleep, type RunResult } from './proc';

const PG_ROOT = '/usr/lib/postgresql';
const SERVER_USER = 'postgres';
/** The superuser initdb creates; tests connect as it. */
export const SUPERUSER = 'postgres';

/** The newest installed server's bin directory, or undefined. NCPS_TEST_PG_BINDIR overrides it. */
function findBinDir(): string | undefined {
  const override = process.env.NCPS_TEST_PG_BINDIR;
  if (override) return existsSync(path.join(override, 'initdb')) ? override : undefined;
  let versions: string[];
  try {
    versions = readdirSync(PG_ROOT);
  } catch {
    versions = [];
  }
  const candidates = versions
    .filter((v) => /^\d+(\.\d+)?$/.test(v))
    .sort((a, b) => Number(b) - Number(a))
    .map((v) => path.join(PG_ROOT, v, 'bin'));
  // Elsewhere (e.g. Nix or Homebrew), initdb may simply be on PATH.
  const onPath = spawnSync('sh', ['-c', 'command -v initdb'], { encoding: 'utf8' });
  if (onPath.status === 0 && onPath.stdout.trim()) candidates.push(path.dirname(onPath.stdout.trim()));
  return candidates.find((dir) => existsSync(path.join(dir, 'initdb')) && existsSync(path.join(dir, 'pg_ctl')));
}

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

interface ServerUser {
  uid: number;
  gid: number;
}

function serverUser(): ServerUser | undefined {
  const r = spawnSync('id', ['-u', SERVER_USER], { encoding: 'utf8' });
  const g = spawnSync('id', ['-g', SERVER_USER], { encoding: 'utf8' });
  if (r.status !== 0 || g.status !== 0) return undefined;
  return { uid: Number(r.stdout.trim()), gid: Number(g.stdout.trim()) };
}

let availability: { ok: true; binDir: string } | { ok: false; reason: string } | undefined;

function checkAvailability(): NonNullable<typeof availability> {
  if (availability) return availability;
  const binDir = findBinDir();
  if (!binDir) {
    availability = { ok: false, reason: `no PostgreSQL server binaries (initdb, pg_ctl) in ${PG_ROOT}/*/bin or on PATH` };
  } else if (isRoot && !serverUser()) {
    availability = { ok: false, reason: `running as root, but there is no '${SERVER_USER}' user to run the server as` };
  } else if (isRoot && spawnSync('runuser', ['--help'], { stdio: 'ignore' }).status !== 0) {
    availability = { ok: false, reason: 'running as root, but runuser is missing' };
  } else {
    availability = { ok: true, binDir };
  }
  return availability;
}

/** True when a throwaway PostgreSQL server can be started here. */
export function postgresAvailable(): boolean {
  return checkAvailability().ok;
}

/** Why postgresAvailable() is false (for skip messages). */
export function postgresUnavailableReason(): string {
  const a = checkAvailability();
  return a.ok ? '' : a.reason;
}

export interface PostgresServer {
  host: string;
  port: number;
  /** Directory holding the server's unix socket. */
  socketDir: string;
  /** `postgresql://postgres@127.0.0.1:PORT/<database>` */
  url(database: string): string;
  /** `postgresql:///<database>?host=<socketDir>&port=PORT&user=postgres` */
  socketUrl(database: string): string;
  /** Creates a fresh, empty database and returns its TCP URL. */
  createDatabase(prefix?: string): Promise<string>;
  /** Runs SQL (as the superuser) against a database, returning the rows. */
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(database: string, sql: string, params?: unknown[]): Promise<R[]>;
  /** The server log so far. */
  logs(): string;
  /** Stops the server at once (pg_ctl stop -m immediate) and removes its directory. */
  stop(): Promise<void>;
}

const running = new Set<{ binDir: string; dataDir: string }>();
process.on('exit', () => {
  // Last resort for a test process that ends without calling stop(): never leave servers behind.
  for (const server of running) {
    spawnSync(...asServerUser(path.join(server.binDir, 'pg_ctl'), ['stop', '-D', server.dataDir, '-m', 'immediate', '-w']), {
      stdio: 'ignore',
      timeout: 20_000,
    });
  }
});

function asServerUser(cmd: string, args: string[]): [string, string[]] {
  return isRoot ? ['runuser', ['-u', SERVER_USER, '--', cmd, ...args]] : [cmd, args];
}

function runAsServer(cmd: string, args: string[], cwd: string, timeoutMs: number): Promise<RunResult> {
  const [c, a] = asServerUser(cmd, args);
  // A neutral environment: no PG* variables from the caller, the C locale, and a cwd the server
  // user can enter.
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C', LANG: 'C' };
  return run(c, a, { cwd, env, timeoutMs });
}

function describe(what: string, r: RunResult, log?: string): Error {
  return new Error(
    `${what} failed (exit ${r.code}${r.signal ? `, ${r.signal}` : ''})\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}` +
      (log !== undefined ? `\n--- server log\n${log}` : ''),
  );
}

function readLog(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '(no server log)';
  }
}

function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** Initialises a cluster in a fresh temp dir and starts it; throws with the server log on failure. */
export async function startPostgres(): Promise<PostgresServer> {
  const a = checkAvailability();
  if (!a.ok) throw new Error(`cannot start PostgreSQL: ${a.reason}`);
  const binDir = a.binDir;

  // Short path: the socket path (dir + "/.s.PGSQL.<port>") must fit in 107 bytes.
  const root = await mkdtemp(path.join(os.tmpdir(), 'ncps-pg-'));
  const dataDir = path.join(root, 'data');
  const socketDir = path.join(root, 'sock');
  const logFile = path.join(root, 'server.log');
  await mkdir(socketDir);
  if (isRoot) {
    const user = serverUser()!;
    for (const p of [root, socketDir]) await chown(p, user.uid, user.gid);
  }

  const cleanup = async () => {
    await rm(root, { recursive: true, force: true, maxRetries: 3 }).catch(() => undefined);
  };

  try {
    const init = await runAsServer(
      path.join(binDir, 'initdb'),
      ['-D', dataDir, '-U', SUPERUSER, '--auth=trust', '--encoding=UTF8', '--no-locale', '--no-sync'],
      root,
      120_000,
    );
    if (init.code !== 0) throw describe('initdb', init);

    // Settings go into postgresql.conf (owned by the server user; appending keeps the owner).
    await appendFile(
      path.join(dataDir, 'postgresql.conf'),
      [
        '',
        '# ncps tests',
        "listen_addresses = '127.0.0.1'",
        `unix_socket_directories = '${socketDir}'`,
        'fsync = off',
        'synchronous_commit = off',
        'full_page_writes = off',
        'max_connections = 200',
        "log_min_messages = 'warning'",
        '',
      ].join('\n'),
    );
  } catch (error) {
    await cleanup();
    throw error;
  }

  const entry = { binDir, dataDir };
  let port = 0;
  // The port was only free a moment ago; if the server cannot bind it, try another.
  for (let attempt = 1; ; attempt++) {
    port = await freePort();
    running.add(entry);
    const start = await runAsServer(
      path.join(binDir, 'pg_ctl'),
      ['start', '-D', dataDir, '-l', logFile, '-w', '-t', '60', '-o', `-p ${port}`],
      root,
      90_000,
    );
    if (start.code === 0 && (await acceptsConnections(port, 30_000))) break;
    const log = readLog(logFile);
    await runAsServer(path.join(binDir, 'pg_ctl'), ['stop', '-D', dataDir, '-m', 'immediate', '-w'], root, 30_000);
    running.delete(entry);
    if (attempt < 3 && /could not bind|address already in use/i.test(log)) continue;
    await cleanup();
    throw describe(`starting PostgreSQL on 127.0.0.1:${port}`, start, log);
  }

  const host = '127.0.0.1';
  const url = (database: string) => `postgresql://${SUPERUSER}@${host}:${port}/${encodeURIComponent(database)}`;
  let counter = 0;
  let stopped = false;

  const query = async <R extends pg.QueryResultRow>(database: string, sql: string, params: unknown[] = []): Promise<R[]> => {
    const client = new pg.Client({ connectionString: url(database) });
    await client.connect();
    try {
      return (await client.query<R>(sql, params)).rows;
    } finally {
      await client.end();
    }
  };

  return {
    host,
    port,
    socketDir,
    url,
    socketUrl: (database) =>
      `postgresql:///${encodeURIComponent(database)}?host=${encodeURIComponent(socketDir)}&port=${port}&user=${SUPERUSER}`,
    async createDatabase(prefix = 'ncps') {
      const name = `${prefix.replace(/[^a-z0-9_]/gi, '_').toLowerCase()}_${process.pid}_${++counter}`;
      await query('postgres', `CREATE DATABASE ${quoteIdent(name)}`);
      return url(name);
    },
    query,
    logs: () => readLog(logFile),
    async stop() {
      if (stopped) return;
      stopped = true;
      await runAsServer(path.join(binDir, 'pg_ctl'), ['stop', '-D', dataDir, '-m', 'immediate', '-w'], root, 60_000);
      running.delete(entry);
      await cleanup();
    },
  };
}

/** Polls until a superuser connection on 127.0.0.1:port succeeds. */
async function acceptsConnections(port: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const client = new pg.Client({ host: '127.0.0.1', port, user: SUPERUSER, database: 'postgres', connectionTimeoutMillis: 2_000 });
    try {
      await client.connect();
      await client.query('SELECT 1');
      await client.end();
      return true;
    } catch {
      await client.end().catch(() => undefined);
      if (Date.now() > deadline) return false;
      await sleep(100);
    }
  }
}
