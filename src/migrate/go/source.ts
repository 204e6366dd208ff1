// Reading a Go ncps database, read-only, whatever its engine. The rows come back as the Go ncps
// wrote them (its column names, its time values); map.ts turns them into our records. The SQL is
// written once here; each engine only supplies how to connect, quote and run it.

import { detectGoSchema, type GoSchema, type TableColumns } from './detect';

export type GoEngine = 'sqlite' | 'postgres' | 'mysql';

/** A time value as a driver returns it: a Date (PostgreSQL, MySQL) or text (SQLite). */
export type GoTime = Date | string | number | null;

export interface GoNarFileRow {
  id: number;
  /** The NAR's storage name without `.nar` and extension (a nix32 hash). */
  hash: string;
  /** `none`, `xz`, `zstd`, …; `''` from the oldest releases means none. */
  compression: string;
  fileSize: number | null;
  /** > 0 when the NAR is kept as CDC chunks. */
  totalChunks: number;
  createdAt: GoTime;
  lastAccessedAt: GoTime;
  bytesStoredAt: GoTime;
}

export interface GoNarInfoRow {
  id: number;
  hash: string;
  storePath: string | null;
  url: string | null;
  compression: string | null;
  fileHash: string | null;
  fileSize: number | null;
  narHash: string | null;
  narSize: number | null;
  deriver: string | null;
  system: string | null;
  ca: string | null;
  upstreamUrl: string | null;
  createdAt: GoTime;
  lastAccessedAt: GoTime;
  references: string[];
  /** In the order the Go ncps inserted them (by row id where it has one). */
  signatures: string[];
  narFiles: GoNarFileRow[];
}

export interface GoChunk {
  index: number;
  hash: string;
  /** Uncompressed size. */
  size: number;
}

export interface GoPinRow {
  hash: string;
  createdAt: GoTime;
}

export interface GoBuildTraceRow {
  drvPath: string;
  outputName: string;
  outPath: string;
  /** `[key name, base64 signature]` pairs. */
  signatures: Array<[string, string]>;
}

/** Another program connected to the Go database (most likely a Go ncps still running). */
export interface LiveClient {
  description: string;
}

/** How one engine runs SQL: `?` placeholders, identifiers quoted by `q`. */
export interface SqlDriver {
  readonly engine: GoEngine;
  /** The database, for messages (no password). */
  readonly describe: string;
  q(identifier: string): string;
  all<T = Record<string, unknown>>(sql: string, params?: readonly unknown[]): Promise<T[]>;
  /** Tables of the database (its current schema) with their columns. */
  tables(): Promise<Map<string, Set<string>>>;
  /** Clients connected to the Go database that are not this ncps. */
  liveClients(): Promise<LiveClient[]>;
  close(): Promise<void>;
}

export class GoSource {
  private constructor(
    private readonly driver: SqlDriver,
    readonly schema: GoSchema,
  ) {}

  /** The reader for a Go database, or undefined (connection closed) when the tables are not the Go ncps's. */
  static async open(driver: SqlDriver): Promise<GoSource | undefined> {
    let schema: GoSchema | undefined;
    try {
      schema = detectGoSchema((await driver.tables()) as TableColumns);
    } catch (error) {
      await driver.close();
      throw error;
    }
    if (!schema) {
      await driver.close();
      return undefined;
    }
    return new GoSource(driver, schema);
  }

  get engine(): GoEngine {
    return this.driver.engine;
  }

  get describe(): string {
    return this.driver.describe;
  }

  liveClients(): Promise<LiveClient[]> {
    return this.driver.liveClients();
  }

  close(): Promise<void> {
    return this.driver.close();
  }

  private get q() {
    return (name: string) => this.driver.q(name);
  }

  async countNarInfos(): Promise<number> {
    const rows = await this.driver.all<{ n: number | string }>(`SELECT count(*) AS n FROM ${this.q('narinfos')}`);
    return Number(rows[0]?.n ?? 0);
  }

  /** The signing key the Go ncps kept in its database (v0.7+), as `name:base64`. */
  async secretKey(): Promise<string | undefined> {
    if (!this.schema.config) return undefined;
    const q = this.q;
    const rows = await this.driver.all<{ value: string }>(`SELECT ${q('value')} AS value FROM ${q('config')} WHERE ${q('key')} = ?`, ['secret_key']);
    return rows[0]?.value || undefined;
  }

