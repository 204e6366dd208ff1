// The schema, as an ordered list of forward-only migrations shared by every database engine.
// Rule for every migration after a release: expand, never contract — add tables, columns and
// indexes; never drop or rename what a previous release still reads, so a rollback keeps working.

export interface Dialect {
  name: 'sqlite' | 'postgres';
  /** Column definition of an auto-incrementing integer primary key. */
  idColumn: string;
  /** 64-bit integer type (sizes and millisecond timestamps). */
  bigint: string;
}

export interface Migration {
  version: number;
  name: string;
  /**
   * The oldest schema version whose code still works once this migration ran. Expand-only
   * migrations keep it at 1; a contracting one raises it, and older releases then refuse to start
   * instead of misbehaving.
   */
  compatFloor: number;
  statements(d: Dialect): string[];
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'narinfo metadata, NAR files and settings',
    compatFloor: 1,
    statements: (d) => [
      `CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
      )`,
      `CREATE TABLE nar_files (
        id ${d.idColumn},
        name TEXT NOT NULL UNIQUE,
        compression TEXT NOT NULL,
        file_hash TEXT,
        file_size ${d.bigint},
        nar_hash TEXT NOT NULL,
        nar_size ${d.bigint} NOT NULL,
        upstream_url TEXT,
        stored_at ${d.bigint},
        created_at ${d.bigint} NOT NULL,
        last_accessed_at ${d.bigint} NOT NULL
      )`,
      `CREATE TABLE narinfos (
        id ${d.idColumn},
        hash TEXT NOT NULL UNIQUE,
        store_path TEXT NOT NULL,
        url TEXT NOT NULL,
        compression TEXT,
        file_hash TEXT,
        file_size ${d.bigint},
        nar_hash TEXT NOT NULL,
        nar_size ${d.bigint} NOT NULL,
        deriver TEXT,
        system TEXT,
        ca TEXT,
        extra_fields TEXT,
        nar_file_id ${d.bigint} REFERENCES nar_files(id),
        created_at ${d.bigint} NOT NULL,
        last_accessed_at ${d.bigint} NOT NULL
      )`,
      `CREATE INDEX narinfos_nar_file_id ON narinfos (nar_file_id)`,
      `CREATE INDEX narinfos_last_accessed_at ON narinfos (last_accessed_at)`,
      `CREATE TABLE narinfo_references (
        narinfo_id ${d.bigint} NOT NULL REFERENCES narinfos(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        reference TEXT NOT NULL,
        PRIMARY KEY (narinfo_id, position)
      )`,
      `CREATE INDEX narinfo_references_reference ON narinfo_references (reference)`,
      `CREATE TABLE narinfo_signatures (
        narinfo_id ${d.bigint} NOT NULL REFERENCES narinfos(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        signature TEXT NOT NULL,
        PRIMARY KEY (narinfo_id, position)
      )`,
    ],
  },
  {
    version: 2,
    name: 'pins',
    compatFloor: 1,
    statements: (d) => [
      `CREATE TABLE pins (
        hash TEXT PRIMARY KEY,
        created_at ${d.bigint} NOT NULL
      )`,
      `CREATE INDEX nar_files_stored_at ON nar_files (stored_at)`,
    ],
  },
  {
    version: 3,
    name: 'server leases',
    compatFloor: 1,
    statements: (d) => [
      // Live servers renew their lease; migrate-narinfo without Redis refuses to run beside one.
      `CREATE TABLE server_leases (
        instance_id TEXT PRIMARY KEY,
        hostname TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at ${d.bigint} NOT NULL,
        heartbeat_at ${d.bigint} NOT NULL
      )`,
    ],
  },
  {
    version: 4,
    name: 'listings, logs, realisations and build traces counted',
    compatFloor: 1,
    statements: (d) => [
      // The small files beside the NARs, so the size limit counts them and LRU can evict them.
      // Older releases do not know the table and simply leave their files uncounted.
      `CREATE TABLE aux_files (
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        size ${d.bigint} NOT NULL,
        created_at ${d.bigint} NOT NULL,
        last_accessed_at ${d.bigint} NOT NULL,
        PRIMARY KEY (kind, name)
      )`,
      `CREATE INDEX aux_files_last_accessed_at ON aux_files (last_accessed_at)`,
    ],
  },
  {
    version: 5,
    name: 'when each NAR was last verified',
    compatFloor: 1,
    statements: (d) => [
      // Set by `ncps fsck --verify-content` when a NAR's bytes matched FileHash and NarHash, so
      // --verified-since can skip recent ones. The Go ncps keeps the same column. Older releases
      // ignore it.
      `ALTER TABLE nar_files ADD COLUMN verified_at ${d.bigint}`,
    ],
  },
];

export const LATEST_SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]!.version;
