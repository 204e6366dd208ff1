// SQLite through better-sqlite3: the embedded default for a single instance. Calls are synchronous
// and take microseconds, so they are wrapped in promises only to fit the Database seam.

import { mkdirSync } from 'node:fs';
import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { NixHash, parseCompression, type NarInfo, type Compression } from '../nix';
import type { Dialect, Migration } from './migrations';
import { runMigrations, type AppliedMigration, type MigrationTarget } from '../migrate/schema';
import type { Database, NarFileRecord, PinRecord, RemovedNarFile, StoreStats } from './database';

const SQLITE_DIALECT: Dialect = {
  name: 'sqlite',
  idColumn: 'INTEGER PRIMARY KEY',
  bigint: 'INTEGER',
};

interface NarInfoRow {
  id: number;
  store_path: string;
  url: string;
  compression: string | null;
  file_hash: string | null;
  file_size: number | null;
  nar_hash: string;
  nar_size: number;
  deriver: string | null;
  system: string | null;
  ca: string | null;
  extra_fields: string | null;
  refs: string | null;
  sigs: string | null;
}

interface NarFileRow {
  name: string;
  compression: string;
  file_hash: string | null;
  file_size: number | null;
  nar_hash: string;
  nar_size: number;
  upstream_url: string | null;
  stored_at: number | null;
}

/** Accepts `sqlite:/path`, `sqlite:///path` and `sqlite://relative` forms; returns the file path. */
export function sqlitePathFromUrl(url: string): string {
  const match = /^sqlite3?:(?:\/\/)?(.*)$/.exec(url);
  if (!match || match[1] === '') throw new Error(`not a SQLite URL: ${url}`);
  const rest = match[1]!.replace(/\?.*$/, '');
  return rest === ':memory:' ? rest : path.resolve(decodeURIComponent(rest));
}

export class SqliteDatabase implements Database {
  readonly file: string;
  private readonly db: BetterSqlite3.Database;

