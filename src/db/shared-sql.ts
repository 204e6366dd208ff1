// SQL that SQLite and PostgreSQL run alike.

/** The hashes of every pinned path and of everything they reference (SQLite and PostgreSQL alike). */
export const PINNED_CLOSURE = `WITH RECURSIVE pinned(hash) AS (
          SELECT hash FROM pins
          UNION
          SELECT substr(r.reference, 1, 32)
          FROM pinned p JOIN narinfos n ON n.hash = p.hash JOIN narinfo_references r ON r.narinfo_id = n.id
        )`;

/**
 * The columns and joins of ncps list's query (rows.ts's CachedPathRow), after PINNED_CLOSURE;
 * each dialect adds its own WHERE, ORDER BY and LIMIT.
 */
export const CACHED_PATH_ROWS = `SELECT n.hash, n.store_path, n.url, n.compression, n.nar_size, COALESCE(n.file_size, f.file_size) AS file_size,
               n.last_accessed_at, n.hash IN (SELECT hash FROM pinned) AS pinned, d.hash IS NOT NULL AS pinned_directly,
               CASE WHEN f.id IS NULL THEN NULL ELSE f.stored_at IS NOT NULL END AS nar_stored
        FROM narinfos n LEFT JOIN nar_files f ON f.id = n.nar_file_id LEFT JOIN pins d ON d.hash = n.hash`;
