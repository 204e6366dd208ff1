// Where this ncps keeps its tables when the configured database is the Go ncps's. Both programs
// name their tables alike (narinfos, nar_files, schema_migrations, …) with different columns, and
// the Go ncps must still find its own tables untouched if the operator goes back to it. So ours
// live beside them: SQLite in a file next to the Go file, PostgreSQL in a schema of their own in
// the same database. Once there, they stay there: every command finds them by the same rule.

import { existsSync } from 'node:fs';
import BetterSqlite3 from 'better-sqlite3';
import { FOREIGN_SCHEMA_MESSAGE, IncompatibleSchemaError } from './schema';

/** The PostgreSQL schema holding our tables beside a Go ncps's (which stay in theirs). */
export const SCHEMA_BESIDE_GO = 'ncps_ts';

/** Our SQLite file beside the Go ncps's file `goFile` (which is never written to). */
export function sqliteFileBesideGo(goFile: string): string {
  return `${goFile}.ncps-ts`;
}

/**
 * The SQLite file to open for the configured path: ours beside a Go file, once it exists. A Go
 * file not taken over yet is refused, so no command ever opens it for writing.
 */
export function sqliteFileInUse(configured: string): string {
  if (configured === ':memory:') return configured;
  const beside = sqliteFileBesideGo(configured);
  if (existsSync(beside)) return beside;
  if (existsSync(configured) && isGoSqliteFile(configured)) throw new IncompatibleSchemaError(FOREIGN_SCHEMA_MESSAGE);
  return configured;
}

/** Whether a SQLite file holds the Go ncps's tables (looked at read-only). */
export function isGoSqliteFile(file: string): boolean {
  let db: BetterSqlite3.Database;
  try {
    db = new BetterSqlite3(file, { readonly: true, fileMustExist: true });
  } catch {
    return false; // not ours to judge: opening it properly reports what is wrong
  }
  try {
    return looksLikeGoSchema(sqliteTables(db));
  } catch {
    return false;
  } finally {
    db.close();
  }
}

/** Tables of a SQLite database with their columns. */
export function sqliteTables(db: BetterSqlite3.Database): Map<string, Set<string>> {
  const tables = new Map<string, Set<string>>();
  for (const { name } of db.prepare<[], { name: string }>(`SELECT name FROM sqlite_master WHERE type = 'table'`).all()) {
    const columns = db.prepare<[], { name: string }>(`PRAGMA table_info("${name.replace(/"/g, '""')}")`).all();
    tables.set(name, new Set(columns.map((c) => c.name)));
  }
  return tables;
}

/** Table names the Go ncps has created in some release (ours never use `nars`, `config` or `chunks`). */
const GO_TABLES = ['narinfos', 'nars', 'nar_files', 'config', 'chunks', 'pinned_closures', 'build_trace_entries'];

/**
 * Whether tables (name → column names) are the Go ncps's: its application tables, and a
 * bookkeeping table, if any, that is not ours (ours has `compat_floor`; dbmate's has `version`,
 * goose's `version_id` and `is_applied`).
 */
export function looksLikeGoSchema(tables: ReadonlyMap<string, ReadonlySet<string>>): boolean {
  if (tables.get('schema_migrations')?.has('compat_floor')) return false;
  if (tables.has('settings') && tables.has('narinfos') && tables.get('narinfos')!.has('nar_file_id')) return false;
  return GO_TABLES.some((t) => tables.has(t));
}
