// Where this ncps keeps its tables when the configured database is the Go ncps's. Both programs
// name their tables alike (narinfos, nar_files, schema_migrations, …) with different columns, and
// the Go ncps must still find its own tables untouched if the operator goes back to it. So ours
// live beside them: SQLite in a file next to the Go file, PostgreSQL in a schema of their own in
// the same database. Once there, they stay there: every command finds them by the same rule.

import { existsSync } from 'node:fs';

/** The PostgreSQL schema holding our tables beside a Go ncps's (which stay in theirs). */
export const SCHEMA_BESIDE_GO = 'ncps_ts';

/** Our SQLite file beside the Go ncps's file `goFile` (which is never written to). */
export function sqliteFileBesideGo(goFile: string): string {
  return `${goFile}.ncps-ts`;
}

/** The SQLite file to open for the configured path: ours beside a Go file, once it exists. */
export function sqliteFileInUse(configured: string): string {
  if (configured === ':memory:') return configured;
  const beside = sqliteFileBesideGo(configured);
  return existsSync(beside) ? beside : configured;
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