  /** Narinfo rows with an id above `afterId`, in id order, with their references, signatures and NAR records. */
  async narInfoPage(afterId: number, limit: number): Promise<GoNarInfoRow[]> {
    const q = this.q;
    const s = this.schema;
    const meta = s.narInfoColumns
      ? ['store_path', 'url', 'compression', 'file_hash', 'file_size', 'nar_hash', 'nar_size', 'deriver', 'system', 'ca'].map(q).join(', ') + ', '
      : '';
    const upstream = s.upstreamUrl ? `${q('upstream_url')}, ` : '';
    const rows = await this.driver.all<Record<string, unknown>>(
      `SELECT ${q('id')}, ${q('hash')}, ${meta}${upstream}${q('created_at')}, ${q('last_accessed_at')}
       FROM ${q('narinfos')} WHERE ${q('id')} > ? ORDER BY ${q('id')} LIMIT ${Math.floor(limit)}`,
      [afterId],
    );
    const page: GoNarInfoRow[] = rows.map((r) => ({
      id: Number(r.id),
      hash: String(r.hash),
      storePath: text(r.store_path),
      url: text(r.url),
      compression: text(r.compression),
      fileHash: text(r.file_hash),
      fileSize: num(r.file_size),
      narHash: text(r.nar_hash),
      narSize: num(r.nar_size),
      deriver: text(r.deriver),
      system: text(r.system),
      ca: text(r.ca),
      upstreamUrl: text(r.upstream_url),
      createdAt: (r.created_at ?? null) as GoTime,
      lastAccessedAt: (r.last_accessed_at ?? null) as GoTime,
      references: [],
      signatures: [],
      narFiles: [],
    }));
    if (page.length === 0) return page;
    const byId = new Map(page.map((row) => [row.id, row]));
    // Ids are integers from the rows just read: safe to inline, and one statement per page.
    const ids = page.map((row) => row.id).join(', ');
    if (s.references) {
      for (const r of await this.driver.all<{ narinfo_id: unknown; reference: string }>(
        `SELECT ${q('narinfo_id')}, ${q('reference')} FROM ${q('narinfo_references')} WHERE ${q('narinfo_id')} IN (${ids})`,
      )) {
        byId.get(Number(r.narinfo_id))?.references.push(r.reference);
      }
    }
    if (s.signatures) {
      const order = s.joinIds ? q('id') : q('signature');
      for (const r of await this.driver.all<{ narinfo_id: unknown; signature: string }>(
        `SELECT ${q('narinfo_id')}, ${q('signature')} FROM ${q('narinfo_signatures')} WHERE ${q('narinfo_id')} IN (${ids}) ORDER BY ${order}`,
      )) {
        byId.get(Number(r.narinfo_id))?.signatures.push(r.signature);
      }
    }
    const fileColumns = (alias: string) =>
      [
        `${alias}.${q('id')} AS nar_file_id`,
        `${alias}.${q('hash')} AS hash`,
        `${alias}.${q('compression')} AS compression`,
        `${alias}.${q('file_size')} AS file_size`,
        `${alias}.${q('created_at')} AS created_at`,
        `${alias}.${q('last_accessed_at')} AS last_accessed_at`,
        s.chunks ? `${alias}.${q('total_chunks')} AS total_chunks` : '0 AS total_chunks',
        s.bytesStoredAt ? `${alias}.${q('bytes_stored_at')} AS bytes_stored_at` : 'NULL AS bytes_stored_at',
      ].join(', ');
    const files =
      s.narFiles === 'nar_files'
        ? await this.driver.all<Record<string, unknown>>(
            `SELECT l.${q('narinfo_id')} AS narinfo_id, ${fileColumns('f')}
             FROM ${q('narinfo_nar_files')} l JOIN ${q('nar_files')} f ON f.${q('id')} = l.${q('nar_file_id')}
             WHERE l.${q('narinfo_id')} IN (${ids}) ORDER BY f.${q('id')}`,
          )
        : s.narFiles === 'nars'
          ? await this.driver.all<Record<string, unknown>>(
              `SELECT n.${q('narinfo_id')} AS narinfo_id, ${fileColumns('n')} FROM ${q('nars')} n
               WHERE n.${q('narinfo_id')} IN (${ids}) ORDER BY n.${q('id')}`,
            )
          : [];
    for (const f of files) {
      byId.get(Number(f.narinfo_id))?.narFiles.push({
        id: Number(f.nar_file_id),
        hash: String(f.hash),
        compression: String(f.compression ?? ''),
        fileSize: num(f.file_size),
        totalChunks: Number(f.total_chunks ?? 0),
        createdAt: (f.created_at ?? null) as GoTime,
        lastAccessedAt: (f.last_accessed_at ?? null) as GoTime,
        bytesStoredAt: (f.bytes_stored_at ?? null) as GoTime,
      });
    }
    return page;
  }

