// Data directories and databases as the Go ncps leaves them, one per release line, written from
// the facts in go-ncps-parity.md §3–§4 (tables, columns, generations, storage layout) — not from
// the Go ncps's own files. The contents are real: closures built and copied by the real Nix
// client, signed by a "Go ncps" key, so the Nix client can substitute them through this ncps
// after a takeover while trusting only that key.
//
//   v0.5   narinfos(hash, times) + nars; narinfo files in store/narinfo; key in config/cache.key
//   v0.7   nar_files + narinfo_nar_files, config (the key lives there); narinfo files in storage
//   v0.8   narinfo columns + references + signatures: narinfos only in the database; an uploaded
//          closure (Compression: none, signed only by the Go key; no upstream has it)
//   v0.9   + CDC: a closure kept only as zstd chunks in store/chunk (plus two broken records)
//   v0.10  goose tracking, join-table ids, pins, build traces, upstream_url, bytes_stored_at, and
//          an uncompressed NAR kept as .nar.zst (the Go ncps's way with Compression: none)
//
// The Go ncps's PostgreSQL and MySQL support starts with its v0.6 schema; "v0.5" there is that
// first schema with v0.5's storage (narinfo files and key file).
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import pg from 'pg';
import {
  buildTraceFingerprint,
  encodeNix32,
  formatNarInfo,
  narInfoFingerprint,
  NixHash,
  parseNarInfo,
  parseSecretKey,
  signFingerprint,
  type NarInfo,
} from '../../src/nix';
import type { MariadbServer } from './mariadb';
import { buildClosure, generateKeyPair, hashPart, makeBinaryCache, makeTempDir, type Closure, type KeyPair } from './nix';
import type { PostgresServer } from './postgres';

export type GoGeneration = 'v0.5' | 'v0.7' | 'v0.8' | 'v0.9' | 'v0.10';
export const GO_GENERATIONS: readonly GoGeneration[] = ['v0.5', 'v0.7', 'v0.8', 'v0.9', 'v0.10'];

/** How the Go ncps holds a closure's NARs. */
type Keeping = 'cached' | 'uploaded' | 'chunked' | 'zstd-none';

interface Copied {
  closure: Closure;
  keeping: Keeping;
  /** hash → narinfo as `nix copy` wrote it (plus an upstream signature for cached ones). */
  narInfos: Map<string, NarInfo>;
  /** NAR file name → its bytes' path in the binary cache `nix copy` wrote. */
  nars: Map<string, string>;
}

/** What every fixture of a test file is made of: four closures, built and copied once. */
export interface GoMaterial {
  goKey: KeyPair;
  upstreamKey: KeyPair;
  copies: Record<Keeping, Copied>;
}

export async function makeGoMaterial(label: string): Promise<GoMaterial> {
  const keys = await makeTempDir(`go-keys-${label}`);
  const goKey = await generateKeyPair('go-ncps-1', keys);
  const upstreamKey = await generateKeyPair('upstream-cache-1', keys);
  const copies = {} as Record<Keeping, Copied>;
  for (const keeping of ['cached', 'uploaded', 'chunked', 'zstd-none'] as const) {
    // The chunked leaf spans several chunks.
    const closure = await buildClosure({ label: `${label}-${keeping}`, leafBytes: keeping === 'chunked' ? 100 * 1024 : 24 * 1024 });
    const dir = await makeTempDir(`go-copy-${label}-${keeping}`);
    await makeBinaryCache(dir, closure.paths, { secretKeyFile: goKey.secretKeyFile, compression: keeping === 'cached' ? 'xz' : 'none' });
    const narInfos = new Map<string, NarInfo>();
    for (const file of await readdir(dir)) {
      const m = /^([0-9a-df-np-sv-z]{32})\.narinfo$/.exec(file);
      if (!m) continue;
      let narInfo = parseNarInfo(await readFile(path.join(dir, file), 'utf8'));
      if (keeping === 'cached') {
        // Pulled from an upstream: its signature first, the Go ncps's after.
        const upstreamSig = signFingerprint(parseSecretKey(upstreamKey.secretKey), narInfoFingerprint(narInfo));
        narInfo = { ...narInfo, sigs: [upstreamSig, ...narInfo.sigs] };
      }
      narInfos.set(m[1]!, narInfo);
    }
    const nars = new Map<string, string>();
    for (const name of await readdir(path.join(dir, 'nar'))) nars.set(name, path.join(dir, 'nar', name));
    copies[keeping] = { closure, keeping, narInfos, nars };
  }
  return { goKey, upstreamKey, copies };
}

