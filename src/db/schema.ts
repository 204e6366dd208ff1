// Runs the shared migration set against any engine that can say which versions it has and apply
// one migration atomically. Engines differ only in the Dialect and in how they run SQL.

import { MIGRATIONS, type Dialect, type Migration } from './migrations';

export interface AppliedMigration {
  version: number;
  compatFloor: number;
}

/** The database was migrated by a newer ncps that no longer supports this one. */
export class IncompatibleSchemaError extends Error {}

/** A schema_migrations table that is not ours: most likely a database of the Go ncps. */
export const FOREIGN_SCHEMA_MESSAGE =
  'this database has a schema_migrations table that ncps-ts did not write. If it is a Go ncps database, ncps serve and ' +
  'ncps migrate up take it over, leaving its tables as they are (ncps migrate from-go --dry-run shows what they would take); ' +
  'otherwise point --cache-database-url at another database.';

export interface MigrationTarget {
  dialect: Dialect;
  /** Creates the bookkeeping table when missing and lists the migrations applied. */
  appliedMigrations(): Promise<AppliedMigration[]>;
  /**
   * Runs the statements and records the version in one transaction. Returns false when another
   * process applied it meanwhile (so nothing ran here).
   */
  apply(migration: Migration, statements: string[]): Promise<boolean | void>;
  /** Called once before the first pending migration of an existing database (SQLite backs up here). */
  beforeApplying?(pending: readonly Migration[], applied: readonly AppliedMigration[]): Promise<void>;
}

export interface MigrateOptions {
  /** Report what would run without changing anything. */
  dryRun?: boolean;
}

export interface SchemaStatus {
  applied: AppliedMigration[];
  pending: Migration[];
  /** Newest schema version this release knows. */
  known: number;
}

export const KNOWN_SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]?.version ?? 0;

export function pendingMigrations(applied: readonly AppliedMigration[]): Migration[] {
  const done = new Set(applied.map((m) => m.version));
  return MIGRATIONS.filter((m) => !done.has(m.version));
}

/**
 * Refuses a database that a newer ncps migrated past what this release can work with. A newer
 * schema whose floor is at or below ours is fine: expand-only migrations keep old code working.
 */
export function checkCompatibility(applied: readonly AppliedMigration[], known: number): void {
  const newest = Math.max(0, ...applied.map((m) => m.version));
  const floor = Math.max(0, ...applied.map((m) => m.compatFloor));
  if (newest > known && floor > known) {
    throw new IncompatibleSchemaError(
      `the database schema is at version ${newest}, migrated by a newer ncps that needs at least schema ${floor}; ` +
        `this ncps knows schema ${known}. Upgrade ncps, or restore the database backup taken before the upgrade.`,
    );
  }
}

export async function schemaStatus(target: MigrationTarget): Promise<SchemaStatus> {
  const applied = await target.appliedMigrations();
  return { applied, pending: pendingMigrations(applied), known: KNOWN_SCHEMA_VERSION };
}

/** Applies pending migrations in order; returns their versions (those that would run, when dry). */
export async function runMigrations(target: MigrationTarget, options: MigrateOptions = {}): Promise<number[]> {
  const { applied, pending } = await schemaStatus(target);
  checkCompatibility(applied, KNOWN_SCHEMA_VERSION);
  if (options.dryRun || pending.length === 0) return pending.map((m) => m.version);
  if (applied.length > 0) await target.beforeApplying?.(pending, applied);
  const ran: number[] = [];
  for (const migration of pending) {
    const applied = await target.apply(migration, migration.statements(target.dialect));
    if (applied !== false) ran.push(migration.version);
  }
  return ran;
}
