// Which Go ncps database this is, from its tables and columns alone (never from version strings):
// how it tracks migrations, which release line wrote it, and so what there is to read.
//
// The Go ncps's schema history, as far as a takeover cares:
//   ≤ v0.5   narinfos(hash, times) + nars; narinfo text in storage files, key in config/cache.key
//   v0.6     nar_files + narinfo_nar_files (shared NARs), config table
//   v0.7     the signing key moves into config (secret_key)
//   v0.8     narinfo columns, narinfo_references, narinfo_signatures: narinfos live in the database
//   v0.9     CDC: chunks, nar_file_chunks, nar_files.total_chunks
//   v0.10    pinned_closures (rc5, with goose tracking), build traces and narinfos.upstream_url (rc10)

import { looksLikeGoSchema } from '../../db/beside-go';

/** Table name → column names. */
export type TableColumns = ReadonlyMap<string, ReadonlySet<string>>;

export interface GoSchema {
  /** How the Go ncps recorded its migrations: dbmate (≤ v0.10-rc4) or goose (since v0.10-rc5). */
  tracking: 'dbmate' | 'goose' | 'none';
  /** The release line these tables come from, for reports (`v0.8`, `v0.10`, …). */
  generation: string;
  /** narinfos has the narinfo fields (v0.8+); before, the text lives in storage files. */
  narInfoColumns: boolean;
  /** NAR records: `nar_files` linked through `narinfo_nar_files` (v0.6+), or `nars` (≤ v0.5). */
  narFiles: 'nar_files' | 'nars' | 'none';
  references: boolean;
  signatures: boolean;
  /** The config table (v0.6+), where the signing key lives since v0.7. */
  config: boolean;
  /** CDC chunk tables and nar_files.total_chunks (v0.9+). */
  chunks: boolean;
  pins: boolean;
  buildTraces: boolean;
  /** narinfos.upstream_url (v0.10-rc10+). */
  upstreamUrl: boolean;
  /** nar_files.bytes_stored_at (v0.10-rc10+). */
  bytesStoredAt: boolean;
  /** The join tables have their own `id` (goose era), so rows can be read in insertion order. */
  joinIds: boolean;
}

/** The schema of a Go ncps database, or undefined when these tables are not one. */
export function detectGoSchema(tables: TableColumns): GoSchema | undefined {
  if (!looksLikeGoSchema(tables)) return undefined;
  const columns = (table: string) => tables.get(table) ?? new Set<string>();
  const tracking = !tables.has('schema_migrations')
    ? 'none'
    : columns('schema_migrations').has('is_applied')
      ? 'goose'
      : 'dbmate';
  const narInfoColumns = columns('narinfos').has('store_path') && columns('narinfos').has('nar_hash');
  const narFiles = tables.has('nar_files') && tables.has('narinfo_nar_files') ? 'nar_files' : tables.has('nars') ? 'nars' : 'none';
  const chunks = tables.has('chunks') && tables.has('nar_file_chunks') && columns('nar_files').has('total_chunks');
  const pins = tables.has('pinned_closures');
  const buildTraces = tables.has('build_trace_entries') && tables.has('build_trace_signatures');
  const upstreamUrl = columns('narinfos').has('upstream_url');
  const schema: GoSchema = {
    tracking,
    generation: '',
    narInfoColumns,
    narFiles,
    references: tables.has('narinfo_references'),
    signatures: tables.has('narinfo_signatures'),
    config: tables.has('config'),
    chunks,
    pins,
    buildTraces,
    upstreamUrl,
    bytesStoredAt: columns('nar_files').has('bytes_stored_at'),
    joinIds: columns('narinfo_signatures').has('id'),
  };
  schema.generation = generationOf(schema, tables);
  return schema;
}

function generationOf(s: GoSchema, tables: TableColumns): string {
  if (s.buildTraces || s.upstreamUrl || tables.has('staging_states')) return 'v0.10';
  if (s.pins || s.tracking === 'goose') return 'v0.10 (before rc10)';
  if (s.chunks) return 'v0.9';
  if (s.narInfoColumns) return 'v0.8';
  if (s.narFiles === 'nar_files' || s.config) return 'v0.6–v0.7';
  return 'v0.4–v0.5';
}