// ---- the database -------------------------------------------------------------------------

type Dialect = 'sqlite' | 'postgres' | 'mysql';

export type GoEngineTarget = { kind: 'sqlite' } | { kind: 'postgres'; server: PostgresServer } | { kind: 'mysql'; server: MariadbServer };

interface FixtureDb {
  dialect: Dialect;
  exec(sql: string): Promise<void>;
  insert(table: string, row: Record<string, unknown>): Promise<void>;
  close(): Promise<void>;
}

function quote(dialect: Dialect, name: string): string {
  return dialect === 'mysql' ? `\`${name}\`` : `"${name}"`;
}

async function connect(target: GoEngineTarget, url: string): Promise<FixtureDb> {
  const insertSql = (dialect: Dialect, table: string, row: Record<string, unknown>, placeholder: (i: number) => string) => {
    const columns = Object.keys(row);
    return `INSERT INTO ${quote(dialect, table)} (${columns.map((c) => quote(dialect, c)).join(', ')}) VALUES (${columns.map((_, i) => placeholder(i)).join(', ')})`;
  };
  if (target.kind === 'sqlite') {
    const file = url.replace(/^sqlite:/, '');
    await mkdir(path.dirname(file), { recursive: true });
    const db = new BetterSqlite3(file);
    // As the Go ncps opens it.
    db.pragma('journal_mode = WAL');
    return {
      dialect: 'sqlite',
      exec: async (sql) => void db.exec(sql),
      insert: async (table, row) => void db.prepare(insertSql('sqlite', table, row, () => '?')).run(...Object.values(row).map(sqliteValue)),
      close: async () => void db.close(),
    };
  }
  if (target.kind === 'postgres') {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    return {
      dialect: 'postgres',
      exec: async (sql) => void (await client.query(sql)),
      insert: async (table, row) => void (await client.query(insertSql('postgres', table, row, (i) => `$${i + 1}`), Object.values(row))),
      close: () => client.end(),
    };
  }
  const mysql = require('mysql2/promise') as typeof import('mysql2/promise');
  const u = new URL(url);
  const connection = await mysql.createConnection({ host: u.hostname, port: Number(u.port), user: decodeURIComponent(u.username), database: u.pathname.slice(1), timezone: 'Z' });
  await connection.query(`SET time_zone = '+00:00'`);
  return {
    dialect: 'mysql',
    exec: async (sql) => void (await connection.query(sql)),
    insert: async (table, row) => void (await connection.query(insertSql('mysql', table, row, () => '?'), Object.values(row))),
    close: () => connection.end(),
  };
}

/** Times as each engine's Go driver stores them: SQLite gets Go's text form (nanoseconds, offset). */
function sqliteValue(value: unknown): unknown {
  if (value instanceof Date) return `${value.toISOString().replace('T', ' ').replace('Z', '')}123456+00:00`;
  if (typeof value === 'boolean') return value ? 1 : 0;
  return value;
}

interface Column {
  name: string;
  type: 'id' | 'text' | 'key' | 'big' | 'time' | 'bool';
  notNull?: boolean;
  unique?: boolean;
}

