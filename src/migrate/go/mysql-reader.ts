// The Go ncps's MySQL/MariaDB database, read in a read-only session. This ncps does not serve
// from MySQL: a takeover copies what is there into its own SQLite or PostgreSQL database.

import type { Connection, ConnectionOptions } from 'mysql2/promise';
import { redactDatabaseUrl } from '../../db/open';
import type { SqlDriver } from './source';

/**
 * Connection settings from the URL forms the Go ncps accepts: `mysql://user:pass@host:port/db`,
 * a socket as `?socket=`, `?unix_socket=` or `?host=/path`, or `mysql+unix:///path/to/socket/db`.
 */
export function mysqlConnectionOptions(url: string): ConnectionOptions {
  const unix = /^mysql\+unix:\/\/(?:([^:@/]*)(?::([^@/]*))?@)?(\/.*)\/([^/?]+)(?:\?.*)?$/i.exec(url);
  if (unix) {
    return {
      user: decodeURIComponent(unix[1] ?? ''),
      password: decodeURIComponent(unix[2] ?? ''),
      socketPath: decodeURIComponent(unix[3]!),
      database: decodeURIComponent(unix[4]!),
    };
  }
  const parsed = new URL(url);
  const options: ConnectionOptions = {
    user: decodeURIComponent(parsed.username),
    password: decodeURIComponent(parsed.password),
    database: decodeURIComponent(parsed.pathname.replace(/^\//, '')),
  };
  const socket = parsed.searchParams.get('socket') ?? parsed.searchParams.get('unix_socket') ?? parsed.searchParams.get('host');
  if (socket?.startsWith('/')) {
    options.socketPath = socket;
  } else {
    options.host = parsed.hostname || '127.0.0.1';
    options.port = parsed.port ? Number(parsed.port) : 3306;
  }
  if (!options.database) throw new Error(`the MySQL URL ${redactDatabaseUrl(url)} names no database`);
  return options;
}

export async function openMysqlReader(url: string): Promise<SqlDriver> {
  const mysql = require('mysql2/promise') as typeof import('mysql2/promise');
  // The Go ncps writes its times in UTC; read them as such.
  const connection: Connection = await mysql.createConnection({
    ...mysqlConnectionOptions(url),
    timezone: 'Z',
    supportBigNumbers: true,
    connectTimeout: 30_000,
  });
  connection.on('error', () => undefined);
  try {
    await connection.query(`SET time_zone = '+00:00'`);
    await connection.query('SET SESSION TRANSACTION READ ONLY');
  } catch (error) {
    await connection.end().catch(() => undefined);
    throw error;
  }
  return {
    engine: 'mysql',
    describe: redactDatabaseUrl(url),
    q: (name) => `\`${name.replace(/`/g, '``')}\``,
    all: async <T>(sql: string, params: readonly unknown[] = []) => {
      const [rows] = await connection.query(sql, [...params]);
      return rows as T[];
    },
    tables: async () => {
      const [rows] = await connection.query(
        `SELECT TABLE_NAME AS t, COLUMN_NAME AS c FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()`,
      );
      const tables = new Map<string, Set<string>>();
      for (const r of rows as Array<{ t: string; c: string }>) {
        if (!tables.has(r.t)) tables.set(r.t, new Set());
        tables.get(r.t)!.add(r.c);
      }
      return tables;
    },
    // MySQL does not say which program a connection belongs to: any other connection to this
    // database may be a Go ncps still running (this ncps opens only this one).
    liveClients: async () => {
      const [rows] = await connection.query(
        `SELECT ID AS id, USER AS user, HOST AS host, COMMAND AS command, TIME AS time FROM information_schema.PROCESSLIST
         WHERE DB = DATABASE() AND ID <> CONNECTION_ID()`,
      );
      return (rows as Array<{ id: number; user: string; host: string; command: string; time: number }>).map((r) => ({
        description: `connection ${r.id} of ${r.user}@${r.host} (${r.command}, ${r.time} s)`,
      }));
    },
    close: async () => {
      await connection.end().catch(() => undefined);
    },
  };
}
