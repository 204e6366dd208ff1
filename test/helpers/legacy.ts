// Data directories as an older ncps left them: narinfo files in storage
// (`store/narinfo/<h0>/<h0h1>/<hash>.narinfo`), NARs beside them (`store/nar/<h0>/<h0h1>/<name>`)
// and the signing key in `config/cache.key`. Two flavours:
//  - makeLegacyDataDir(): a real closure built and copied by the real Nix client
//    (`nix copy --to file://…?secret-key=OLDKEY&compression=xz`), rearranged into that layout, so
//    the Nix client can substitute from a server started on it while trusting only the old key;
//  - writeSyntheticLegacyNarInfos(): N valid, signed narinfo files for random store paths (no NARs),
//    for bulk migration tests.
import { randomBytes, randomInt } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { MIGRATIONS, type Dialect } from '../../src/db/migrations';
import {
  encodeNix32,
  generateSecretKey,
  narInfoFingerprint,
  parseNarInfo,
  signFingerprint,
  type SecretKey,
} from '../../src/nix';
import { signedBinaryCache } from './fixture';
import { hashPart, makeTempDir, type Closure, type Compression, type KeyPair } from './nix';

/** ncps's two-level fan-out: `abcd…` → [`a`, `ab`]. */
function fanOut(name: string): [string, string] {
  return [name.slice(0, 1), name.slice(0, 2)];
}

/** Where an older ncps kept the narinfo of `hash`. */
export function legacyNarInfoPath(dataDir: string, hash: string): string {
  return path.join(dataDir, 'store', 'narinfo', ...fanOut(hash), `${hash}.narinfo`);
}

/** Where ncps keeps (and kept) the NAR file `name` (e.g. `<filehash>.nar.xz`). */
export function narPath(dataDir: string, name: string): string {
  return path.join(dataDir, 'store', 'nar', ...fanOut(name), name);
}

/** The legacy signing key file. */
export function legacyKeyPath(dataDir: string): string {
  return path.join(dataDir, 'config', 'cache.key');
}

/** Hashes of the legacy narinfo files still present under `dataDir` (sorted). */
export async function listLegacyNarInfoFiles(dataDir: string): Promise<string[]> {
  const top = path.join(dataDir, 'store', 'narinfo');
  const hashes: string[] = [];
  const ls = (dir: string) => readdir(dir).catch(() => [] as string[]);
  for (const first of await ls(top)) {
    for (const second of await ls(path.join(top, first))) {
      for (const file of await ls(path.join(top, first, second))) {
        if (file.endsWith('.narinfo')) hashes.push(file.slice(0, -'.narinfo'.length));
      }
    }
  }
  return hashes.sort();
}

/** Writes one legacy narinfo file (any text) where an older ncps kept the narinfo of `hash`. */
export async function writeLegacyNarInfo(dataDir: string, hash: string, text: string): Promise<string> {
  const file = legacyNarInfoPath(dataDir, hash);
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, text);
  return file;
}

/** Writes `secretKey` as the legacy key file (what the new server adopts as its signing key). */
export async function writeLegacyKey(dataDir: string, secretKey: string): Promise<void> {
  const file = legacyKeyPath(dataDir);
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, `${secretKey}\n`);
  await chmod(file, 0o600);
}

/**
 * Rearranges a binary cache written by `nix copy --to file://cacheDir` into ncps's legacy layout
 * under `dataDir` (copies; cacheDir is left as it was). Returns the narinfo hashes and NAR names.
 */
export async function installLegacyLayout(
  cacheDir: string,
  dataDir: string,
  secretKey: string,
): Promise<{ hashes: string[]; narNames: string[] }> {
  const hashes: string[] = [];
  for (const file of await readdir(cacheDir)) {
    const m = /^([0-9a-df-np-sv-z]{32})\.narinfo$/.exec(file);
    if (!m) continue;
    hashes.push(m[1]!);
    await writeLegacyNarInfo(dataDir, m[1]!, await readFile(path.join(cacheDir, file), 'utf8'));
  }
  const narNames: string[] = [];
  for (const name of await readdir(path.join(cacheDir, 'nar'))) {
    narNames.push(name);
    const target = narPath(dataDir, name);
    await mkdir(path.dirname(target), { recursive: true });
    await copyFile(path.join(cacheDir, 'nar', name), target);
  }
  await writeLegacyKey(dataDir, secretKey);
  return { hashes: hashes.sort(), narNames: narNames.sort() };
}

export interface LegacySource {
  closure: Closure;
  /** The key the old ncps signed with (config/cache.key of every data dir made from this). */
  oldKey: KeyPair;
  /** The binary cache `nix copy` wrote (xz). */
  cacheDir: string;
}

/** Builds a fresh closure and copies it, signed by a new "old ncps" key, into a binary cache. */
export async function makeLegacySource(opts: {
  label: string;
  keyName?: string;
  leafBytes?: number;
  compression?: Compression;
}): Promise<LegacySource> {
  const { key, closure, cacheDir } = await signedBinaryCache({ ...opts, keyName: opts.keyName ?? 'old-ncps-1' });
  return { closure, oldKey: key, cacheDir };
}

export interface LegacyDataDir extends LegacySource {
  dataDir: string;
  /** Hashes of the closure's narinfos (all present as legacy files initially). */
  hashes: string[];
  narNames: string[];
}