  constructor(file: string) {
    this.file = file;
    if (file !== ':memory:') mkdirSync(path.dirname(file), { recursive: true });
    this.db = new BetterSqlite3(file);
    this.db.pragma('journal_mode = WAL');
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
    return {
      getNarInfo: db.prepare<[string], NarInfoRow>(`
        SELECT n.id, n.store_path, n.url, n.compression, n.file_hash, n.file_size, n.nar_hash,
               n.nar_size, n.deriver, n.system, n.ca, n.extra_fields,
               (SELECT group_concat(reference, ' ') FROM
                  (SELECT reference FROM narinfo_references WHERE narinfo_id = n.id ORDER BY position)) AS refs,
               (SELECT group_concat(signature, char(10)) FROM
                  (SELECT signature FROM narinfo_signatures WHERE narinfo_id = n.id ORDER BY position)) AS sigs
        FROM narinfos n WHERE n.hash = ?`),
      deleteNarInfo: db.prepare<[string]>(`DELETE FROM narinfos WHERE hash = ?`),
      upsertNarFile: db.prepare(`
        INSERT INTO nar_files (name, compression, file_hash, file_size, nar_hash, nar_size,
                               upstream_url, created_at, last_accessed_at)
        VALUES (@name, @compression, @fileHash, @fileSize, @narHash, @narSize, @upstreamUrl, @now, @now)
        ON CONFLICT (name) DO UPDATE SET
          upstream_url = COALESCE(excluded.upstream_url, nar_files.upstream_url),
          file_hash = COALESCE(nar_files.file_hash, excluded.file_hash),
          file_size = COALESCE(nar_files.file_size, excluded.file_size)
        RETURNING id`),
      insertNarInfo: db.prepare(`
        INSERT INTO narinfos (hash, store_path, url, compression, file_hash, file_size, nar_hash,
                              nar_size, deriver, system, ca, extra_fields, nar_file_id,
                              created_at, last_accessed_at)
        VALUES (@hash, @storePath, @url, @compression, @fileHash, @fileSize, @narHash, @narSize,
                @deriver, @system, @ca, @extraFields, @narFileId, @now, @now)
        RETURNING id`),
      insertReference: db.prepare(
        `INSERT INTO narinfo_references (narinfo_id, position, reference) VALUES (?, ?, ?)`,
      ),
      insertSignature: db.prepare(
        `INSERT INTO narinfo_signatures (narinfo_id, position, signature) VALUES (?, ?, ?)`,
      ),
      getNarFile: db.prepare<[string], NarFileRow>(`
        SELECT name, compression, file_hash, file_size, nar_hash, nar_size, upstream_url, stored_at
        FROM nar_files WHERE name = ?`),
      markStored: db.prepare(
        `UPDATE nar_files SET stored_at = @now, file_size = @size, last_accessed_at = @now WHERE name = @name`,
      ),
      touchNarInfo: db.prepare(
        `UPDATE narinfos SET last_accessed_at = @at WHERE hash = @hash AND last_accessed_at < @at`,
      ),
      touchNarFile: db.prepare(`
        UPDATE narinfos SET last_accessed_at = @at
        WHERE nar_file_id = (SELECT id FROM nar_files WHERE name = @name) AND last_accessed_at < @at`),
      narFileIdOf: db.prepare<[string], { nar_file_id: number | null }>(`SELECT nar_file_id FROM narinfos WHERE hash = ?`),
      deleteNarFileIfUnused: db.prepare<[number], { name: string; size: number | null; stored_at: number | null }>(`
        DELETE FROM nar_files WHERE id = ? AND NOT EXISTS (SELECT 1 FROM narinfos WHERE nar_file_id = nar_files.id)
        RETURNING name, file_size AS size, stored_at`),
      narInfosOfFile: db.prepare<[string], { hash: string }>(`
        SELECT hash FROM narinfos WHERE nar_file_id = (SELECT id FROM nar_files WHERE name = ?)`),
      deleteNarFileByName: db.prepare<[string]>(`DELETE FROM nar_files WHERE name = ?`),
      leastRecentlyUsed: db.prepare<[number], { hash: string }>(`
        WITH RECURSIVE pinned(hash) AS (
          SELECT hash FROM pins
          UNION
          SELECT substr(r.reference, 1, 32)
          FROM pinned p JOIN narinfos n ON n.hash = p.hash JOIN narinfo_references r ON r.narinfo_id = n.id
        )
        SELECT hash FROM narinfos WHERE hash NOT IN (SELECT hash FROM pinned)
        ORDER BY last_accessed_at ASC, id ASC LIMIT ?`),
      storeStats: db.prepare<[], { narinfos: number; files: number; bytes: number | null }>(`
        SELECT (SELECT count(*) FROM narinfos) AS narinfos,
               (SELECT count(*) FROM nar_files WHERE stored_at IS NOT NULL) AS files,
               (SELECT sum(file_size) FROM nar_files WHERE stored_at IS NOT NULL) AS bytes`),
      addPin: db.prepare(`INSERT INTO pins (hash, created_at) VALUES (?, ?) ON CONFLICT (hash) DO NOTHING`),
      removePin: db.prepare<[string]>(`DELETE FROM pins WHERE hash = ?`),
      listPins: db.prepare<[], { hash: string; store_path: string | null; created_at: number }>(`
        SELECT p.hash, n.store_path, p.created_at FROM pins p LEFT JOIN narinfos n ON n.hash = p.hash
        ORDER BY p.created_at, p.hash`),
      getSetting: db.prepare<[string], { value: string }>(`SELECT value FROM settings WHERE key = ?`),
      insertSetting: db.prepare(`INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING`),
    };
  }

