// SQL that SQLite and PostgreSQL run alike.

/** The hashes of every pinned path and of everything they reference (SQLite and PostgreSQL alike). */
export const PINNED_CLOSURE = `WITH RECURSIVE pinned(hash) AS (
          SELECT hash FROM pins
          UNION
          SELECT substr(r.reference, 1, 32)
          FROM pinned p JOIN narinfos n ON n.hash = p.hash JOIN narinfo_references r ON r.narinfo_id = n.id
        )`;