function typeOf(dialect: Dialect, column: Column): string {
  const types: Record<Dialect, Record<Column['type'], string>> = {
    sqlite: { id: 'INTEGER PRIMARY KEY AUTOINCREMENT', text: 'TEXT', key: 'TEXT', big: 'INTEGER', time: 'TIMESTAMP', bool: 'INTEGER' },
    postgres: { id: 'BIGSERIAL PRIMARY KEY', text: 'TEXT', key: 'TEXT', big: 'BIGINT', time: 'TIMESTAMPTZ', bool: 'BOOLEAN' },
    mysql: { id: 'BIGINT AUTO_INCREMENT PRIMARY KEY', text: 'TEXT', key: 'VARCHAR(255)', big: 'BIGINT', time: 'TIMESTAMP NULL', bool: 'BOOLEAN' },
  };
  const base = dialect === 'mysql' && column.type === 'time' && column.notNull ? 'TIMESTAMP' : types[dialect][column.type];
  return `${base}${column.notNull ? ' NOT NULL' : ''}${column.unique ? ' UNIQUE' : ''}`;
}

/** The tables of a release line (go-ncps-parity.md §3.1), by name and columns. */
function schemaOf(generation: GoGeneration, dialect: Dialect): Array<[string, Column[]]> {
  const c = (name: string, type: Column['type'], more: Partial<Column> = {}): Column => ({ name, type, ...more });
  const times = [c('created_at', 'time', { notNull: true }), c('updated_at', 'time'), c('last_accessed_at', 'time')];
  const goose = generation === 'v0.10';
  const dbmateOldest = generation === 'v0.5' && dialect === 'sqlite';
  const tracking: [string, Column[]] = goose
    ? ['schema_migrations', [c('id', 'id'), c('version_id', 'big', { notNull: true }), c('is_applied', 'bool', { notNull: true }), c('tstamp', 'time')]]
    : ['schema_migrations', [c('version', 'key', { notNull: true, unique: true })]];
  const narinfoMeta = ['store_path', 'url', 'compression', 'file_hash'].map((n) => c(n, 'text'))
    .concat([c('file_size', 'big')])
    .concat([c('nar_hash', 'text'), c('nar_size', 'big')])
    .concat(['deriver', 'system', 'ca'].map((n) => c(n, 'text')));
  const withMeta = generation === 'v0.8' || generation === 'v0.9' || generation === 'v0.10';
  const narinfos: Column[] = [c('id', 'id'), c('hash', 'key', { notNull: true, unique: true }), ...times, ...(withMeta ? narinfoMeta : []), ...(goose ? [c('upstream_url', 'text')] : [])];
  if (dbmateOldest) {
    return [
      tracking,
      ['narinfos', narinfos],
      ['nars', [c('id', 'id'), c('narinfo_id', 'big', { notNull: true }), c('hash', 'key', { notNull: true, unique: true }), c('compression', 'key', { notNull: true }), c('file_size', 'big', { notNull: true }), c('query', 'text', { notNull: true }), ...times]],
    ];
  }
  const chunked = generation === 'v0.9' || generation === 'v0.10';
  const narFiles: Column[] = [
    c('id', 'id'),
    c('hash', 'key', { notNull: true }),
    c('compression', 'key', { notNull: true }),
    c('file_size', 'big', { notNull: true }),
    c('query', 'text', { notNull: true }),
    ...times,
    ...(chunked ? [c('total_chunks', 'big', { notNull: true }), c('chunking_started_at', 'time'), c('verified_at', 'time')] : []),
    ...(goose ? [c('bytes_stored_at', 'time'), c('dechunk_residue_flagged_at', 'time')] : []),
  ];
  const joinId = goose ? [c('id', 'id')] : [];
  const tables: Array<[string, Column[]]> = [
    tracking,
    ['config', [c('id', 'id'), c('key', 'key', { notNull: true, unique: true }), c('value', 'text', { notNull: true }), c('created_at', 'time', { notNull: true }), c('updated_at', 'time')]],
    ['narinfos', narinfos],
    ['nar_files', narFiles],
    ['narinfo_nar_files', [...joinId, c('narinfo_id', 'big', { notNull: true }), c('nar_file_id', 'big', { notNull: true })]],
  ];
  if (withMeta) {
    tables.push(['narinfo_references', [...joinId, c('narinfo_id', 'big', { notNull: true }), c('reference', 'text', { notNull: true })]]);
    tables.push(['narinfo_signatures', [...joinId, c('narinfo_id', 'big', { notNull: true }), c('signature', 'text', { notNull: true })]]);
  }
  if (chunked) {
    tables.push(['chunks', [c('id', 'id'), c('hash', 'key', { notNull: true, unique: true }), c('size', 'big', { notNull: true }), c('compressed_size', 'big', { notNull: true }), c('created_at', 'time', { notNull: true }), c('updated_at', 'time')]]);
    tables.push(['nar_file_chunks', [...joinId, c('nar_file_id', 'big', { notNull: true }), c('chunk_id', 'big', { notNull: true }), c('chunk_index', 'big', { notNull: true })]]);
  }
  if (goose) {
    tables.push(['pinned_closures', [c('id', 'id'), c('hash', 'key', { notNull: true, unique: true }), c('created_at', 'time', { notNull: true }), c('updated_at', 'time')]]);
    tables.push(['build_trace_entries', [c('id', 'id'), c('created_at', 'time', { notNull: true }), c('updated_at', 'time'), c('drv_path', 'key', { notNull: true }), c('output_name', 'key', { notNull: true }), c('out_path', 'text', { notNull: true }), c('raw_json', 'text', { notNull: true })]]);
    tables.push(['build_trace_signatures', [c('id', 'id'), c('key_name', 'text', { notNull: true }), c('signature', 'text', { notNull: true }), c('build_trace_entry_id', 'big', { notNull: true })]]);
    tables.push(['staging_states', [c('id', 'id'), c('created_at', 'time', { notNull: true }), c('updated_at', 'time'), c('hash', 'key', { notNull: true, unique: true }), c('requested_at', 'time'), c('parts_available', 'big', { notNull: true }), c('compression', 'key', { notNull: true }), c('status', 'key', { notNull: true })]]);
  }
  return tables;
}

