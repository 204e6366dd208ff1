// Every SQL statement the SQLite implementation runs, by name. Kept apart from the code so that
// the compatibility test can snapshot them per schema version and replay an older release's
// statements against a newer schema (the expand/contract rule, checked).

import { CACHED_PATH_ROWS, PINNED_CLOSURE } from './shared-sql';

/**
 * ncps list, one statement per order: the one by last use walks narinfos_last_accessed_at
 * backwards (no sort); the others sort once. @pinnedOnly is 0 or 1, @match NULL for every path,
 * @limit -1 for no limit.
 */
function cachedPaths(orderBy: string): string {
  return `
        ${PINNED_CLOSURE}
        ${CACHED_PATH_ROWS}
        WHERE (@pinnedOnly = 0 OR n.hash IN (SELECT hash FROM pinned))
          AND (@match IS NULL OR instr(n.store_path, @match) > 0)
        ORDER BY ${orderBy} LIMIT @limit`;
}

export const SQLITE_QUERIES = {
  getNarInfo: `
        SELECT n.id, n.store_path, n.url, n.compression, n.file_hash, n.file_size, n.nar_hash,
               n.nar_size, n.deriver, n.system, n.ca, n.extra_fields,
               (SELECT group_concat(reference, ' ') FROM
                  (SELECT reference FROM narinfo_references WHERE narinfo_id = n.id ORDER BY position)) AS refs,
               (SELECT group_concat(signature, char(10)) FROM
                  (SELECT signature FROM narinfo_signatures WHERE narinfo_id = n.id ORDER BY position)) AS sigs
        FROM narinfos n WHERE n.hash = ?`,
  deleteNarInfo: `DELETE FROM narinfos WHERE hash = ?`,
  upsertNarFile: `
        INSERT INTO nar_files (name, compression, file_hash, file_size, nar_hash, nar_size,
                               upstream_url, created_at, last_accessed_at)
        VALUES (@name, @compression, @fileHash, @fileSize, @narHash, @narSize, @upstreamUrl, @now, @now)
        ON CONFLICT (name) DO UPDATE SET
          upstream_url = COALESCE(excluded.upstream_url, nar_files.upstream_url),
          file_hash = COALESCE(nar_files.file_hash, excluded.file_hash),
          file_size = COALESCE(nar_files.file_size, excluded.file_size)
        RETURNING id`,
  insertNarInfo: `
        INSERT INTO narinfos (hash, store_path, url, compression, file_hash, file_size, nar_hash,
                              nar_size, deriver, system, ca, extra_fields, nar_file_id,
                              created_at, last_accessed_at)
        VALUES (@hash, @storePath, @url, @compression, @fileHash, @fileSize, @narHash, @narSize,
                @deriver, @system, @ca, @extraFields, @narFileId, @now, @now)
        RETURNING id`,
  insertReference: `INSERT INTO narinfo_references (narinfo_id, position, reference) VALUES (?, ?, ?)`,
  insertSignature: `INSERT INTO narinfo_signatures (narinfo_id, position, signature) VALUES (?, ?, ?)`,
  getNarFile: `
        SELECT name, compression, file_hash, file_size, nar_hash, nar_size, upstream_url, stored_at
        FROM nar_files WHERE name = ?`,
  // Bytes stored anew have not been verified yet.
  markStored: `UPDATE nar_files SET stored_at = @now, file_size = @size, last_accessed_at = @now, verified_at = NULL WHERE name = @name`,
  touchNarInfo: `UPDATE narinfos SET last_accessed_at = @at WHERE hash = @hash AND last_accessed_at < @at`,
  touchNarFile: `
        UPDATE narinfos SET last_accessed_at = @at
        WHERE nar_file_id = (SELECT id FROM nar_files WHERE name = @name) AND last_accessed_at < @at`,
  narFileIdOf: `SELECT nar_file_id FROM narinfos WHERE hash = ?`,
  deleteNarFileIfUnused: `
        DELETE FROM nar_files WHERE id = ? AND NOT EXISTS (SELECT 1 FROM narinfos WHERE nar_file_id = nar_files.id)
        RETURNING name, file_size AS size, stored_at`,
  narInfosOfFile: `
        SELECT hash FROM narinfos WHERE nar_file_id = (SELECT id FROM nar_files WHERE name = ?)`,
  deleteNarFileByName: `DELETE FROM nar_files WHERE name = ?`,
  createdAt: `SELECT min(applied_at) AS value FROM schema_migrations`,
  // One statement for any number of names: the list arrives as a JSON array.
  knownNarFiles: `SELECT name AS value FROM nar_files WHERE name IN (SELECT value FROM json_each(?))`,
  knownNarInfos: `SELECT hash AS value FROM narinfos WHERE hash IN (SELECT value FROM json_each(?))`,
  storeStats: `
        SELECT (SELECT count(*) FROM narinfos) AS narinfos,
               (SELECT count(*) FROM nar_files WHERE stored_at IS NOT NULL) AS files,
               (SELECT sum(file_size) FROM nar_files WHERE stored_at IS NOT NULL) AS bytes,
               (SELECT sum(size) FROM aux_files) AS aux_bytes`,
  leastRecentlyUsedNarInfos: `
        ${PINNED_CLOSURE}
        SELECT hash, last_accessed_at FROM narinfos WHERE hash NOT IN (SELECT hash FROM pinned)
        ORDER BY last_accessed_at ASC, id ASC LIMIT ?`,
  putAuxFile: `
        INSERT INTO aux_files (kind, name, size, created_at, last_accessed_at) VALUES (@kind, @name, @size, @at, @at)
        ON CONFLICT (kind, name) DO UPDATE SET size = excluded.size, last_accessed_at = excluded.last_accessed_at`,
  touchAuxFile: `UPDATE aux_files SET last_accessed_at = @at WHERE kind = @kind AND name = @name AND last_accessed_at < @at`,
  deleteAuxFile: `DELETE FROM aux_files WHERE kind = @kind AND name = @name`,
  // The listings of pinned closures are kept with them.
  leastRecentlyUsedAuxFiles: `
        ${PINNED_CLOSURE}
        SELECT kind, name, size, last_accessed_at FROM aux_files
        WHERE NOT (kind = 'ls' AND substr(name, 1, 32) IN (SELECT hash FROM pinned))
        ORDER BY last_accessed_at ASC, kind, name LIMIT ?`,
  addPin: `INSERT INTO pins (hash, created_at) VALUES (?, ?) ON CONFLICT (hash) DO NOTHING`,
  removePin: `DELETE FROM pins WHERE hash = ?`,
  listPins: `
        SELECT p.hash, n.store_path, p.created_at FROM pins p LEFT JOIN narinfos n ON n.hash = p.hash
        ORDER BY p.created_at, p.hash`,
  renewLease: `
        INSERT INTO server_leases (instance_id, hostname, pid, started_at, heartbeat_at)
        VALUES (@instanceId, @hostname, @pid, @startedAt, @heartbeatAt)
        ON CONFLICT (instance_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at`,
  removeLease: `DELETE FROM server_leases WHERE instance_id = ?`,
  liveLeases: `
        SELECT instance_id, hostname, pid, started_at, heartbeat_at FROM server_leases WHERE heartbeat_at >= ?`,
  // ncps fsck: every record, page by page.
  narInfoPage: `
        SELECT n.id, n.hash, n.store_path, n.url, n.compression, n.file_hash, n.file_size, n.nar_hash,
               n.nar_size, n.deriver, n.system, n.ca, n.extra_fields, f.name AS nar_file_name,
               (SELECT group_concat(reference, ' ') FROM
                  (SELECT reference FROM narinfo_references WHERE narinfo_id = n.id ORDER BY position)) AS refs,
               (SELECT group_concat(signature, char(10)) FROM
                  (SELECT signature FROM narinfo_signatures WHERE narinfo_id = n.id ORDER BY position)) AS sigs
        FROM narinfos n LEFT JOIN nar_files f ON f.id = n.nar_file_id
        WHERE n.id > ? ORDER BY n.id LIMIT ?`,
  narFilePage: `
        SELECT f.id, f.name, f.compression, f.file_hash, f.file_size, f.nar_hash, f.nar_size, f.upstream_url,
               f.stored_at, f.verified_at, (SELECT count(*) FROM narinfos n WHERE n.nar_file_id = f.id) AS narinfo_count
        FROM nar_files f WHERE f.id > ? ORDER BY f.id LIMIT ?`,
  auxFilePage: `
        SELECT kind, name, size FROM aux_files WHERE kind > @kind OR (kind = @kind AND name > @name)
        ORDER BY kind, name LIMIT @limit`,
  recordCounts: `
        SELECT (SELECT count(*) FROM narinfos) AS narinfos, (SELECT count(*) FROM nar_files) AS nar_files,
               (SELECT count(*) FROM aux_files) AS aux_files`,
  markVerified: `UPDATE nar_files SET verified_at = @at WHERE name = @name`,
  narInfoIdOf: `SELECT id FROM narinfos WHERE hash = ?`,
  deleteSignatures: `DELETE FROM narinfo_signatures WHERE narinfo_id = ?`,
  deleteUnusedNarFileByName: `
        DELETE FROM nar_files WHERE name = @name AND NOT EXISTS (SELECT 1 FROM narinfos WHERE nar_file_id = nar_files.id)
        RETURNING name, file_size AS size, stored_at`,
  getSetting: `SELECT value FROM settings WHERE key = ?`,
  insertSetting: `INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING`,
  putSetting: `INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
  // A takeover keeps the times the records had; an existing NAR record is shared, not changed
  // (only learning that its bytes are stored).
  importNarFile: `
        INSERT INTO nar_files (name, compression, file_hash, file_size, nar_hash, nar_size,
                               upstream_url, stored_at, created_at, last_accessed_at)
        VALUES (@name, @compression, @fileHash, @fileSize, @narHash, @narSize, @upstreamUrl, @storedAt,
                @createdAt, @lastAccessedAt)
        ON CONFLICT (name) DO UPDATE SET
          stored_at = COALESCE(nar_files.stored_at, excluded.stored_at),
          file_size = CASE WHEN nar_files.stored_at IS NULL THEN excluded.file_size ELSE nar_files.file_size END
        RETURNING id`,
  importNarInfo: `
        INSERT INTO narinfos (hash, store_path, url, compression, file_hash, file_size, nar_hash,
                              nar_size, deriver, system, ca, extra_fields, nar_file_id,
                              created_at, last_accessed_at)
        VALUES (@hash, @storePath, @url, @compression, @fileHash, @fileSize, @narHash, @narSize,
                @deriver, @system, @ca, @extraFields, @narFileId, @createdAt, @lastAccessedAt)
        ON CONFLICT (hash) DO NOTHING
        RETURNING id`,
  cachedPathsByAccess: cachedPaths('n.last_accessed_at DESC, n.id DESC'),
  cachedPathsBySize: cachedPaths('n.nar_size DESC, n.id DESC'),
  // The name starts after the hash and its dash, whatever the store directory.
  cachedPathsByPath: cachedPaths('substr(n.store_path, instr(n.store_path, n.hash) + 33), n.hash'),
} as const;

export type SqliteQueryName = keyof typeof SQLITE_QUERIES;
