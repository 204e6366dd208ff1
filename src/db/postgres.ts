// PostgreSQL through node-postgres: the shared database when several ncps instances serve one
// cache. Semantics match SqliteDatabase method for method; where SQLite relies on its single
// writer lock, this relies on row locks, upserts and advisory locks instead.

import pg from 'pg';
import type { NarInfo } from '../nix';
import type { Dialect, Migration } from './migrations';
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
import { SCHEMA_BESIDE_GO } from './beside-go';
import { CACHED_PATH_ROWS, PINNED_CLOSURE } from './shared-sql';
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

export const POSTGRES_DIALECT: Dialect = {
  name: 'postgres',
  idColumn: 'BIGSERIAL PRIMARY KEY',
  bigint: 'BIGINT',
};

/**
 * Session advisory lock held while migrating, so instances starting together migrate one after
 * the other and the later ones find the work done. The value is "ncps" in ASCII.
 */
export const MIGRATION_LOCK_KEY = 0x6e637073;

const INT8_OID = 20;

/**
 * node-postgres returns BIGINT as a string because it may exceed 2^53. Ours are sizes, counts,
 * ids and millisecond timestamps, far below that, so they become numbers. Set per pool, not
 * globally, to leave other users of the pg module alone.
 */
const TYPES: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') => {
    if (oid === INT8_OID && format !== 'binary') return (value: string) => Number(value);
    return pg.types.getTypeParser(oid, format);
  }) as pg.CustomTypesConfig['getTypeParser'],
};

/** Errors worth running a transaction again for: a deadlock or a serialization failure. */
const RETRYABLE = new Set(['40P01', '40001']);
const MAX_ATTEMPTS = 3;

export interface PostgresOptions {
  /** Most connections open at once (0: 10). */
  maxOpenConns?: number;
  /**
   * Idle connections kept open indefinitely (0: none). Idle connections beyond this are closed
   * after IDLE_TIMEOUT_MS; node-postgres cannot close them the moment they go idle.
   */
  maxIdleConns?: number;
  /** Called when an idle pooled connection fails (e.g. the server restarted). */
  onError?: (error: Error) => void;
  /**
   * The schema our tables live in: a name, or 'beside-go-if-present' (the default) for the one
   * beside a Go ncps's tables when a takeover created it, else the connection's own.
   */
  schema?: string;
}

const DEFAULT_MAX_OPEN_CONNS = 10;
const IDLE_TIMEOUT_MS = 10_000;
/** How long to wait for a connection (including a free slot in the pool) before failing. */
const CONNECT_TIMEOUT_MS = 30_000;



type Queryable = Pick<pg.PoolClient, 'query'>;

/** How our connections name themselves (pg_stat_activity): a takeover tells them from the Go ncps's. */
export const APPLICATION_NAME = 'ncps';

/**
 * A client class whose connections work in our schema: `search_path` is set right after each
 * connects, before the pool hands it out. With 'beside-go-if-present', the first connection looks
 * whether a takeover made the schema beside the Go ncps's tables; every later one follows it.
 */
function clientInSchema(schema: string): typeof pg.Client {
  let decided: Promise<string | undefined> | undefined = schema === 'beside-go-if-present' ? undefined : Promise.resolve(schema);
  return class ClientInSchema extends pg.Client {
    // pg-pool connects with a callback; callers outside a pool use the promise.
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    override connect(callback?: (...args: any[]) => void): any {
      const connected = (async () => {
        await super.connect();
        if (!decided) {
          const lookup = super
            .query<{ present: boolean }>('SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1) AS present', [SCHEMA_BESIDE_GO])
            .then((r) => (r.rows[0]?.present ? SCHEMA_BESIDE_GO : undefined));
          decided = lookup;
          // A failed look is not remembered: the next connection looks again.
          lookup.catch(() => {
            if (decided === lookup) decided = undefined;
          });
        }
        const chosen = await decided;
        if (chosen) await super.query(`SET search_path TO "${chosen.replace(/"/g, '""')}"`);
        return this;
      })();
      if (!callback) return connected;
      connected.then(() => callback(null, this), (error: Error) => callback(error));
      return undefined;
    }
  };
}