  async migrate(): Promise<number[]> {
    const db = this.db;
    const target: MigrationTarget = {
      dialect: SQLITE_DIALECT,
      appliedMigrations: async () => {
        db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
          version INTEGER PRIMARY KEY,
          name TEXT NOT NULL,
          compat_floor INTEGER NOT NULL DEFAULT 1,
          applied_at INTEGER NOT NULL
        )`);
        return db
          .prepare<[], AppliedMigration>('SELECT version, compat_floor AS compatFloor FROM schema_migrations ORDER BY version')
          .all();
      },
      apply: async (migration: Migration, statements: string[]) => {
        // IMMEDIATE takes the write lock up front, so two processes cannot both apply it.
        db.transaction(() => {
          const already = db
            .prepare('SELECT 1 FROM schema_migrations WHERE version = ?')
            .get(migration.version);
          if (already) return;
          for (const statement of statements) db.exec(statement);
          db.prepare('INSERT INTO schema_migrations (version, name, compat_floor, applied_at) VALUES (?, ?, ?, ?)').run(
            migration.version,
            migration.name,
            migration.compatFloor,
            Date.now(),
          );
        }).immediate();
      },
    };
    return runMigrations(target);
  }

  async getNarInfo(hash: string): Promise<NarInfo | undefined> {
    const row = this.sql.getNarInfo.get(hash);
    return row ? narInfoFromRow(row) : undefined;
  }

  async putNarInfo(hash: string, narInfo: NarInfo, narFile: NarFileRecord): Promise<void> {
    const now = Date.now();
    const sql = this.sql;
    this.db.transaction(() => {
      const { id: narFileId } = sql.upsertNarFile.get({
        name: narFile.name,
        compression: narFile.compression,
        fileHash: narFile.fileHash ?? null,
        fileSize: narFile.fileSize ?? null,
        narHash: narFile.narHash,
        narSize: narFile.narSize,
        upstreamUrl: narFile.upstreamUrl ?? null,
        now,
      }) as { id: number };
      sql.deleteNarInfo.run(hash);
      const { id } = sql.insertNarInfo.get({
        hash,
        storePath: narInfo.storePath,
        url: narInfo.url,
        compression: narInfo.compressionGiven ? narInfo.compression : null,
        fileHash: narInfo.fileHash?.toNix32() ?? null,
        fileSize: narInfo.fileSize ?? null,
        narHash: narInfo.narHash.toNix32(),
        narSize: narInfo.narSize,
        deriver: narInfo.deriver ?? null,
        system: narInfo.system ?? null,
        ca: narInfo.ca ?? null,
        extraFields: narInfo.extra.length > 0 ? JSON.stringify(narInfo.extra) : null,
        narFileId,
        now,
      }) as { id: number };
      narInfo.references.forEach((ref, i) => sql.insertReference.run(id, i, ref));
      narInfo.sigs.forEach((sig, i) => sql.insertSignature.run(id, i, sig));
    }).immediate();
  }

  async getNarFile(name: string): Promise<NarFileRecord | undefined> {
    const row = this.sql.getNarFile.get(name);
    if (!row) return undefined;
    return {
      name: row.name,
      compression: row.compression,
      fileHash: row.file_hash ?? undefined,
      fileSize: row.file_size ?? undefined,
      narHash: row.nar_hash,
      narSize: row.nar_size,
      upstreamUrl: row.upstream_url ?? undefined,
      storedAt: row.stored_at ?? undefined,
    };
  }

  async markNarFileStored(name: string, size: number): Promise<void> {
    this.sql.markStored.run({ name, size, now: Date.now() });
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
        if (removed) orphanedNarFiles.push({ name: removed.name, size: removed.stored_at === null ? 0 : (removed.size ?? 0) });
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

  async leastRecentlyUsed(limit: number): Promise<string[]> {
    return this.sql.leastRecentlyUsed.all(limit).map((r) => r.hash);
  }

  async storeStats(): Promise<StoreStats> {
    const row = this.sql.storeStats.get()!;
    return { narInfoCount: row.narinfos, narFileCount: row.files, storedBytes: row.bytes ?? 0 };
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

  async getSetting(key: string): Promise<string | undefined> {
    return this.sql.getSetting.get(key)?.value;
  }

  async putSettingIfAbsent(key: string, value: string): Promise<string> {
    this.sql.insertSetting.run(key, value);
    return this.sql.getSetting.get(key)!.value;
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}

function narInfoFromRow(row: NarInfoRow): NarInfo {
  const narInfo: NarInfo = {
    storePath: row.store_path,
    url: row.url,
    compression: parseCompression(row.compression ?? undefined) as Compression,
    compressionGiven: row.compression !== null,
    narHash: NixHash.parse(row.nar_hash),
    narSize: row.nar_size,
    references: row.refs ? row.refs.split(' ') : [],
    sigs: row.sigs ? row.sigs.split('\n') : [],
    extra: row.extra_fields ? (JSON.parse(row.extra_fields) as Array<[string, string]>) : [],
  };
  if (row.file_hash !== null) narInfo.fileHash = NixHash.parse(row.file_hash);
  if (row.file_size !== null) narInfo.fileSize = row.file_size;
  if (row.deriver !== null) narInfo.deriver = row.deriver;
  if (row.system !== null) narInfo.system = row.system;
  if (row.ca !== null) narInfo.ca = row.ca;
  return narInfo;
}