// ---- a fixture ----------------------------------------------------------------------------

export interface GoFixtureTrace {
  /** Base names, as this ncps serves them. */
  drvPath: string;
  outputName: string;
  outPath: string;
  signatures: string[];
}

export interface GoFixture {
  generation: GoGeneration;
  engine: GoEngineTarget['kind'];
  /** The data directory (storage) the Go ncps used. */
  dataDir: string;
  /** The Go ncps's database. */
  databaseUrl: string;
  /** The Go ncps's public key: what clients trust. */
  publicKey: string;
  /** Every closure stored, to be substituted after the takeover. */
  closures: Closure[];
  /** hash → the narinfo the Go ncps held. */
  narInfos: Map<string, NarInfo>;
  /** hash → last access the Go ncps recorded (ms). */
  lastAccess: Map<string, number>;
  /** Records that cannot be taken over, by the reason the report must give. */
  broken: Map<string, string>;
  pins: string[];
  buildTraces: GoFixtureTrace[];
  /** Chunk files written (relative to the data directory). */
  chunkFiles: string[];
  /** Narinfo files written (relative to the data directory). */
  narInfoFiles: string[];
}

const BASE_TIME = Date.UTC(2026, 0, 10, 8, 0, 0);

function fanOut(name: string): string[] {
  return [name.slice(0, 1), name.slice(0, 2), name];
}