export class PostgresDatabase implements Database {
  private readonly pool: pg.Pool;
  private closed = false;

  constructor(connectionString: string, options: PostgresOptions = {}) {
    const max = options.maxOpenConns && options.maxOpenConns > 0 ? options.maxOpenConns : DEFAULT_MAX_OPEN_CONNS;
    const min = Math.min(Math.max(options.maxIdleConns ?? 0, 0), max);
    this.pool = new pg.Pool({
      connectionString,
      max,
      min,
      idleTimeoutMillis: IDLE_TIMEOUT_MS,
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
      application_name: APPLICATION_NAME,
      types: TYPES,
      Client: clientInSchema(options.schema ?? 'beside-go-if-present'),
    });
    // Without a listener, an idle connection dropped by the server would crash the process.
    const onError = options.onError ?? (() => undefined);
    this.pool.on('error', (error) => onError(error));
  }

  /** Runs `fn` in a transaction on one connection, retrying on deadlocks and serialization failures. */
  private async transaction<T>(fn: (client: Queryable) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const client = await this.pool.connect();
      let broken: Error | undefined;
      try {
        await client.query('BEGIN');
        const result = await fn(client);
        await client.query('COMMIT');
        return result;
      } catch (error) {
        try {
          await client.query('ROLLBACK');
        } catch (rollbackError) {
          broken = rollbackError as Error;
        }
        const code = (error as { code?: string }).code;
        if (attempt >= MAX_ATTEMPTS || code === undefined || !RETRYABLE.has(code)) throw error;
      } finally {
        // A connection that cannot even roll back is discarded rather than reused.
        client.release(broken);
      }
    }
  }

  /**
   * Migrations run under a session advisory lock held from reading the applied versions to the
   * last one applied, so instances starting together migrate one after the other and the later
   * ones find nothing left to do. (Back up with pg_dump before upgrading; the server cannot.)
   */
  async migrate(options: MigrateOptions = {}): Promise<number[]> {
    const client = await this.pool.connect();
    let broken: Error | undefined;
    try {
      await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_KEY]);
      try {
        return await runMigrations(migrationTarget(client), options);
      } finally {
        try {
          await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY]);
        } catch (error) {
          // Dropping the connection releases the lock as well.
          broken = error as Error;
        }
      }
    } finally {
      client.release(broken);
    }
  }

  async schemaStatus(): Promise<SchemaStatus> {
    const client = await this.pool.connect();
    try {
      return await schemaStatus(migrationTarget(client));
    } finally {
      client.release();
    }
  }

  async getNarInfo(hash: string): Promise<NarInfo | undefined> {
    const { rows } = await this.pool.query<NarInfoRow>(
      `SELECT n.id, n.store_path, n.url, n.compression, n.file_hash, n.file_size, n.nar_hash,
              n.nar_size, n.deriver, n.system, n.ca, n.extra_fields,
              ARRAY(SELECT reference FROM narinfo_references WHERE narinfo_id = n.id ORDER BY position) AS refs,
              ARRAY(SELECT signature FROM narinfo_signatures WHERE narinfo_id = n.id ORDER BY position) AS sigs
       FROM narinfos n WHERE n.hash = $1`,
      [hash],
    );
    return rows[0] ? narInfoFromRow(rows[0]) : undefined;
  }

  async putNarInfo(hash: string, narInfo: NarInfo, narFile: NarFileRecord): Promise<RemovedNarFile[]> {
    const now = Date.now();
    return this.transaction(async (client) => {
      const before = await client.query<{ nar_file_id: number | null }>(
        'SELECT nar_file_id FROM narinfos WHERE hash = $1 FOR UPDATE',
        [hash],
      );
      const previous = before.rows[0]?.nar_file_id ?? null;
      const file = await client.query<{ id: number }>(
        `INSERT INTO nar_files (name, compression, file_hash, file_size, nar_hash, nar_size,
                                upstream_url, created_at, last_accessed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
         ON CONFLICT (name) DO UPDATE SET
           upstream_url = COALESCE(EXCLUDED.upstream_url, nar_files.upstream_url),
           file_hash = COALESCE(nar_files.file_hash, EXCLUDED.file_hash),
           file_size = COALESCE(nar_files.file_size, EXCLUDED.file_size)
         RETURNING id`,
        [...narFileValues(narFile), now],
      );
      // An upsert rather than delete-and-insert: two instances storing the same narinfo at once
      // then queue on the row instead of one failing on the unique hash. A replaced narinfo
      // counts as new, as it does in SQLite (fresh created_at and last_accessed_at).
      const info = await client.query<{ id: number }>(
        `INSERT INTO narinfos (hash, store_path, url, compression, file_hash, file_size, nar_hash,
                               nar_size, deriver, system, ca, extra_fields, nar_file_id,
                               created_at, last_accessed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14)
         ON CONFLICT (hash) DO UPDATE SET
           store_path = EXCLUDED.store_path, url = EXCLUDED.url, compression = EXCLUDED.compression,
           file_hash = EXCLUDED.file_hash, file_size = EXCLUDED.file_size, nar_hash = EXCLUDED.nar_hash,
           nar_size = EXCLUDED.nar_size, deriver = EXCLUDED.deriver, system = EXCLUDED.system,
           ca = EXCLUDED.ca, extra_fields = EXCLUDED.extra_fields, nar_file_id = EXCLUDED.nar_file_id,
           created_at = EXCLUDED.created_at, last_accessed_at = EXCLUDED.last_accessed_at
         RETURNING id`,
        [hash, ...narInfoValues(narInfo), file.rows[0]!.id, now],
      );
      const id = info.rows[0]!.id;
      await client.query('DELETE FROM narinfo_references WHERE narinfo_id = $1', [id]);
      await client.query('DELETE FROM narinfo_signatures WHERE narinfo_id = $1', [id]);
      await insertReferences(client, id, narInfo.references);
      await insertSignatures(client, id, narInfo.sigs);
      const orphaned: RemovedNarFile[] = [];
      if (previous !== null && previous !== file.rows[0]!.id) {
        const removed = await deleteNarFileIfUnused(client, previous);
        if (removed) orphaned.push(removed);
      }
      return orphaned;
    });
  }

  async getNarFile(name: string): Promise<NarFileRecord | undefined> {
    const { rows } = await this.pool.query<NarFileRow>(
      `SELECT name, compression, file_hash, file_size, nar_hash, nar_size, upstream_url, stored_at
       FROM nar_files WHERE name = $1`,
      [name],
    );
    const row = rows[0];
    if (!row) return undefined;
    return narFileFromRow(row);
  }

  async markNarFileStored(name: string, size: number): Promise<boolean> {
    const result = await this.pool.query(
      // Bytes stored anew have not been verified yet.
      `UPDATE nar_files SET stored_at = $2, file_size = $3, last_accessed_at = $2, verified_at = NULL WHERE name = $1`,
      [name, Date.now(), size],
    );
    return (result.rowCount ?? 0) > 0;
  }

  async touchNarInfos(hashes: readonly string[], at: number): Promise<void> {
    if (hashes.length === 0) return;
    // Rows are locked in id order so two overlapping touches cannot deadlock.
    await this.pool.query(
      `UPDATE narinfos SET last_accessed_at = $2
       WHERE id IN (SELECT id FROM narinfos WHERE hash = ANY($1::text[]) AND last_accessed_at < $2
                    ORDER BY id FOR UPDATE)
         AND last_accessed_at < $2`,
      [[...hashes], at],
    );
  }

  async touchNarFiles(names: readonly string[], at: number): Promise<void> {
    if (names.length === 0) return;
    await this.pool.query(
      `UPDATE narinfos SET last_accessed_at = $2
       WHERE id IN (SELECT n.id FROM narinfos n JOIN nar_files f ON f.id = n.nar_file_id
                    WHERE f.name = ANY($1::text[]) AND n.last_accessed_at < $2
                    ORDER BY n.id FOR UPDATE OF n)
         AND last_accessed_at < $2`,
      [[...names], at],
    );
  }

  async deleteNarInfo(hash: string): Promise<{ deleted: boolean; orphanedNarFiles: RemovedNarFile[] }> {
    return this.transaction(async (client) => {
      const deleted = await client.query<{ nar_file_id: number | null }>(
        'DELETE FROM narinfos WHERE hash = $1 RETURNING nar_file_id',
        [hash],
      );
      if (deleted.rowCount === 0) return { deleted: false, orphanedNarFiles: [] };
      const orphanedNarFiles: RemovedNarFile[] = [];
      const narFileId = deleted.rows[0]!.nar_file_id;
      if (narFileId !== null) {
        const removed = await deleteNarFileIfUnused(client, narFileId);
        if (removed) orphanedNarFiles.push(removed);
      }
      return { deleted: true, orphanedNarFiles };
    });
  }

  async deleteNarFile(name: string): Promise<string[]> {
    return this.transaction(async (client) => {
      const file = await client.query<{ id: number }>('SELECT id FROM nar_files WHERE name = $1 FOR UPDATE', [name]);
      const id = file.rows[0]?.id;
      if (id === undefined) return [];
      const deleted = await client.query<{ hash: string }>(
        'DELETE FROM narinfos WHERE nar_file_id = $1 RETURNING hash',
        [id],
      );
      await client.query('DELETE FROM nar_files WHERE id = $1', [id]);
      return deleted.rows.map((r) => r.hash);
    });
  }

  async createdAt(): Promise<number | undefined> {
    const { rows } = await this.pool.query<{ value: string | null }>('SELECT min(applied_at) AS value FROM schema_migrations');
    return rows[0]?.value == null ? undefined : Number(rows[0].value);
  }

  async knownNarFiles(names: readonly string[]): Promise<Set<string>> {
    const { rows } = await this.pool.query<{ name: string }>('SELECT name FROM nar_files WHERE name = ANY($1::text[])', [names]);
    return new Set(rows.map((r) => r.name));
  }

  async knownNarInfos(hashes: readonly string[]): Promise<Set<string>> {
    const { rows } = await this.pool.query<{ hash: string }>('SELECT hash FROM narinfos WHERE hash = ANY($1::text[])', [hashes]);
    return new Set(rows.map((r) => r.hash));
  }

  async leastRecentlyUsed(limit: number): Promise<string[]> {
    return (await this.leastRecentlyUsedNarInfos(limit)).map((r) => r.hash);
  }

  async leastRecentlyUsedNarInfos(limit: number): Promise<Array<{ hash: string; lastAccessedAt: number }>> {
    const { rows } = await this.pool.query<{ hash: string; last_accessed_at: number }>(
      `${PINNED_CLOSURE}
       SELECT n.hash, n.last_accessed_at FROM narinfos n
       WHERE NOT EXISTS (SELECT 1 FROM pinned p WHERE p.hash = n.hash)
       ORDER BY n.last_accessed_at ASC, n.id ASC LIMIT $1`,
      [limit],
    );
    return rows.map((r) => ({ hash: r.hash, lastAccessedAt: Number(r.last_accessed_at) }));
  }

  async putAuxFile(file: AuxFileRecord): Promise<void> {
    await this.pool.query(
      `INSERT INTO aux_files (kind, name, size, created_at, last_accessed_at) VALUES ($1, $2, $3, $4, $4)
       ON CONFLICT (kind, name) DO UPDATE SET size = excluded.size, last_accessed_at = excluded.last_accessed_at`,
      [file.kind, file.name, file.size, Date.now()],
    );
  }

  async touchAuxFiles(files: readonly AuxFileKey[], at: number): Promise<void> {
    if (files.length === 0) return;
    await this.pool.query(
      `UPDATE aux_files SET last_accessed_at = $3
       FROM unnest($1::text[], $2::text[]) AS t(kind, name)
       WHERE aux_files.kind = t.kind AND aux_files.name = t.name AND aux_files.last_accessed_at < $3`,
      [files.map((f) => f.kind), files.map((f) => f.name), at],
    );
  }

  async deleteAuxFile(file: AuxFileKey): Promise<void> {
    await this.pool.query('DELETE FROM aux_files WHERE kind = $1 AND name = $2', [file.kind, file.name]);
  }

  async leastRecentlyUsedAuxFiles(limit: number): Promise<Array<AuxFileRecord & { lastAccessedAt: number }>> {
    const { rows } = await this.pool.query<{ kind: string; name: string; size: number; last_accessed_at: number }>(
      // The listings of pinned closures are kept with them.
      `${PINNED_CLOSURE}
       SELECT a.kind, a.name, a.size, a.last_accessed_at FROM aux_files a
       WHERE NOT (a.kind = 'ls' AND EXISTS (SELECT 1 FROM pinned p WHERE p.hash = substr(a.name, 1, 32)))
       ORDER BY a.last_accessed_at ASC, a.kind, a.name LIMIT $1`,
      [limit],
    );
    return rows.map((r) => ({ kind: r.kind, name: r.name, size: Number(r.size), lastAccessedAt: Number(r.last_accessed_at) }));
  }

  async checkWritable(): Promise<void> {
    // A standby, or a database set to default_transaction_read_only, answers reads only.
    const { rows } = await this.pool.query<{ read_only: string }>(`SELECT current_setting('transaction_read_only') AS read_only`);
    if (rows[0]?.read_only === 'on') throw new Error('the database accepts reads only (transaction_read_only is on: a standby?)');
  }

  async storeStats(): Promise<StoreStats> {
    const { rows } = await this.pool.query<{ narinfos: number; files: number; bytes: number; aux_bytes: number }>(
      `SELECT (SELECT count(*) FROM narinfos) AS narinfos,
              (SELECT count(*) FROM nar_files WHERE stored_at IS NOT NULL) AS files,
              (SELECT COALESCE(sum(file_size), 0)::bigint FROM nar_files WHERE stored_at IS NOT NULL) AS bytes,
              (SELECT COALESCE(sum(size), 0)::bigint FROM aux_files) AS aux_bytes`,
    );
    const row = rows[0]!;
    return { narInfoCount: row.narinfos, narFileCount: row.files, storedBytes: row.bytes, auxBytes: row.aux_bytes };
  }

  async addPin(hash: string, at: number): Promise<void> {
    await this.pool.query('INSERT INTO pins (hash, created_at) VALUES ($1, $2) ON CONFLICT (hash) DO NOTHING', [hash, at]);
  }

  async removePin(hash: string): Promise<boolean> {
    const result = await this.pool.query('DELETE FROM pins WHERE hash = $1', [hash]);
    return (result.rowCount ?? 0) > 0;
  }

  async listPins(): Promise<PinRecord[]> {
    const { rows } = await this.pool.query<{ hash: string; store_path: string | null; created_at: number }>(
      `SELECT p.hash, n.store_path, p.created_at FROM pins p LEFT JOIN narinfos n ON n.hash = p.hash
       ORDER BY p.created_at, p.hash`,
    );
    return rows.map((r) => ({ hash: r.hash, storePath: r.store_path ?? undefined, createdAt: r.created_at }));
  }

  async renewLease(lease: ServerLease): Promise<void> {
    await this.pool.query(
      `INSERT INTO server_leases (instance_id, hostname, pid, started_at, heartbeat_at)
       VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (instance_id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at`,
      [lease.instanceId, lease.hostname, lease.pid, lease.startedAt, lease.heartbeatAt],
    );
  }

  async removeLease(instanceId: string): Promise<void> {
    await this.pool.query('DELETE FROM server_leases WHERE instance_id = $1', [instanceId]);
  }

  async liveLeases(since: number): Promise<ServerLease[]> {
    const { rows } = await this.pool.query<LeaseRow>(
      'SELECT instance_id, hostname, pid, started_at, heartbeat_at FROM server_leases WHERE heartbeat_at >= $1',
      [since],
    );
    return rows.map(leaseFromRow);
  }

  async narInfoPage(afterId: number, limit: number): Promise<NarInfoEntry[]> {
    const { rows } = await this.pool.query<NarInfoEntryRow>(
      `SELECT n.id, n.hash, n.store_path, n.url, n.compression, n.file_hash, n.file_size, n.nar_hash,
              n.nar_size, n.deriver, n.system, n.ca, n.extra_fields, f.name AS nar_file_name,
              ARRAY(SELECT reference FROM narinfo_references WHERE narinfo_id = n.id ORDER BY position) AS refs,
              ARRAY(SELECT signature FROM narinfo_signatures WHERE narinfo_id = n.id ORDER BY position) AS sigs
       FROM narinfos n LEFT JOIN nar_files f ON f.id = n.nar_file_id
       WHERE n.id > $1 ORDER BY n.id LIMIT $2`,
      [afterId, limit],
    );
    return rows.map(narInfoEntryFromRow);
  }

  async narFilePage(afterId: number, limit: number): Promise<NarFileEntry[]> {
    const { rows } = await this.pool.query<NarFileEntryRow>(
      `SELECT f.id, f.name, f.compression, f.file_hash, f.file_size, f.nar_hash, f.nar_size, f.upstream_url,
              f.stored_at, f.verified_at, (SELECT count(*) FROM narinfos n WHERE n.nar_file_id = f.id) AS narinfo_count
       FROM nar_files f WHERE f.id > $1 ORDER BY f.id LIMIT $2`,
      [afterId, limit],
    );
    return rows.map(narFileEntryFromRow);
  }

  async auxFilePage(after: AuxFileKey | undefined, limit: number): Promise<AuxFileRecord[]> {
    // COLLATE "C": the same byte order as SQLite, whatever the database's locale.
    const { rows } = await this.pool.query<{ kind: string; name: string; size: number }>(
      `SELECT kind, name, size FROM aux_files
       WHERE kind COLLATE "C" > $1 OR (kind = $1 AND name COLLATE "C" > $2)
       ORDER BY kind COLLATE "C", name COLLATE "C" LIMIT $3`,
      [after?.kind ?? '', after?.name ?? '', limit],
    );
    return rows.map((r) => ({ kind: r.kind, name: r.name, size: Number(r.size) }));
  }

  async recordCounts(): Promise<{ narInfos: number; narFiles: number; auxFiles: number }> {
    const { rows } = await this.pool.query<{ narinfos: number; nar_files: number; aux_files: number }>(
      `SELECT (SELECT count(*) FROM narinfos) AS narinfos, (SELECT count(*) FROM nar_files) AS nar_files,
              (SELECT count(*) FROM aux_files) AS aux_files`,
    );
    const row = rows[0]!;
    return { narInfos: Number(row.narinfos), narFiles: Number(row.nar_files), auxFiles: Number(row.aux_files) };
  }

  async *cachedPaths(query: CachedPathQuery, pageSize: number): AsyncGenerator<CachedPath[]> {
    const client = await this.pool.connect();
    let open = false;
    let broken: Error | undefined;
    try {
      // One snapshot, sorted once by the server and fetched a page at a time; a listing never writes.
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      open = true;
      await client.query(`DECLARE cached_paths NO SCROLL CURSOR FOR ${cachedPathsQuery(query.order)}`, [
        query.pinnedOnly ?? false,
        query.match ?? null,
        query.limit ?? null,
      ]);
      const size = Math.max(1, Math.floor(pageSize));
      for (;;) {
        const { rows } = await client.query<CachedPathRow>(`FETCH FORWARD ${size} FROM cached_paths`);
        if (rows.length > 0) yield rows.map(cachedPathFromRow);
        if (rows.length < size) break;
      }
      await client.query('COMMIT');
      open = false;
    } finally {
      // Also when the reader stopped early: the transaction (and its cursor) ends here.
      if (open) {
        try {
          await client.query('ROLLBACK');
        } catch (error) {
          broken = error as Error;
        }
      }
      client.release(broken);
    }
  }

  async markNarFileVerified(name: string, at: number): Promise<void> {
    await this.pool.query('UPDATE nar_files SET verified_at = $2 WHERE name = $1', [name, at]);
  }

  async setNarInfoSignatures(hash: string, sigs: readonly string[]): Promise<boolean> {
    return this.transaction(async (client) => {
      const row = await client.query<{ id: number }>('SELECT id FROM narinfos WHERE hash = $1 FOR UPDATE', [hash]);
      const id = row.rows[0]?.id;
      if (id === undefined) return false;
      await client.query('DELETE FROM narinfo_signatures WHERE narinfo_id = $1', [id]);
      await insertSignatures(client, id, sigs);
      return true;
    });
  }

  async deleteNarFileIfUnused(name: string): Promise<RemovedNarFile | undefined> {
    return this.transaction(async (client) => {
      const file = await client.query<{ id: number }>('SELECT id FROM nar_files WHERE name = $1', [name]);
      const id = file.rows[0]?.id;
      return id === undefined ? undefined : deleteNarFileIfUnused(client, id);
    });
  }

  async getSetting(key: string): Promise<string | undefined> {
    const { rows } = await this.pool.query<{ value: string }>('SELECT value FROM settings WHERE key = $1', [key]);
    return rows[0]?.value;
  }

  async putSettingIfAbsent(key: string, value: string): Promise<string> {
    // Two statements on purpose: an insert racing another one waits for it to commit, and the
    // SELECT, with a snapshot of its own, then sees whichever value won.
    await this.pool.query('INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING', [key, value]);
    const stored = await this.getSetting(key);
    if (stored === undefined) throw new Error(`setting ${key} vanished right after it was stored`);
    return stored;
  }

  async putSetting(key: string, value: string): Promise<void> {
    await this.pool.query(
      'INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value',
      [key, value],
    );
  }

  async importNarInfos(entries: readonly ImportedNarInfo[]): Promise<number> {
    if (entries.length === 0) return 0;
    return this.transaction(async (client) => {
      let inserted = 0;
      for (const entry of entries) {
        const { narInfo, narFile } = entry;
        // A takeover keeps the records' own times; an existing NAR record is shared, not changed
        // (only learning that its bytes are stored).
        const file = await client.query<{ id: number }>(
          `INSERT INTO nar_files (name, compression, file_hash, file_size, nar_hash, nar_size,
                                  upstream_url, stored_at, created_at, last_accessed_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
           ON CONFLICT (name) DO UPDATE SET
             stored_at = COALESCE(nar_files.stored_at, EXCLUDED.stored_at),
             file_size = CASE WHEN nar_files.stored_at IS NULL THEN EXCLUDED.file_size ELSE nar_files.file_size END
           RETURNING id`,
          [...narFileValues(narFile), narFile.storedAt ?? null, entry.narFileCreatedAt, entry.narFileLastAccessedAt],
        );
        const info = await client.query<{ id: number }>(
          `INSERT INTO narinfos (hash, store_path, url, compression, file_hash, file_size, nar_hash,
                                 nar_size, deriver, system, ca, extra_fields, nar_file_id,
                                 created_at, last_accessed_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
           ON CONFLICT (hash) DO NOTHING
           RETURNING id`,
          [entry.hash, ...narInfoValues(narInfo), file.rows[0]!.id, entry.createdAt, entry.lastAccessedAt],
        );
        const id = info.rows[0]?.id;
        if (id === undefined) continue;
        await insertReferences(client, id, narInfo.references);
        await insertSignatures(client, id, narInfo.sigs);
        inserted++;
      }
      return inserted;
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.end();
  }
}

const BOOKKEEPING = `CREATE TABLE IF NOT EXISTS schema_migrations (
  version INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  compat_floor INTEGER NOT NULL DEFAULT 1,
  applied_at BIGINT NOT NULL
)`;

function migrationTarget(client: Queryable): MigrationTarget {
  return {
    dialect: POSTGRES_DIALECT,
    // Read-only, so a dry run or a status query changes nothing: a database without the
    // bookkeeping table has no migrations applied.
    appliedMigrations: async () => {
      const exists = await client.query<{ present: boolean }>(
        `SELECT to_regclass('schema_migrations') IS NOT NULL AS present`,
      );
      if (!exists.rows[0]?.present) return [];
      const ours = await client.query(
        `SELECT 1 FROM information_schema.columns
         WHERE table_name = 'schema_migrations' AND column_name = 'compat_floor' AND table_schema = current_schema()`,
      );
      if (ours.rowCount === 0) throw new IncompatibleSchemaError(FOREIGN_SCHEMA_MESSAGE);
      const { rows } = await client.query<AppliedMigration>(
        'SELECT version, compat_floor AS "compatFloor" FROM schema_migrations ORDER BY version',
      );
      return rows;
    },
    apply: async (migration: Migration, statements: string[]) => {
      // PostgreSQL DDL is transactional: the statements and the bookkeeping row commit together.
      await client.query('BEGIN');
      try {
        await client.query(BOOKKEEPING);
        const already = await client.query('SELECT 1 FROM schema_migrations WHERE version = $1', [migration.version]);
        if (already.rowCount === 0) {
          for (const statement of statements) await client.query(statement);
          await client.query(
            'INSERT INTO schema_migrations (version, name, compat_floor, applied_at) VALUES ($1, $2, $3, $4)',
            [migration.version, migration.name, migration.compatFloor, Date.now()],
          );
        }
        await client.query('COMMIT');
      } catch (error) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw error;
      }
    },
  };
}


