// Chooses the Database implementation from --cache-database-url.

import { existsSync } from 'node:fs';
import path from 'node:path';
import { SCHEMA_BESIDE_GO, sqliteFileBesideGo, sqliteFileInUse } from './beside-go';
import { UnsupportedDatabaseError, type Database } from './database';
import { checkSqliteWritable, SqliteDatabase } from './sqlite';

export interface PoolSettings {
  /** --cache-database-pool-max-open-conns (0: the default). */
  maxOpenConns: number;
  /** --cache-database-pool-max-idle-conns (0: the default). */
  maxIdleConns: number;
}

export type DatabaseKind = 'sqlite' | 'postgres';

/** Which engine a URL names; throws UnsupportedDatabaseError for anything else. */
export function databaseKind(url: string): DatabaseKind {
  if (/^sqlite3?:/i.test(url)) return 'sqlite';
  if (/^postgres(ql)?:\/\//i.test(url)) return 'postgres';
  if (/^mysql(\+unix)?:/i.test(url)) {
    throw new UnsupportedDatabaseError(
      'MySQL is not supported as this ncps\'s database; use SQLite or PostgreSQL (a Go ncps MySQL database is taken over with --go-database-url)',
    );
  }
  throw new UnsupportedDatabaseError(
    `unsupported database URL "${redactDatabaseUrl(url)}": expected sqlite:/path/to/db.sqlite, ` +
      'postgres://user@host/dbname or postgresql:///dbname?host=/run/postgresql',
  );
}

/** Accepts `sqlite:/path`, `sqlite:///path` and `sqlite://relative` forms; returns the file path. */
export function sqlitePathFromUrl(url: string): string {
  const match = /^sqlite3?:(?:\/\/)?(.*)$/.exec(url);
  if (!match || match[1] === '') throw new Error(`not a SQLite URL: ${url}`);
  const rest = match[1]!.replace(/\?.*$/, '');
  return rest === ':memory:' ? rest : path.resolve(decodeURIComponent(rest));
}

/**
 * Fails with a message naming the file when the URL names an existing SQLite database that
 * cannot be written (see checkSqliteWritable). A PostgreSQL database says so itself, per write.
 */
export function checkDatabaseWritable(url: string): void {
  const file = sqliteFileOf(url);
  if (file) checkSqliteWritable(file);
}

/** The SQLite file a URL names; undefined for any other URL. */
export function sqliteFileOf(url: string): string | undefined {
  return /^sqlite3?:/i.test(url) ? sqlitePathFromUrl(url) : undefined;
}

export interface OpenOptions {
  /**
   * Open (creating) our tables beside a Go ncps's in that database: what a takeover writes into.
   * Without it, they are used when they exist (see beside-go.ts), else the URL's own place.
   */
  besideGo?: boolean;
}

/**
 * Opens the database a URL names: `sqlite:`/`sqlite3:` for the embedded SQLite file, or
 * `postgres://`/`postgresql://` (TCP or a unix socket directory given as `?host=/dir`).
 * Nothing is connected yet; call migrate() next.
 */
export function openDatabase(url: string, pool: PoolSettings, options: OpenOptions = {}): Database {
  switch (databaseKind(url)) {
    case 'sqlite': {
      const file = sqlitePathFromUrl(url);
      return new SqliteDatabase(options.besideGo ? sqliteFileBesideGo(file) : sqliteFileInUse(file));
    }
    case 'postgres': {
      // Loaded on demand: a SQLite instance never needs the PostgreSQL client in memory.
      const { PostgresDatabase } = require('./postgres') as typeof import('./postgres');
      return new PostgresDatabase(url, {
        maxOpenConns: pool.maxOpenConns,
        maxIdleConns: pool.maxIdleConns,
        schema: options.besideGo ? SCHEMA_BESIDE_GO : 'beside-go-if-present',
      });
    }
  }
}

/** Where the database a URL names keeps our tables (for logs): the SQLite file, or the URL. */
export function describeDatabaseInUse(url: string): string {
  if (databaseKind(url) === 'sqlite') {
    const beside = sqliteFileBesideGo(sqlitePathFromUrl(url));
    return existsSync(beside) ? `sqlite:${beside}` : redactDatabaseUrl(url);
  }
  return redactDatabaseUrl(url);
}

/**
 * The URL with any password replaced by `***`, for logs and error messages: the one in
 * `scheme://user:password@host` and a `password=` query parameter.
 */
export function redactDatabaseUrl(url: string): string {
  let result = url;
  const scheme = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.exec(result);
  if (scheme) {
    const start = scheme[0].length;
    const rest = result.slice(start);
    // The user info ends at the last '@' before the query, so a password holding an unescaped
    // '@' or '/' is still masked whole.
    const queryAt = rest.search(/[?#]/);
    const head = queryAt < 0 ? rest : rest.slice(0, queryAt);
    const at = head.lastIndexOf('@');
    if (at >= 0) {
      const userInfo = head.slice(0, at);
      const colon = userInfo.indexOf(':');
      if (colon >= 0) {
        result = result.slice(0, start) + userInfo.slice(0, colon) + ':***' + result.slice(start + at);
      }
    }
  }
  return result.replace(/([?&]password=)[^&#]*/gi, '$1***');
}