/** A fresh data directory in the legacy layout holding `source` (made now when not given). */
export async function makeLegacyDataDir(opts: { label: string; source?: LegacySource }): Promise<LegacyDataDir> {
  const source = opts.source ?? (await makeLegacySource({ label: opts.label }));
  const dataDir = await makeTempDir(`legacy-data-${opts.label}`);
  const { hashes, narNames } = await installLegacyLayout(source.cacheDir, dataDir, source.oldKey.secretKey);
  const expected = source.closure.paths.map(hashPart).sort();
  if (JSON.stringify(hashes) !== JSON.stringify(expected)) {
    throw new Error(`nix copy wrote narinfos for ${hashes.join(' ')}, expected ${expected.join(' ')}`);
  }
  return { ...source, dataDir, hashes, narNames };
}

/** A random store path hash (32 nix32 characters, 160 bits like Nix's). */
export function randomStoreHash(): string {
  return encodeNix32(randomBytes(20));
}

/** Valid narinfo text for `hash`, signed by `key`; the NAR it names does not exist. */
export function syntheticNarInfo(hash: string, key: SecretKey, opts: { name?: string; references?: string[] } = {}): string {
  const base = `${hash}-${opts.name ?? 'synthetic'}`;
  const narSize = randomInt(200, 1_000_000);
  const unsigned = [
    `StorePath: /nix/store/${base}`,
    `URL: nar/${encodeNix32(randomBytes(32))}.nar.xz`,
    'Compression: xz',
    `FileHash: sha256:${encodeNix32(randomBytes(32))}`,
    `FileSize: ${Math.max(1, Math.floor(narSize / 3))}`,
    `NarHash: sha256:${encodeNix32(randomBytes(32))}`,
    `NarSize: ${narSize}`,
    `References: ${[base, ...(opts.references ?? [])].join(' ')}`,
    '',
  ].join('\n');
  const sig = signFingerprint(key, narInfoFingerprint(parseNarInfo(unsigned)));
  return `${unsigned}Sig: ${sig}\n`;
}

/**
 * Writes `count` synthetic legacy narinfo files into `dataDir` (and config/cache.key unless told
 * otherwise). Returns the hashes (sorted) and the key that signed them.
 */
export async function writeSyntheticLegacyNarInfos(
  dataDir: string,
  count: number,
  opts: { key?: SecretKey; writeKey?: boolean } = {},
): Promise<{ hashes: string[]; key: SecretKey }> {
  const key = opts.key ?? generateSecretKey('old-ncps-synthetic-1');
  const hashes = new Set<string>();
  while (hashes.size < count) hashes.add(randomStoreHash());
  const list = [...hashes].sort();
  // Bounded parallelism: thousands of small files.
  let next = 0;
  const worker = async () => {
    while (next < list.length) {
      const hash = list[next++]!;
      await writeLegacyNarInfo(dataDir, hash, syntheticNarInfo(hash, key, { name: `synthetic-${next}` }));
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  if (opts.writeKey ?? true) await writeLegacyKey(dataDir, key.text);
  return { hashes: list, key };
}

/** Runs `fn` with a short-lived connection to a SQLite database file (which must exist). */
export function withSqlite<T>(file: string, fn: (db: BetterSqlite3.Database) => T): T {
  if (!existsSync(file)) throw new Error(`${file} does not exist`);
  const db = new BetterSqlite3(file, { fileMustExist: true });
  try {
    db.pragma('busy_timeout = 10000');
    return fn(db);
  } finally {
    db.close();
  }
}

/** The narinfo hashes in the database (sorted; [] when the table does not exist yet). */
export function narInfoHashesInDb(file: string): string[] {
  if (!existsSync(file)) return [];
  return withSqlite(file, (db) => {
    const table = db.prepare(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'narinfos'`).get();
    if (!table) return [];
    return db
      .prepare<[], { hash: string }>('SELECT hash FROM narinfos ORDER BY hash')
      .all()
      .map((r) => r.hash);
  });
}

/** The schema versions recorded in schema_migrations (sorted; [] when none). */
export function schemaVersionsInDb(file: string): number[] {
  return withSqlite(file, (db) => {
    const table = db.prepare(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'`).get();
    if (!table) return [];
    return db
      .prepare<[], { version: number }>('SELECT version FROM schema_migrations ORDER BY version')
      .all()
      .map((r) => r.version);
  });
}

/** The SQLite dialect of the shared migrations (as src/db/sqlite.ts defines it). */
export const SQLITE_DIALECT: Dialect = { name: 'sqlite', idColumn: 'INTEGER PRIMARY KEY', bigint: 'INTEGER' };

/** The bookkeeping table as SqliteDatabase creates it (src/db/sqlite.ts). */
const SCHEMA_MIGRATIONS_TABLE = `CREATE TABLE IF NOT EXISTS schema_migrations (
  version INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  compat_floor INTEGER NOT NULL DEFAULT 1,
  applied_at INTEGER NOT NULL
)`;

/** A brand-new database at schema version 1 only, as the first schema-aware release made it. */
export function createV1Database(file: string): void {
  const db = new BetterSqlite3(file);
  try {
    db.pragma('journal_mode = WAL');
    db.transaction(() => {
      db.exec(SCHEMA_MIGRATIONS_TABLE);
      for (const statement of MIGRATIONS[0]!.statements(SQLITE_DIALECT)) db.exec(statement);
      db.prepare('INSERT INTO schema_migrations (version, name, compat_floor, applied_at) VALUES (?, ?, ?, ?)').run(
        MIGRATIONS[0]!.version,
        MIGRATIONS[0]!.name,
        MIGRATIONS[0]!.compatFloor,
        Date.now(),
      );
    })();
  } finally {
    db.close();
  }
}