  /** The chunks of a chunked NAR record, in order. */
  async chunksOf(narFileId: number): Promise<GoChunk[]> {
    const q = this.q;
    const rows = await this.driver.all<{ chunk_index: unknown; hash: string; size: unknown }>(
      `SELECT l.${q('chunk_index')} AS chunk_index, c.${q('hash')} AS hash, c.${q('size')} AS size
       FROM ${q('nar_file_chunks')} l JOIN ${q('chunks')} c ON c.${q('id')} = l.${q('chunk_id')}
       WHERE l.${q('nar_file_id')} = ? ORDER BY l.${q('chunk_index')}`,
      [narFileId],
    );
    return rows.map((r) => ({ index: Number(r.chunk_index), hash: String(r.hash), size: Number(r.size) }));
  }

  /** Every chunk with the NAR records that use it (for removing chunk files once they are taken over). */
  async chunkUsers(): Promise<Map<string, Array<{ narFileId: number; hash: string }>>> {
    const q = this.q;
    const users = new Map<string, Array<{ narFileId: number; hash: string }>>();
    if (!this.schema.chunks) return users;
    for (const r of await this.driver.all<{ chunk: string; nar_file_id: unknown; hash: string | null }>(
      `SELECT c.${q('hash')} AS chunk, f.${q('id')} AS nar_file_id, f.${q('hash')} AS hash
       FROM ${q('chunks')} c LEFT JOIN ${q('nar_file_chunks')} l ON l.${q('chunk_id')} = c.${q('id')}
       LEFT JOIN ${q('nar_files')} f ON f.${q('id')} = l.${q('nar_file_id')}`,
    )) {
      const list = users.get(r.chunk) ?? [];
      if (r.hash !== null && r.nar_file_id !== null) list.push({ narFileId: Number(r.nar_file_id), hash: r.hash });
      users.set(r.chunk, list);
    }
    return users;
  }

  async pins(): Promise<GoPinRow[]> {
    if (!this.schema.pins) return [];
    const q = this.q;
    const rows = await this.driver.all<{ hash: string; created_at: GoTime }>(
      `SELECT ${q('hash')}, ${q('created_at')} FROM ${q('pinned_closures')} ORDER BY ${q('id')}`,
    );
    return rows.map((r) => ({ hash: r.hash, createdAt: r.created_at ?? null }));
  }

  async buildTraces(): Promise<GoBuildTraceRow[]> {
    if (!this.schema.buildTraces) return [];
    const q = this.q;
    const entries = await this.driver.all<{ id: unknown; drv_path: string; output_name: string; out_path: string }>(
      `SELECT ${q('id')}, ${q('drv_path')}, ${q('output_name')}, ${q('out_path')} FROM ${q('build_trace_entries')} ORDER BY ${q('id')}`,
    );
    const byId = new Map<number, GoBuildTraceRow>();
    for (const e of entries) byId.set(Number(e.id), { drvPath: e.drv_path, outputName: e.output_name, outPath: e.out_path, signatures: [] });
    for (const s of await this.driver.all<{ build_trace_entry_id: unknown; key_name: string; signature: string }>(
      `SELECT ${q('build_trace_entry_id')}, ${q('key_name')}, ${q('signature')} FROM ${q('build_trace_signatures')} ORDER BY ${q('id')}`,
    )) {
      byId.get(Number(s.build_trace_entry_id))?.signatures.push([s.key_name, s.signature]);
    }
    return [...byId.values()];
  }

  /**
   * A summary of what the Go ncps has written (row counts, newest ids and times; not read times),
   * so a later start can tell whether a Go ncps ran on this database after it was taken over.
   */
  async fingerprint(): Promise<string> {
    const q = this.q;
    const s = this.schema;
    const parts: string[] = [];
    const summary = async (table: string, extra: string[], hasId = true) => {
      const cols = [`count(*) AS n`, ...(hasId ? [`max(${q('id')}) AS top`] : []), ...extra.map((c, i) => `max(${q(c)}) AS x${i}`)];
      const row = (await this.driver.all<Record<string, unknown>>(`SELECT ${cols.join(', ')} FROM ${q(table)}`))[0] ?? {};
      parts.push(`${table}:${Object.values(row).map(stamp).join(',')}`);
    };
    await summary('narinfos', s.narInfoColumns ? ['created_at', 'updated_at'] : ['created_at']);
    if (s.narFiles !== 'none') await summary(s.narFiles, ['created_at']);
    if (s.signatures) await summary('narinfo_signatures', [], s.joinIds);
    if (s.pins) await summary('pinned_closures', ['created_at']);
    if (s.buildTraces) await summary('build_trace_entries', ['created_at', 'updated_at']);
    return parts.join(';');
  }
}

function text(value: unknown): string | null {
  return value === null || value === undefined || value === '' ? null : String(value);
}

function num(value: unknown): number | null {
  if (value === null || value === undefined) return null;
  const n = Number(value);
  return Number.isFinite(n) ? n : null;
}

function stamp(value: unknown): string {
  if (value instanceof Date) return String(value.getTime());
  return value === null || value === undefined ? '-' : String(value);
}
