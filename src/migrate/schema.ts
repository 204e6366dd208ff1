// Runs the shared migration set against any engine that can say which versions it has and apply
// one migration atomically. Engines differ only in the Dialect and in how they run SQL.

import { MIGRATIONS, type Dialect, type Migration } from '../db/migrations';

export interface MigrationTarget {
  dialect: Dialect;
  /** Creates the bookkeeping table when missing and lists the versions applied. */
  appliedVersions(): Promise<number[]>;
  /** Runs the statements and records the version in one transaction. */
  apply(migration: Migration, statements: string[]): Promise<void>;
}

export function pendingMigrations(applied: readonly number[]): Migration[] {
  const done = new Set(applied);
  return MIGRATIONS.filter((m) => !done.has(m.version));
}

export async function runMigrations(target: MigrationTarget): Promise<number[]> {
  const applied = await target.appliedVersions();
  const newest = Math.max(0, ...applied);
  const known = MIGRATIONS[MIGRATIONS.length - 1]?.version ?? 0;
  if (newest > known) {
    // A newer ncps migrated this database. Expand-only migrations keep older releases able to
    // read it, so carry on; the newer release owns the schema from here.
    return [];
  }
  const ran: number[] = [];
  for (const migration of pendingMigrations(applied)) {
    await target.apply(migration, migration.statements(target.dialect));
    ran.push(migration.version);
  }
  return ran;
}
