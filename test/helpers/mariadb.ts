// A real, throwaway MariaDB (or MySQL) server for integration tests, like postgres.ts does it for
// PostgreSQL: a fresh data directory, 127.0.0.1 on a free port and a socket in a temp dir, root
// without a password. As root, the server runs as the `mysql` system user.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chown, mkdtemp, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, killOnExit, run, sleep } from './proc';

const SERVER_USER = 'mysql';
const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

function command(names: string[]): string | undefined {
  for (const name of names) {
    const r = spawnSync('sh', ['-c', `command -v ${name} || ls /usr/sbin/${name} 2>/dev/null`], { encoding: 'utf8' });
    const found = r.stdout.trim().split('\n')[0];
    if (r.status === 0 && found) return found;
  }
  return undefined;
}

let availability: { ok: true; server: string; install: string } | { ok: false; reason: string } | undefined;

function check(): NonNullable<typeof availability> {
  if (availability) return availability;
  const server = command(['mariadbd', 'mysqld']);
  const install = command(['mariadb-install-db', 'mysql_install_db']);
  if (!server || !install) availability = { ok: false, reason: 'no MariaDB server (mariadbd and mariadb-install-db; Debian: mariadb-server)' };
  else if (isRoot && spawnSync('id', ['-u', SERVER_USER]).status !== 0) availability = { ok: false, reason: `running as root, but there is no '${SERVER_USER}' user` };
  else availability = { ok: true, server, install };
  return availability;
}

export function mariadbAvailable(): boolean {
  return check().ok;
}

export function mariadbUnavailableReason(): string {
  const a = check();
  return a.ok ? '' : a.reason;
}

export interface MariadbServer {
  port: number;
  /** `mysql://root@127.0.0.1:PORT/<database>` */
  url(database: string): string;
  createDatabase(prefix?: string): Promise<string>;
  /** Runs SQL as root (with `?` placeholders) and returns the rows. */
  query<R = Record<string, unknown>>(database: string | undefined, sql: string, params?: unknown[]): Promise<R[]>;
  stop(): Promise<void>;
}

function asServerUser(cmd: string, args: string[]): [string, string[]] {
  return isRoot ? ['runuser', ['-u', SERVER_USER, '--', cmd, ...args]] : [cmd, args];
}

export async function startMariadb(): Promise<MariadbServer> {
  const a = check();
  if (!a.ok) throw new Error(`cannot start MariaDB: ${a.reason}`);
  const root = await mkdtemp(path.join(os.tmpdir(), 'ncps-mdb-'));
  if (isRoot) {
    const uid = Number(spawnSync('id', ['-u', SERVER_USER], { encoding: 'utf8' }).stdout.trim());
    const gid = Number(spawnSync('id', ['-g', SERVER_USER], { encoding: 'utf8' }).stdout.trim());
    await chown(root, uid, gid);
  }
  const dataDir = path.join(root, 'data');
  const [ic, ia] = asServerUser(a.install, ['--no-defaults', `--datadir=${dataDir}`, '--auth-root-authentication-method=normal', '--skip-test-db']);
  const install = await run(ic, ia, { cwd: root, timeoutMs: 180_000 });
  if (install.code !== 0) {
    await rm(root, { recursive: true, force: true });
    throw new Error(`mariadb-install-db failed (exit ${install.code}):\n${install.stdout}\n${install.stderr}`);
  }

  let server: ChildProcess | undefined;
  let port = 0;
  const logFile = path.join(root, 'error.log');
  for (let attempt = 1; ; attempt++) {
    port = await freePort();
    const [sc, sa] = asServerUser(a.server, [
      '--no-defaults',
      `--datadir=${dataDir}`,
      `--socket=${path.join(root, 'sock')}`,
      `--port=${port}`,
      '--bind-address=127.0.0.1',
      `--log-error=${logFile}`,
      `--pid-file=${path.join(root, 'pid')}`,
      '--innodb-flush-log-at-trx-commit=0',
      '--skip-log-bin',
    ]);
    server = spawn(sc, sa, { cwd: root, stdio: 'ignore' });
    killOnExit(server);
    if (await accepting(port, 60_000, server)) break;
    server.kill('SIGKILL');
    const log = readLog(logFile);
    if (attempt < 3 && /in use|bind/i.test(log)) continue;
    await rm(root, { recursive: true, force: true });
    throw new Error(`MariaDB did not start on 127.0.0.1:${port}:\n${log}`);
  }

  const mysql = require('mysql2/promise') as typeof import('mysql2/promise');
  const url = (database: string) => `mysql://root@127.0.0.1:${port}/${encodeURIComponent(database)}`;
  let counter = 0;
  let stopped = false;
  const query = async <R>(database: string | undefined, sql: string, params: unknown[] = []): Promise<R[]> => {
    const connection = await mysql.createConnection({ host: '127.0.0.1', port, user: 'root', ...(database ? { database } : {}), timezone: 'Z' });
    try {
      await connection.query(`SET time_zone = '+00:00'`);
      const [rows] = await connection.query(sql, params);
      return rows as R[];
    } finally {
      await connection.end();
    }
  };
  return {
    port,
    url,
    async createDatabase(prefix = 'ncps') {
      const name = `${prefix.replace(/[^a-z0-9_]/gi, '_').toLowerCase()}_${process.pid}_${++counter}`;
      await query(undefined, `CREATE DATABASE \`${name}\``);
      return url(name);
    },
    query,
    async stop() {
      if (stopped) return;
      stopped = true;
      const exited = new Promise((resolve) => server!.once('exit', resolve));
      server!.kill('SIGTERM');
      await Promise.race([exited, sleep(20_000)]);
      server!.kill('SIGKILL');
      await rm(root, { recursive: true, force: true, maxRetries: 3 }).catch(() => undefined);
    },
  };
}

function readLog(file: string): string {
  try {
    return readFileSync(file, 'utf8').slice(-4000);
  } catch {
    return '(no server log)';
  }
}

async function accepting(port: number, timeoutMs: number, server: ChildProcess): Promise<boolean> {
  const mysql = require('mysql2/promise') as typeof import('mysql2/promise');
  const deadline = Date.now() + timeoutMs;
  let exited = false;
  server.once('exit', () => (exited = true));
  while (Date.now() < deadline && !exited) {
    try {
      const connection = await mysql.createConnection({ host: '127.0.0.1', port, user: 'root', connectTimeout: 2_000 });
      await connection.end();
      return true;
    } catch {
      await sleep(200);
    }
  }
  return false;
}
