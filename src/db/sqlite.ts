// SQLite through better-sqlite3: the embedded default for a single instance. Calls are synchronous
// and take microseconds, so they are wrapped in promises only to fit the Database seam.

import { accessSync, constants, existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import type { NarInfo } from '../nix';
import type { Dialect, Migration } from './migrations';
import {
  cachedPathFromRow,
  leaseFromRow,
  narFileColumns,
  narFileEntryFromRow,
  narFileFromRow,
  narInfoColumns,
  narInfoEntryFromRow,
  narInfoFromRow,
  removedNarFileFromRow,
  type CachedPathRow,
  type LeaseRow,
  type NarFileEntryRow,
  type NarFileRow,
  type NarInfoEntryRow,
  type NarInfoRow,
  type RemovedNarFileRow,
} from './rows';
import { SQLITE_QUERIES } from './sqlite-queries';
import {
  FOREIGN_SCHEMA_MESSAGE,
  IncompatibleSchemaError,
  runMigrations,
  schemaStatus,
  type AppliedMigration,
  type MigrateOptions,
  type MigrationTarget,
  type SchemaStatus,
} from './schema';
import type {
  AuxFileKey,
  AuxFileRecord,
  CachedPath,
  CachedPathOrder,
  CachedPathQuery,
  Database,
  ImportedNarInfo,
  NarFileEntry,
  NarFileRecord,
  NarInfoEntry,
  PinRecord,
  RemovedNarFile,
  ServerLease,
  StoreStats,
} from './database';

/** Backups of the database taken before migrations that are kept. */
export const KEPT_BACKUPS = 3;

const SQLITE_DIALECT: Dialect = {
  name: 'sqlite',
  idColumn: 'INTEGER PRIMARY KEY',
  bigint: 'INTEGER',
};

/** The parameters of the cachedPaths statements (see sqlite-queries.ts). */
type CachedPathParams = { pinnedOnly: number; match: string | null; limit: number };

/** SQLite aggregates references and signatures into one string each (group_concat). */
type SqliteNarInfoRow = Omit<NarInfoRow, 'refs' | 'sigs'> & { refs: string | null; sigs: string | null };
type SqliteNarInfoEntryRow = Omit<NarInfoEntryRow, 'refs' | 'sigs'> & { refs: string | null; sigs: string | null };

function splitLists<T extends { refs: string | null; sigs: string | null }>(row: T): Omit<T, 'refs' | 'sigs'> & { refs: string[]; sigs: string[] } {
  return { ...row, refs: row.refs ? row.refs.split(' ') : [], sigs: row.sigs ? row.sigs.split('\n') : [] };
}

export class SqliteDatabase implements Database {
  readonly file: string;
  private readonly db: BetterSqlite3.Database;

  constructor(file: string) {
    this.file = file;
    if (file !== ':memory:') mkdirSync(path.dirname(file), { recursive: true });
    try {
      this.db = new BetterSqlite3(file);
      this.db.pragma('journal_mode = WAL');
    } catch (error) {
      // SQLite says only "unable to open database file": name the file and the usual causes.
      const code = (error as { code?: string }).code ?? '';
      if (code === 'SQLITE_CANTOPEN' || code.startsWith('SQLITE_READONLY') || code.startsWith('SQLITE_IOERR')) {
        throw Object.assign(
          new Error(`cannot open the SQLite database ${file} for writing: ${(error as Error).message} (read-only file or file system, or a directory ncps may not write to: SQLite needs to create ${path.basename(file)}-wal and -shm beside it)`),
          { code },
        );
      }
      throw error;
    }
    this.db.pragma('busy_timeout = 10000');
    this.db.pragma('foreign_keys = ON');
    // WAL with NORMAL sync is durable across application crashes, which is what a cache needs.
    this.db.pragma('synchronous = NORMAL');
  }

  private prepared?: ReturnType<SqliteDatabase['prepare']>;

  /** Statements are prepared after migrations, since they need the tables. */
  private get sql(): ReturnType<SqliteDatabase['prepare']> {
    this.prepared ??= this.prepare();
    return this.prepared;
  }

  private prepare() {
    const db = this.db;
    const q = SQLITE_QUERIES;
    return {
      getNarInfo: db.prepare<[string], SqliteNarInfoRow>(q.getNarInfo),
      deleteNarInfo: db.prepare<[string]>(q.deleteNarInfo),
      upsertNarFile: db.prepare(q.upsertNarFile),
      insertNarInfo: db.prepare(q.insertNarInfo),
      insertReference: db.prepare(q.insertReference),
      insertSignature: db.prepare(q.insertSignature),
      getNarFile: db.prepare<[string], NarFileRow>(q.getNarFile),
      markStored: db.prepare(q.markStored),
      touchNarInfo: db.prepare(q.touchNarInfo),
      touchNarFile: db.prepare(q.touchNarFile),
      narFileIdOf: db.prepare<[string], { nar_file_id: number | null }>(q.narFileIdOf),
      deleteNarFileIfUnused: db.prepare<[number], RemovedNarFileRow>(q.deleteNarFileIfUnused),
      narInfosOfFile: db.prepare<[string], { hash: string }>(q.narInfosOfFile),
      deleteNarFileByName: db.prepare<[string]>(q.deleteNarFileByName),
      createdAt: db.prepare<[], { value: number | null }>(q.createdAt),
      knownNarFiles: db.prepare<[string], { value: string }>(q.knownNarFiles),
      knownNarInfos: db.prepare<[string], { value: string }>(q.knownNarInfos),
      leastRecentlyUsedNarInfos: db.prepare<[number], { hash: string; last_accessed_at: number }>(q.leastRecentlyUsedNarInfos),
      storeStats: db.prepare<[], { narinfos: number; files: number; bytes: number | null; aux_bytes: number | null }>(q.storeStats),
      putAuxFile: db.prepare(q.putAuxFile),
      touchAuxFile: db.prepare(q.touchAuxFile),
      deleteAuxFile: db.prepare(q.deleteAuxFile),
      leastRecentlyUsedAuxFiles: db.prepare<[number], { kind: string; name: string; size: number; last_accessed_at: number }>(q.leastRecentlyUsedAuxFiles),
      addPin: db.prepare(q.addPin),
      removePin: db.prepare<[string]>(q.removePin),
      listPins: db.prepare<[], { hash: string; store_path: string | null; created_at: number }>(q.listPins),
      renewLease: db.prepare(q.renewLease),
      removeLease: db.prepare<[string]>(q.removeLease),
      liveLeases: db.prepare<[number], LeaseRow>(q.liveLeases),
      narInfoPage: db.prepare<[number, number], SqliteNarInfoEntryRow>(q.narInfoPage),
      narFilePage: db.prepare<[number, number], NarFileEntryRow>(q.narFilePage),
      auxFilePage: db.prepare<[{ kind: string; name: string; limit: number }], AuxFileRecord>(q.auxFilePage),
      recordCounts: db.prepare<[], { narinfos: number; nar_files: number; aux_files: number }>(q.recordCounts),
      markVerified: db.prepare(q.markVerified),
      narInfoIdOf: db.prepare<[string], { id: number }>(q.narInfoIdOf),
      deleteSignatures: db.prepare<[number]>(q.deleteSignatures),
      deleteUnusedNarFileByName: db.prepare<[{ name: string }], RemovedNarFileRow>(q.deleteUnusedNarFileByName),
      getSetting: db.prepare<[string], { value: string }>(q.getSetting),
      insertSetting: db.prepare(q.insertSetting),
      putSetting: db.prepare(q.putSetting),
      importNarFile: db.prepare(q.importNarFile),
      importNarInfo: db.prepare(q.importNarInfo),
      cachedPaths: {
        accessed: db.prepare<[CachedPathParams], CachedPathRow>(q.cachedPathsByAccess),
        size: db.prepare<[CachedPathParams], CachedPathRow>(q.cachedPathsBySize),
        path: db.prepare<[CachedPathParams], CachedPathRow>(q.cachedPathsByPath),
      } satisfies Record<CachedPathOrder, unknown>,
    };
  }


  private migrationTarget(): MigrationTarget {
    const db = this.db;
    const bookkeeping = `CREATE TABLE IF NOT EXISTS schema_migrations (
      version INTEGER PRIMARY KEY,
      name TEXT NOT NULL,
      compat_floor INTEGER NOT NULL DEFAULT 1,
      applied_at INTEGER NOT NULL
    )`;
    return {
      dialect: SQLITE_DIALECT,
      appliedMigrations: async () => {
        const exists = db.prepare(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'`).get();
        if (!exists) return [];
        const columns = db.prepare<[], { name: string }>(`PRAGMA table_info(schema_migrations)`).all().map((c) => c.name);
        if (!columns.includes('compat_floor')) throw new IncompatibleSchemaError(FOREIGN_SCHEMA_MESSAGE);
        return db
          .prepare<[], AppliedMigration>('SELECT version, compat_floor AS compatFloor FROM schema_migrations ORDER BY version')
          .all();
      },
      beforeApplying: async (_pending, applied) => {
        const from = Math.max(...applied.map((m) => m.version));
        this.lastBackup = await this.backup(from);
      },
      apply: async (migration: Migration, statements: string[]) => {
        // IMMEDIATE takes the write lock up front, so two processes cannot both apply it.
        return db.transaction(() => {
          db.exec(bookkeeping);
          const already = db.prepare('SELECT 1 FROM schema_migrations WHERE version = ?').get(migration.version);
          if (already) return false;
          for (const statement of statements) db.exec(statement);
          db.prepare('INSERT INTO schema_migrations (version, name, compat_floor, applied_at) VALUES (?, ?, ?, ?)').run(
            migration.version,
            migration.name,
            migration.compatFloor,
            Date.now(),
          );
          return true;
        }).immediate();
      },
    };
  }

  /** Path of the backup taken before the last migration run, if one was needed. */
  lastBackup: string | undefined;

  async migrate(options: MigrateOptions = {}): Promise<number[]> {
    return runMigrations(this.migrationTarget(), options);
  }

  async schemaStatus(): Promise<SchemaStatus> {
    return schemaStatus(this.migrationTarget());
  }

  /**
   * A consistent copy of the database next to it (`<db>.backup-v<schema>-<time>`), taken before
   * migrating; the newest few are kept. Restoring is copying one back while ncps is stopped.
   */
  async backup(schemaVersion: number): Promise<string | undefined> {
    if (this.file === ':memory:') return undefined;
    const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
    const target = `${this.file}.backup-v${schemaVersion}-${stamp}`;
    this.db.prepare('VACUUM INTO ?').run(target);
    const dir = path.dirname(this.file);
    const prefix = `${path.basename(this.file)}.backup-v`;
    const backups = readdirSync(dir)
      .filter((f) => f.startsWith(prefix))
      .map((f) => ({ f, mtime: statSync(path.join(dir, f)).mtimeMs }))
      .sort((x, y) => y.mtime - x.mtime || y.f.localeCompare(x.f));
    for (const old of backups.slice(KEPT_BACKUPS)) rmSync(path.join(dir, old.f), { force: true });
    return target;
  }

  async getNarInfo(hash: string): Promise<NarInfo | undefined> {
    const row = this.sql.getNarInfo.get(hash);
    if (!row) return undefined;
    return narInfoFromRow(splitLists(row));
  }

  async putNarInfo(hash: string, narInfo: NarInfo, narFile: NarFileRecord): Promise<RemovedNarFile[]> {
    const now = Date.now();
    const sql = this.sql;
    return this.db.transaction(() => {
      const previous = sql.narFileIdOf.get(hash)?.nar_file_id ?? null;
      const { id: narFileId } = sql.upsertNarFile.get({ ...narFileColumns(narFile), now }) as { id: number };
      sql.deleteNarInfo.run(hash);
      const { id } = sql.insertNarInfo.get({ hash, ...narInfoColumns(narInfo), narFileId, now }) as { id: number };
      narInfo.references.forEach((ref, i) => sql.insertReference.run(id, i, ref));
      narInfo.sigs.forEach((sig, i) => sql.insertSignature.run(id, i, sig));
      const orphaned: RemovedNarFile[] = [];
      if (previous !== null && previous !== narFileId) {
        const removed = sql.deleteNarFileIfUnused.get(previous);
        if (removed) orphaned.push(removedNarFileFromRow(removed));
      }
      return orphaned;
    }).immediate();
  }

  async getNarFile(name: string): Promise<NarFileRecord | undefined> {
    const row = this.sql.getNarFile.get(name);
    if (!row) return undefined;
    return narFileFromRow(row);
  }

  async markNarFileStored(name: string, size: number): Promise<boolean> {
    return this.sql.markStored.run({ name, size, now: Date.now() }).changes > 0;
  }

  async touchNarInfos(hashes: readonly string[], at: number): Promise<void> {
    const touch = this.sql.touchNarInfo;
    this.db.transaction(() => {
      for (const hash of hashes) touch.run({ hash, at });
    })();
  }

  async touchNarFiles(names: readonly string[], at: number): Promise<void> {
    const touch = this.sql.touchNarFile;
    this.db.transaction(() => {
      for (const name of names) touch.run({ name, at });
    })();
  }

  async deleteNarInfo(hash: string): Promise<{ deleted: boolean; orphanedNarFiles: RemovedNarFile[] }> {
    const sql = this.sql;
    return this.db.transaction(() => {
      const row = sql.narFileIdOf.get(hash);
      if (!row) return { deleted: false, orphanedNarFiles: [] };
      sql.deleteNarInfo.run(hash);
      const orphanedNarFiles: RemovedNarFile[] = [];
      if (row.nar_file_id !== null) {
        const removed = sql.deleteNarFileIfUnused.get(row.nar_file_id);
        if (removed) orphanedNarFiles.push(removedNarFileFromRow(removed));
      }
      return { deleted: true, orphanedNarFiles };
    }).immediate();
  }

  async deleteNarFile(name: string): Promise<string[]> {
    const sql = this.sql;
    return this.db.transaction(() => {
      const hashes = sql.narInfosOfFile.all(name).map((r) => r.hash);
      for (const hash of hashes) sql.deleteNarInfo.run(hash);
      sql.deleteNarFileByName.run(name);
      return hashes;
    }).immediate();
  }

  async createdAt(): Promise<number | undefined> {
    return this.sql.createdAt.get()?.value ?? undefined;
  }

  async knownNarFiles(names: readonly string[]): Promise<Set<string>> {
    return new Set(this.sql.knownNarFiles.all(JSON.stringify(names)).map((r) => r.value));
  }

  async knownNarInfos(hashes: readonly string[]): Promise<Set<string>> {
    return new Set(this.sql.knownNarInfos.all(JSON.stringify(hashes)).map((r) => r.value));
  }

  async leastRecentlyUsed(limit: number): Promise<string[]> {
    return (await this.leastRecentlyUsedNarInfos(limit)).map((r) => r.hash);
  }

  async leastRecentlyUsedNarInfos(limit: number): Promise<Array<{ hash: string; lastAccessedAt: number }>> {
    return this.sql.leastRecentlyUsedNarInfos.all(limit).map((r) => ({ hash: r.hash, lastAccessedAt: r.last_accessed_at }));
  }

  async putAuxFile(file: AuxFileRecord): Promise<void> {
    this.sql.putAuxFile.run({ kind: file.kind, name: file.name, size: file.size, at: Date.now() });
  }

  async touchAuxFiles(files: readonly AuxFileKey[], at: number): Promise<void> {
    const touch = this.sql.touchAuxFile;
    this.db.transaction(() => {
      for (const { kind, name } of files) touch.run({ kind, name, at });
    })();
  }

  async deleteAuxFile(file: AuxFileKey): Promise<void> {
    this.sql.deleteAuxFile.run({ kind: file.kind, name: file.name });
  }

  async leastRecentlyUsedAuxFiles(limit: number): Promise<Array<AuxFileRecord & { lastAccessedAt: number }>> {
    return this.sql.leastRecentlyUsedAuxFiles.all(limit).map((r) => ({ kind: r.kind, name: r.name, size: r.size, lastAccessedAt: r.last_accessed_at }));
  }

  async checkWritable(): Promise<void> {
    // A write that changes nothing: it fails on a read-only file or file system like any write
    // would. Another process holding the write lock (busy) is not a failure, and is not waited for.
    const timeout = this.db.pragma('busy_timeout', { simple: true }) as number;
    this.db.pragma('busy_timeout = 0');
    try {
      this.db.prepare('UPDATE settings SET value = value WHERE 0').run();
    } catch (error) {
      if ((error as { code?: string }).code !== 'SQLITE_BUSY') throw error;
    } finally {
      this.db.pragma(`busy_timeout = ${timeout}`);
    }
  }

  async storeStats(): Promise<StoreStats> {
    const row = this.sql.storeStats.get()!;
    return { narInfoCount: row.narinfos, narFileCount: row.files, storedBytes: row.bytes ?? 0, auxBytes: row.aux_bytes ?? 0 };
  }

  async addPin(hash: string, at: number): Promise<void> {
    this.sql.addPin.run(hash, at);
  }

  async removePin(hash: string): Promise<boolean> {
    return this.sql.removePin.run(hash).changes > 0;
  }

  async listPins(): Promise<PinRecord[]> {
    return this.sql.listPins.all().map((r) => ({ hash: r.hash, storePath: r.store_path ?? undefined, createdAt: r.created_at }));
  }

  async renewLease(lease: ServerLease): Promise<void> {
    this.sql.renewLease.run(lease);
  }

  async removeLease(instanceId: string): Promise<void> {
    this.sql.removeLease.run(instanceId);
  }

  async liveLeases(since: number): Promise<ServerLease[]> {
    return this.sql.liveLeases.all(since).map(leaseFromRow);
  }

  async narInfoPage(afterId: number, limit: number): Promise<NarInfoEntry[]> {
    return this.sql.narInfoPage.all(afterId, limit).map((row) => narInfoEntryFromRow(splitLists(row)));
  }

  async narFilePage(afterId: number, limit: number): Promise<NarFileEntry[]> {
    return this.sql.narFilePage.all(afterId, limit).map(narFileEntryFromRow);
  }

  async auxFilePage(after: AuxFileKey | undefined, limit: number): Promise<AuxFileRecord[]> {
    return this.sql.auxFilePage.all({ kind: after?.kind ?? '', name: after?.name ?? '', limit }).map((r) => ({ kind: r.kind, name: r.name, size: r.size }));
  }

  async recordCounts(): Promise<{ narInfos: number; narFiles: number; auxFiles: number }> {
    const row = this.sql.recordCounts.get()!;
    return { narInfos: row.narinfos, narFiles: row.nar_files, auxFiles: row.aux_files };
  }

  async *cachedPaths(query: CachedPathQuery, pageSize: number): AsyncGenerator<CachedPath[]> {
    // iterate() steps through the result as it is read; leaving the loop early (the reader went
    // away) resets the statement, which ends its read.
    const rows = this.sql.cachedPaths[query.order].iterate({
      pinnedOnly: query.pinnedOnly ? 1 : 0,
      match: query.match ?? null,
      limit: query.limit ?? -1,
    });
    let page: CachedPath[] = [];
    for (const row of rows) {
      page.push(cachedPathFromRow(row));
      if (page.length >= pageSize) {
        yield page;
        page = [];
      }
    }
    if (page.length > 0) yield page;
  }

  async markNarFileVerified(name: string, at: number): Promise<void> {
    this.sql.markVerified.run({ name, at });
  }

  async setNarInfoSignatures(hash: string, sigs: readonly string[]): Promise<boolean> {
    const sql = this.sql;
    return this.db.transaction(() => {
      const row = sql.narInfoIdOf.get(hash);
      if (!row) return false;
      sql.deleteSignatures.run(row.id);
      sigs.forEach((sig, i) => sql.insertSignature.run(row.id, i, sig));
      return true;
    }).immediate();
  }

  async deleteNarFileIfUnused(name: string): Promise<RemovedNarFile | undefined> {
    const row = this.sql.deleteUnusedNarFileByName.get({ name });
    return row ? removedNarFileFromRow(row) : undefined;
  }

  async getSetting(key: string): Promise<string | undefined> {
    return this.sql.getSetting.get(key)?.value;
  }

  async putSettingIfAbsent(key: string, value: string): Promise<string> {
    this.sql.insertSetting.run(key, value);
    return this.sql.getSetting.get(key)!.value;
  }

  async putSetting(key: string, value: string): Promise<void> {
    this.sql.putSetting.run(key, value);
  }

  async importNarInfos(entries: readonly ImportedNarInfo[]): Promise<number> {
    const sql = this.sql;
    return this.db.transaction(() => {
      let inserted = 0;
      for (const entry of entries) {
        const { narInfo, narFile } = entry;
        const { id: narFileId } = sql.importNarFile.get({
          ...narFileColumns(narFile),
          storedAt: narFile.storedAt ?? null,
          createdAt: entry.narFileCreatedAt,
          lastAccessedAt: entry.narFileLastAccessedAt,
        }) as { id: number };
        const row = sql.importNarInfo.get({
          hash: entry.hash,
          ...narInfoColumns(narInfo),
          narFileId,
          createdAt: entry.createdAt,
          lastAccessedAt: entry.lastAccessedAt,
        }) as { id: number } | undefined;
        if (!row) continue;
        narInfo.references.forEach((ref, i) => sql.insertReference.run(row.id, i, ref));
        narInfo.sigs.forEach((sig, i) => sql.insertSignature.run(row.id, i, sig));
        inserted++;
      }
      return inserted;
    }).immediate();
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}

/**
 * Fails with a message naming the file when an existing SQLite database cannot be written (a
 * read-only file, directory or file system): SQLite itself says only "unable to open database
 * file", or opens it read-only and fails every write later.
 */
export function checkSqliteWritable(file: string): void {
  if (file === ':memory:' || !existsSync(file)) return;
  for (const target of [file, path.dirname(file)]) {
    try {
      accessSync(target, constants.W_OK);
    } catch (error) {
      throw new Error(
        `the SQLite database ${file} cannot be written (${(error as NodeJS.ErrnoException).code ?? (error as Error).message} on ${target}): ncps writes it and creates ${path.basename(file)}-wal and -shm beside it`,
      );
    }
  }
}