const CACHED_PATH_ORDER: Record<CachedPathOrder, string> = {
  accessed: 'n.last_accessed_at DESC, n.id DESC',
  size: 'n.nar_size DESC, n.id DESC',
  // The name starts after the hash and its dash; COLLATE "C": byte order, as SQLite sorts.
  path: 'substr(n.store_path, strpos(n.store_path, n.hash) + 33) COLLATE "C", n.hash COLLATE "C"',
};

/** ncps list's query (as sqlite-queries.ts's cachedPaths): $1 pinned only, $2 text to match or NULL, $3 limit or NULL. */
function cachedPathsQuery(order: CachedPathOrder): string {
  return `${PINNED_CLOSURE}
    ${CACHED_PATH_ROWS}
    WHERE (NOT $1::boolean OR n.hash IN (SELECT hash FROM pinned))
      AND ($2::text IS NULL OR strpos(n.store_path, $2::text) > 0)
    ORDER BY ${CACHED_PATH_ORDER[order]} LIMIT $3::bigint`;
}

/**
 * Deletes a NAR file record that no narinfo references any more. The row is locked first, so the
 * check runs on a snapshot that sees any narinfo another instance committed for it meanwhile.
 */
async function deleteNarFileIfUnused(client: Queryable, id: number): Promise<RemovedNarFile | undefined> {
  await client.query('SELECT id FROM nar_files WHERE id = $1 FOR UPDATE', [id]);
  const removed = await client.query<RemovedNarFileRow>(
    `DELETE FROM nar_files WHERE id = $1
       AND NOT EXISTS (SELECT 1 FROM narinfos WHERE nar_file_id = nar_files.id)
     RETURNING name, file_size AS size, stored_at`,
    [id],
  );
  return removed.rows[0] ? removedNarFileFromRow(removed.rows[0]) : undefined;
}