function zstd(data: Buffer): Buffer {
  const r = spawnSync('zstd', ['-q', '-c', '-3'], { input: data, maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`zstd failed: ${r.stderr.toString()}`);
  return r.stdout;
}

/** Splits a NAR into chunks of varying size, as content-defined chunking would. */
function chunksOf(nar: Buffer): Buffer[] {
  const sizes = [9_000, 16_384, 23_000, 31_000];
  const out: Buffer[] = [];
  let at = 0;
  for (let i = 0; at < nar.length; i++) {
    const size = sizes[i % sizes.length]!;
    out.push(nar.subarray(at, at + size));
    at += size;
  }
  return out;
}

export interface FixtureOptions {
  /**
   * Also this many narinfos of made-up store paths with small made-up NAR files (xz by name only:
   * nothing substitutes them), so a takeover takes long enough to be interrupted.
   */
  synthetic?: number;
}

/** Builds one Go ncps deployment of `generation` on `target` from `material`. */
export async function buildGoFixture(material: GoMaterial, generation: GoGeneration, target: GoEngineTarget, options: FixtureOptions = {}): Promise<GoFixture> {
  const dataDir = await makeTempDir(`go-${generation}-${target.kind}`);
  const databaseUrl =
    target.kind === 'sqlite' ? `sqlite:${path.join(dataDir, 'db', 'db.sqlite')}` : await target.server.createDatabase(`go_${generation.replace('.', '')}`);
  const db = await connect(target, databaseUrl);
  const dialect = db.dialect;
  const q = (n: string) => quote(dialect, n);
  const fixture: GoFixture = {
    generation,
    engine: target.kind,
    dataDir,
    databaseUrl,
    publicKey: material.goKey.publicKey,
    closures: [],
    narInfos: new Map(),
    lastAccess: new Map(),
    broken: new Map(),
    pins: [],
    buildTraces: [],
    chunkFiles: [],
    narInfoFiles: [],
  };
  try {
    for (const [table, columns] of schemaOf(generation, dialect)) {
      await db.exec(`CREATE TABLE ${q(table)} (${columns.map((col) => `${q(col.name)} ${typeOf(dialect, col)}`).join(', ')})`);
    }
    // One transaction for all rows: thousands of them are written in seconds, not minutes.
    await db.exec(dialect === 'mysql' ? 'START TRANSACTION' : 'BEGIN');
    const goose = generation === 'v0.10';
    if (goose) {
      for (const [i, version] of [0, 20260101000000, 20260521021523, 20260607182925].entries()) {
        await db.insert('schema_migrations', { id: i + 1, version_id: version, is_applied: true, tstamp: new Date(BASE_TIME) });
      }
    } else {
      const versions = generation === 'v0.5' ? ['20241210054814', '20241213014846'] : ['20260101000000', '20260117195000'];
      for (const version of versions) await db.insert('schema_migrations', { version });
    }
    const keyInDb = generation !== 'v0.5';
    if (keyInDb) {
      await db.insert('config', { id: 1, key: 'cluster_uuid', value: randomUUID(), created_at: new Date(BASE_TIME) });
      await db.insert('config', { id: 2, key: 'secret_key', value: material.goKey.secretKey, created_at: new Date(BASE_TIME) });
    } else {
      await mkdir(path.join(dataDir, 'config'), { recursive: true });
      await writeFile(path.join(dataDir, 'config', 'cache.key'), `${material.goKey.secretKey}\n`, { mode: 0o600 });
    }

    const keepings: Keeping[] =
      generation === 'v0.5' || generation === 'v0.7'
        ? ['cached']
        : generation === 'v0.8'
          ? ['cached', 'uploaded']
          : generation === 'v0.9'
            ? ['cached', 'uploaded', 'chunked']
            : ['cached', 'uploaded', 'chunked', 'zstd-none'];
    const ids = { narinfo: 0, narFile: 0, chunk: 0, join: 0, ref: 0, sig: 0 };
    const metaInDb = generation === 'v0.8' || generation === 'v0.9' || generation === 'v0.10';
    const chunkHashes = new Set<string>();
    let n = 0;
    const put = async (hash: string, narInfo: NarInfo, keeping: Keeping, narBytes: Buffer | undefined, narName: string) => {
      const created = new Date(BASE_TIME + n * 3_600_000);
      // Distinct last uses, not in creation order: the takeover must keep them, not recompute them.
      const lastAccess = new Date(BASE_TIME + 86_400_000 + ((n * 7) % 13) * 60_000);
      n++;
      const narinfoId = ++ids.narinfo;
      fixture.narInfos.set(hash, narInfo);
      fixture.lastAccess.set(hash, lastAccess.getTime());
      const fileHashPart = narName.replace(/\.nar.*$/, '');
      const row: Record<string, unknown> = { id: narinfoId, hash, created_at: created, updated_at: null, last_accessed_at: lastAccess };
      if (metaInDb) {
        Object.assign(row, {
          store_path: narInfo.storePath,
          url: narInfo.url,
          compression: narInfo.compressionGiven ? narInfo.compression : null,
          file_hash: narInfo.fileHash?.toNix32() ?? null,
          file_size: narInfo.fileSize ?? null,
          nar_hash: narInfo.narHash.toNix32(),
          nar_size: narInfo.narSize,
          deriver: narInfo.deriver ?? null,
          system: narInfo.system ?? null,
          ca: narInfo.ca ?? null,
        });
        if (goose) row.upstream_url = null;
      }
      await db.insert('narinfos', row);
      if (metaInDb) {
        for (const reference of narInfo.references) await db.insert('narinfo_references', { ...(goose ? { id: ++ids.ref } : {}), narinfo_id: narinfoId, reference });
        for (const signature of narInfo.sigs) await db.insert('narinfo_signatures', { ...(goose ? { id: ++ids.sig } : {}), narinfo_id: narinfoId, signature });
      } else {
        // ≤ v0.7: the narinfo text is a file in storage.
        const rel = path.join('store', 'narinfo', ...fanOut(`${hash}.narinfo`));
        await mkdir(path.dirname(path.join(dataDir, rel)), { recursive: true });
        await writeFile(path.join(dataDir, rel), formatNarInfo(narInfo));
        fixture.narInfoFiles.push(rel);
      }

      const compression = keeping === 'cached' ? 'xz' : 'none';
      const narFileId = ++ids.narFile;
      const narFileRow: Record<string, unknown> = {
        id: narFileId,
        hash: fileHashPart,
        compression,
        file_size: keeping === 'cached' ? narBytes?.length ?? 0 : narInfo.narSize,
        query: '',
        created_at: created,
        updated_at: null,
        last_accessed_at: lastAccess,
      };
      if (generation === 'v0.9' || goose) Object.assign(narFileRow, { total_chunks: 0, chunking_started_at: null, verified_at: null });
      if (goose) Object.assign(narFileRow, { bytes_stored_at: keeping === 'chunked' ? null : created, dechunk_residue_flagged_at: null });

      if (keeping === 'chunked' && narBytes) {
        const pieces = chunksOf(narBytes);
        narFileRow.total_chunks = pieces.length;
        if (generation !== 'v0.5' || dialect !== 'sqlite') await db.insert('nar_files', narFileRow);
        for (const [index, piece] of pieces.entries()) {
          // Named by a digest of the piece (the Go ncps uses BLAKE3; a takeover never checks the name).
          const chunkHash = createHash('sha256').update(piece).digest('hex');
          let chunkId: number;
          if (!chunkHashes.has(chunkHash)) {
            chunkHashes.add(chunkHash);
            const compressed = zstd(piece);
            const rel = path.join('store', 'chunk', ...fanOut(chunkHash));
            await mkdir(path.dirname(path.join(dataDir, rel)), { recursive: true });
            await writeFile(path.join(dataDir, rel), compressed);
            fixture.chunkFiles.push(rel);
            chunkId = ++ids.chunk;
            await db.insert('chunks', { id: chunkId, hash: chunkHash, size: piece.length, compressed_size: compressed.length, created_at: created, updated_at: null });
          } else {
            chunkId = ids.chunk; // (random NAR contents never repeat a piece)
          }
          await db.insert('nar_file_chunks', { ...(goose ? { id: ++ids.join } : {}), nar_file_id: narFileId, chunk_id: chunkId, chunk_index: index });
        }
      } else {
        if (generation === 'v0.5' && dialect === 'sqlite') {
          await db.insert('nars', { id: narFileId, narinfo_id: narinfoId, hash: fileHashPart, compression, file_size: narFileRow.file_size, query: '', created_at: created, updated_at: null, last_accessed_at: lastAccess });
        } else {
          await db.insert('nar_files', narFileRow);
        }
        if (narBytes) {
          // An uncompressed NAR pulled by the Go ncps is stored zstd-compressed under .nar.zst.
          const stored = keeping === 'zstd-none' ? `${narName}.zst` : narName;
          const file = path.join(dataDir, 'store', 'nar', ...fanOut(stored));
          await mkdir(path.dirname(file), { recursive: true });
          await writeFile(file, keeping === 'zstd-none' ? zstd(narBytes) : narBytes);
        }
      }
      if (!(generation === 'v0.5' && dialect === 'sqlite')) {
        await db.insert('narinfo_nar_files', { ...(goose ? { id: ++ids.join } : {}), narinfo_id: narinfoId, nar_file_id: narFileId });
      }
    };

    for (const keeping of keepings) {
      const copy = material.copies[keeping];
      fixture.closures.push(copy.closure);
      for (const [hash, narInfo] of copy.narInfos) {
        const narName = narInfo.url.slice('nar/'.length);
        await put(hash, narInfo, keeping, await readFile(copy.nars.get(narName)!), narName);
      }
    }

    const goSecret = parseSecretKey(material.goKey.secretKey);
    const ghost = (label: string): [string, NarInfo] => {
      const hash = encodeNix32(randomBytes(20));
      const narHash = NixHash.of('sha256', randomBytes(16));
      const text = `StorePath: /nix/store/${hash}-${label}\nURL: nar/${narHash.nix32Digest()}.nar\nCompression: none\nNarHash: ${narHash.toNix32()}\nNarSize: 40000\nReferences: \n`;
      const unsigned = parseNarInfo(text);
      return [hash, { ...unsigned, sigs: [signFingerprint(goSecret, narInfoFingerprint(unsigned))] }];
    };
    if (generation === 'v0.9' || goose) {
      // A chunked NAR one of whose chunk files is gone, and a narinfo whose NAR is gone entirely.
      const [lostChunk, lostChunkInfo] = ghost('lost-chunk');
      const narBytes = randomBytes(40000);
      await put(lostChunk, lostChunkInfo, 'chunked', narBytes, lostChunkInfo.url.slice('nar/'.length));
      const gone = path.join(dataDir, fixture.chunkFiles.pop()!);
      await rm(gone);
      fixture.broken.set(lostChunk, 'chunk missing from storage');
      fixture.narInfos.delete(lostChunk);
      const [lostNar, lostNarInfo] = ghost('lost-nar');
      await put(lostNar, lostNarInfo, 'uploaded', undefined, lostNarInfo.url.slice('nar/'.length));
      fixture.broken.set(lostNar, 'NAR not in storage');
      fixture.narInfos.delete(lostNar);
    }

    for (let i = 0; i < (options.synthetic ?? 0); i++) {
      const hash = encodeNix32(randomBytes(20));
      const bytes = randomBytes(64 + (i % 200));
      const fileHash = NixHash.of('sha256', bytes);
      const text =
        `StorePath: /nix/store/${hash}-synthetic-${i}\nURL: nar/${fileHash.nix32Digest()}.nar.xz\nCompression: xz\n` +
        `FileHash: ${fileHash.toNix32()}\nFileSize: ${bytes.length}\nNarHash: ${NixHash.of('sha256', randomBytes(8)).toNix32()}\nNarSize: ${4096 + i}\nReferences: \n`;
      const unsigned = parseNarInfo(text);
      const narInfo = { ...unsigned, sigs: [signFingerprint(goSecret, narInfoFingerprint(unsigned))] };
      await put(hash, narInfo, 'cached', bytes, narInfo.url.slice('nar/'.length));
    }

    if (goose) {
      const uploadedTop = hashPart(material.copies.uploaded.closure.top);
      const cachedMid = hashPart(material.copies.cached.closure.mid);
      for (const [i, hash] of [uploadedTop, cachedMid].entries()) {
        await db.insert('pinned_closures', { id: i + 1, hash, created_at: new Date(BASE_TIME + i * 1000), updated_at: null });
        fixture.pins.push(hash);
      }
      // Build trace entries as the Go ncps keeps them (full store paths), one signed by the Go
      // key under Nix's fingerprint, one by a key this ncps does not know.
      const other = parseSecretKey((await generateKeyPair('other-builder-1', await makeTempDir('bt-key'))).secretKey);
      for (const [i, signer] of [goSecret, other].entries()) {
        const drvPath = `${encodeNix32(randomBytes(20))}-trace-${i}.drv`;
        const outPath = `${encodeNix32(randomBytes(20))}-trace-${i}`;
        const sig = signFingerprint(signer, buildTraceFingerprint({ drvPath, outputName: 'out' }, { outPath, signatures: [] }));
        const id = i + 1;
        await db.insert('build_trace_entries', {
          id,
          created_at: new Date(BASE_TIME),
          updated_at: null,
          drv_path: `/nix/store/${drvPath}`,
          output_name: 'out',
          out_path: `/nix/store/${outPath}`,
          raw_json: JSON.stringify({ key: { drvPath: `/nix/store/${drvPath}`, outputName: 'out' }, value: { outPath: `/nix/store/${outPath}` } }),
        });
        await db.insert('build_trace_signatures', { id, key_name: signer.name, signature: sig.slice(signer.name.length + 1), build_trace_entry_id: id });
        fixture.buildTraces.push({ drvPath, outputName: 'out', outPath, signatures: [sig] });
      }
      await db.insert('staging_states', { id: 1, created_at: new Date(BASE_TIME), updated_at: null, hash: encodeNix32(randomBytes(32)), requested_at: null, parts_available: 0, compression: 'zstd', status: 'requested' });
    }
    await db.exec('COMMIT');
  } finally {
    await db.close();
  }
  return fixture;
}

// ---- "is the Go database still as it was?" -------------------------------------------------

/** A digest of everything in the Go database: its file (SQLite) or every row of its tables. */
export async function goDatabaseDigest(fixture: GoFixture, target: GoEngineTarget): Promise<string> {
  const hash = createHash('sha256');
  if (target.kind === 'sqlite') {
    const file = fixture.databaseUrl.replace(/^sqlite:/, '');
    hash.update(await readFile(file));
    // The Go ncps's WAL, if one is left, is part of its database too.
    hash.update(await readFile(`${file}-wal`).catch(() => Buffer.alloc(0)));
    return hash.digest('hex');
  }
  const name = decodeURIComponent(new URL(fixture.databaseUrl).pathname.slice(1));
  if (target.kind === 'postgres') {
    const tables = await target.server.query<{ t: string }>(name, `SELECT table_name AS t FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1`);
    for (const { t } of tables) {
      hash.update(t);
      hash.update(JSON.stringify(await target.server.query(name, `SELECT * FROM public."${t}" ORDER BY 1`)));
    }
    return hash.digest('hex');
  }
  const tables = await target.server.query<{ t: string }>(name, `SELECT TABLE_NAME AS t FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? ORDER BY 1`, [name]);
  for (const { t } of tables) {
    hash.update(t);
    hash.update(JSON.stringify(await target.server.query(name, `SELECT * FROM \`${t}\` ORDER BY 1`)));
  }
  return hash.digest('hex');
}