/** A narinfo's references, in their order, under its row `id`. */
async function insertReferences(client: Queryable, id: number, references: readonly string[]): Promise<void> {
  if (references.length === 0) return;
  await client.query(
    `INSERT INTO narinfo_references (narinfo_id, position, reference)
     SELECT $1, ord - 1, ref FROM unnest($2::text[]) WITH ORDINALITY AS t(ref, ord)`,
    [id, [...references]],
  );
}

/** A narinfo's signatures, in their order, under its row `id`. */
async function insertSignatures(client: Queryable, id: number, sigs: readonly string[]): Promise<void> {
  if (sigs.length === 0) return;
  await client.query(
    `INSERT INTO narinfo_signatures (narinfo_id, position, signature)
     SELECT $1, ord - 1, sig FROM unnest($2::text[]) WITH ORDINALITY AS t(sig, ord)`,
    [id, [...sigs]],
  );
}

/** narInfoColumns in the order the narinfo inserts name them (store_path … extra_fields). */
function narInfoValues(narInfo: NarInfo): unknown[] {
  const c = narInfoColumns(narInfo);
  return [c.storePath, c.url, c.compression, c.fileHash, c.fileSize, c.narHash, c.narSize, c.deriver, c.system, c.ca, c.extraFields];
}

/** narFileColumns in the order the NAR file inserts name them (name … upstream_url). */
function narFileValues(narFile: NarFileRecord): unknown[] {
  const c = narFileColumns(narFile);
  return [c.name, c.compression, c.fileHash, c.fileSize, c.narHash, c.narSize, c.upstreamUrl];
}
