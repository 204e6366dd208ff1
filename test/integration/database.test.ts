// One contract for the Database seam, run against SQLite (a temp file) and PostgreSQL (a real
// throwaway server): whatever the cache core relies on must hold on both engines.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import BetterSqlite3 from 'better-sqlite3';
import { UnsupportedDatabaseError, type CachedPath, type CachedPathQuery, type Database, type NarFileRecord } from '../../src/db/database';
import { MIGRATIONS } from '../../src/db/migrations';
import { SCHEMA_BESIDE_GO, sqliteFileBesideGo } from '../../src/db/beside-go';
import { openDatabase, redactDatabaseUrl } from '../../src/db/open';
import { PostgresDatabase } from '../../src/db/postgres';
import { SqliteDatabase } from '../../src/db/sqlite';
import { IncompatibleSchemaError } from '../../src/db/schema';
import { encodeNix32, formatNarInfo, NixHash, parseNarInfo, type NarInfo } from '../../src/nix';
import { postgresAvailable, postgresUnavailableReason, startPostgres, type PostgresServer } from '../helpers/postgres';
import { cleanupTempDirs, makeTempDir } from '../helpers/proc';

const ALL_VERSIONS = MIGRATIONS.map((m) => m.version);
const POOL = { maxOpenConns: 0, maxIdleConns: 0 };

// ---- fixtures ------------------------------------------------------------------------------

/** A deterministic store path hash (32 nix32 characters) for a label. */
function hashOf(label: string): string {
  return encodeNix32(createHash('sha256').update(`path:${label}`).digest().subarray(0, 20));
}

function baseName(label: string): string {
  return `${hashOf(label)}-${label}`;
}

interface Fixture {
  hash: string;
  narInfo: NarInfo;
  narFile: NarFileRecord;
  text: string;
}

/**
 * A narinfo for `label` (built with parseNarInfo from its text) and the NAR file record it points
 * at. `file` names the NAR file, so several narinfos can share one.
 */
function fixture(
  label: string,
  opts: {
    refs?: string[];
    sigs?: string[];
    file?: string;
    narSize?: number;
    minimal?: boolean;
    extraLines?: string[];
  } = {},
): Fixture {
  const file = opts.file ?? label;
  // toNix32() gives `sha256:<digest>`; the bare digest is the NAR file's name.
  const fileHash = NixHash.of('sha256', `file:${file}`).toNix32().replace(/^sha256:/, '');
  const narHash = NixHash.of('sha256', `nar:${file}`).toNix32().replace(/^sha256:/, '');
  const narSize = opts.narSize ?? 4096;
  const lines = [`StorePath: /nix/store/${baseName(label)}`, `URL: nar/${fileHash}.nar.xz`];
  if (!opts.minimal) lines.push('Compression: xz', `FileHash: sha256:${fileHash}`, 'FileSize: 1234');
  lines.push(`NarHash: sha256:${narHash}`, `NarSize: ${narSize}`, `References: ${(opts.refs ?? []).join(' ')}`);
  if (!opts.minimal) lines.push(`Deriver: ${hashOf(`${label}.drv`)}-${label}.drv`, 'System: x86_64-linux');
  for (const sig of opts.sigs ?? []) lines.push(`Sig: ${sig}`);
  lines.push(...(opts.extraLines ?? []));
  const text = lines.map((l) => `${l}\n`).join('');
  return {
    hash: hashOf(label),
    narInfo: parseNarInfo(text),
    narFile: {
      name: `${fileHash}.nar.xz`,
      compression: 'xz',
      fileHash: `sha256:${fileHash}`,
      fileSize: 1234,
      narHash: `sha256:${narHash}`,
      narSize,
      upstreamUrl: `https://upstream.example/nar/${fileHash}.nar.xz`,
    },
    text,
  };
}

function sig(name: string, n: number): string {
  return `${name}:${Buffer.alloc(64, n).toString('base64')}`;
}

async function put(db: Database, f: Fixture): Promise<void> {
  await db.putNarInfo(f.hash, f.narInfo, f.narFile);
}

// ---- engines -------------------------------------------------------------------------------

interface FreshDatabase {
  url: string;
  /** A new instance on this database (as a second ncps node would open it). */
  open(): Database;
  /** Runs raw SQL (with `?`-free, engine-neutral text) against the database. */
  exec(sql: string): Promise<void>;
}

interface Engine {
  name: string;
  skip: false | string;
  setup(): Promise<void>;
  teardown(): Promise<void>;
  fresh(): Promise<FreshDatabase>;
}

const sqliteEngine: Engine = {
  name: 'SQLite',
  skip: false,
  async setup() {},
  async teardown() {
    await cleanupTempDirs();
  },
  async fresh() {
    const dir = await makeTempDir('db-contract');
    const url = `sqlite:${path.join(dir, 'db.sqlite')}`;
    return {
      url,
      open: () => openDatabase(url, POOL),
      async exec(sql) {
        const raw = new BetterSqlite3(path.join(dir, 'db.sqlite'));
        try {
          raw.exec(sql);
        } finally {
          raw.close();
        }
      },
    };
  },
};

let server: PostgresServer | undefined;
const postgresEngine: Engine = {
  name: 'PostgreSQL',
  skip: postgresAvailable() ? false : `PostgreSQL unavailable: ${postgresUnavailableReason()}`,
  async setup() {
    server = await startPostgres();
  },
  async teardown() {
    await server?.stop();
    server = undefined;
  },
  async fresh() {
    assert.ok(server);
    const url = await server.createDatabase('contract');
    const name = decodeURIComponent(new URL(url).pathname.slice(1));
    return {
      url,
      open: () => openDatabase(url, POOL),
      async exec(sql) {
        await server!.query(name, sql);
      },
    };
  },
};

// ---- the contract --------------------------------------------------------------------------

for (const engine of [sqliteEngine, postgresEngine]) {
  describe(`Database contract: ${engine.name}`, { skip: engine.skip, timeout: 300_000 }, () => {
    const opened: Database[] = [];
    let fresh: FreshDatabase;

    /** A new instance on the current test's database. */
    const open = (): Database => {
      const db = fresh.open();
      opened.push(db);
      return db;
    };

    /** A fresh database, migrated, with one instance open on it. */
    const migrated = async (): Promise<Database> => {
      fresh = await engine.fresh();
      const db = open();
      await db.migrate();
      return db;
    };

    before(() => engine.setup(), { timeout: 180_000 });
    after(() => engine.teardown(), { timeout: 120_000 });
    afterEach(async () => {
      await Promise.all(opened.splice(0).map((db) => db.close()));
    });

    it('opens the right implementation for the URL', async () => {
      fresh = await engine.fresh();
      const db = open();
      assert.ok(db instanceof (engine === sqliteEngine ? SqliteDatabase : PostgresDatabase));
    });

    it('migrates every version once; migrating again (from any instance) is a no-op', async () => {
      fresh = await engine.fresh();
      const db = open();
      assert.deepEqual(await db.migrate(), ALL_VERSIONS);
      assert.deepEqual(await db.migrate(), []);
      assert.deepEqual(await open().migrate(), []);
      await put(db, fixture('after-migrate'));
      assert.ok(await db.getNarInfo(hashOf('after-migrate')));
    });

    it('a dry run and schemaStatus report pending migrations without changing anything', async () => {
      fresh = await engine.fresh();
      const db = open();
      assert.ok(db.schemaStatus, 'schemaStatus is implemented');
      assert.deepEqual(await db.migrate({ dryRun: true }), ALL_VERSIONS);
      assert.deepEqual(await db.migrate({ dryRun: true }), ALL_VERSIONS);
      const before = await db.schemaStatus();
      assert.deepEqual(before.applied, []);
      assert.deepEqual(before.pending.map((m) => m.version), ALL_VERSIONS);
      assert.equal(before.known, ALL_VERSIONS.at(-1));
      await assert.rejects(versionsOf(fresh), 'no bookkeeping table after a dry run');

      assert.deepEqual(await db.migrate(), ALL_VERSIONS);
      const after = await db.schemaStatus();
      assert.deepEqual(after.applied, MIGRATIONS.map((m) => ({ version: m.version, compatFloor: m.compatFloor })));
      assert.deepEqual(after.pending, []);
      assert.deepEqual(await db.migrate({ dryRun: true }), []);
    });

    it('concurrent migrate() from several instances applies each migration exactly once', async () => {
      fresh = await engine.fresh();
      const instances = [open(), open(), open(), open()];
      await Promise.all(instances.map((db) => db.migrate()));
      // Every instance ends up with a usable schema, and the bookkeeping lists each version once.
      for (const [i, db] of instances.entries()) {
        await put(db, fixture(`concurrent-${i}`));
        assert.ok(await db.getNarInfo(hashOf(`concurrent-${i}`)));
      }
      assert.deepEqual(await versionsOf(fresh), ALL_VERSIONS);
    });

    it('concurrent migrate() reports each version as applied by exactly one instance', async () => {
      fresh = await engine.fresh();
      const instances = [open(), open(), open(), open()];
      const results = await Promise.all(instances.map((db) => db.migrate()));
      assert.deepEqual(
        results.flat().sort((a, b) => a - b),
        ALL_VERSIONS,
        `versions reported applied by the instances: ${JSON.stringify(results)}`,
      );
    });

    it('round-trips a full narinfo: references and signatures in order, unknown keys, optional fields', async () => {
      const db = await migrated();
      // References deliberately not sorted, signatures in a chosen order, two unknown keys.
      const refs = [baseName('zeta'), baseName('alpha'), baseName('mid'), baseName('full'), baseName('beta')];
      const f = fixture('full', {
        refs,
        sigs: [sig('second-key', 2), sig('first-key', 1), sig('third-key', 3)],
        narSize: 5_000_000_000, // beyond 32 bits: BIGINT must come back as the same number
        extraLines: ['CA: fixed:r:sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s', 'Zebra: last', 'Apple: first'],
      });
      await put(db, f);
      const got = await db.getNarInfo(f.hash);
      assert.ok(got);
      assert.deepStrictEqual(got, f.narInfo);
      assert.deepEqual(got.references, refs);
      assert.deepEqual(got.extra, [['Zebra', 'last'], ['Apple', 'first']]);
      assert.strictEqual(got.narSize, 5_000_000_000);
      assert.strictEqual(got.fileSize, 1234);
      assert.equal(formatNarInfo(got), f.text);
      // Another instance sees the same.
      assert.deepStrictEqual(await open().getNarInfo(f.hash), f.narInfo);
    });

    it('returns references and signatures in position order even when rows are stored out of order', async () => {
      const db = await migrated();
      const refs = ['o1', 'o2', 'o3', 'o4', 'o5'].map(baseName);
      const sigs = [1, 2, 3, 4].map((n) => sig(`k${n}`, n));
      const f = fixture('out-of-order', { refs, sigs });
      await put(db, f);
      // Rewrite the first rows so they sit physically after the others (a new row id in SQLite,
      // a new tuple at the end of the heap in PostgreSQL); only ORDER BY position restores them.
      for (const table of ['narinfo_references', 'narinfo_signatures']) {
        const column = table === 'narinfo_references' ? 'reference' : 'signature';
        await fresh.exec(`
          INSERT INTO ${table} (narinfo_id, position, ${column})
            SELECT narinfo_id, position + 1000, ${column} FROM ${table} WHERE position < 2;
          DELETE FROM ${table} WHERE position < 2;
          UPDATE ${table} SET position = position - 1000 WHERE position >= 1000;`);
      }
      const got = await db.getNarInfo(f.hash);
      assert.deepEqual(got?.references, refs);
      assert.deepEqual(got?.sigs, sigs);
    });

    it('round-trips a minimal narinfo: no Compression line, optional fields absent, no refs or sigs', async () => {
      const db = await migrated();
      const f = fixture('minimal', { minimal: true });
      assert.equal(f.narInfo.compressionGiven, false);
      await put(db, f);
      const got = await db.getNarInfo(f.hash);
      assert.ok(got);
      assert.deepStrictEqual(got, f.narInfo);
      assert.equal(got.compressionGiven, false);
      assert.doesNotMatch(formatNarInfo(got), /^Compression:/m);
      assert.deepEqual(got.references, []);
      assert.deepEqual(got.sigs, []);
      assert.deepEqual(got.extra, []);
      for (const key of ['fileHash', 'fileSize', 'deriver', 'system', 'ca'] as const) {
        assert.equal(key in got, false, `${key} should be absent, not ${String(got[key])}`);
      }
      assert.equal(formatNarInfo(got), f.text);
      assert.equal(await db.getNarInfo(hashOf('never-stored')), undefined);
    });

    it('a second put replaces the narinfo entirely (references and signatures not merged)', async () => {
      const db = await migrated();
      const first = fixture('replaced', { refs: [baseName('r1'), baseName('r2')], sigs: [sig('k', 1), sig('k', 2)] });
      const second = fixture('replaced', { refs: [baseName('r3')], sigs: [sig('other', 9)], file: 'replaced-v2' });
      await put(db, first);
      await put(db, second);
      const got = await db.getNarInfo(second.hash);
      assert.deepStrictEqual(got, second.narInfo);
      assert.equal((await db.storeStats()).narInfoCount, 1);
      // Putting the first back works as well (no leftovers of the second).
      await put(db, first);
      assert.deepStrictEqual(await db.getNarInfo(first.hash), first.narInfo);
    });

    it('concurrent puts of the same narinfo from two instances never fail and leave one whole version', async () => {
      const db = await migrated();
      const other = open();
      for (let i = 0; i < 10; i++) {
        const a = fixture('raced', { refs: [baseName(`a${i}`)], sigs: [sig('a', i)], file: `raced-a-${i}` });
        const b = fixture('raced', { refs: [baseName(`b${i}`), baseName('b')], sigs: [sig('b', i)], file: `raced-b-${i}` });
        await Promise.all([put(db, a), put(other, b)]);
        const got = await db.getNarInfo(a.hash);
        assert.ok(got);
        const expected = got.url === a.narInfo.url ? a.narInfo : b.narInfo;
        assert.deepStrictEqual(got, expected);
      }
    });

    it('records NAR files and marks them stored', async () => {
      const db = await migrated();
      const f = fixture('narfile');
      await put(db, f);
      assert.deepStrictEqual(await db.getNarFile(f.narFile.name), { ...f.narFile, storedAt: undefined });
      assert.equal(await db.getNarFile('missing.nar.xz'), undefined);

      const before = Date.now();
      await db.markNarFileStored(f.narFile.name, 999);
      const stored = await db.getNarFile(f.narFile.name);
      assert.ok(stored?.storedAt !== undefined, 'storedAt should be set');
      assert.strictEqual(typeof stored.storedAt, 'number');
      assert.ok(stored.storedAt >= before - 1000 && stored.storedAt <= Date.now() + 1000, `storedAt ${stored.storedAt}`);
      assert.strictEqual(stored.fileSize, 999);

      // Another narinfo pointing at the same file without an upstream URL keeps the known one.
      const sibling = fixture('narfile-sibling', { file: 'narfile' });
      await db.putNarInfo(sibling.hash, sibling.narInfo, { ...sibling.narFile, upstreamUrl: undefined });
      assert.equal((await db.getNarFile(f.narFile.name))?.upstreamUrl, f.narFile.upstreamUrl);
      assert.equal((await db.getNarFile(f.narFile.name))?.storedAt, stored.storedAt);
    });

    it('touches move narinfos to the back of the least-recently-used order', async () => {
      const db = await migrated();
      const [a, b, c] = ['lru-a', 'lru-b', 'lru-c'].map((l) => fixture(l));
      for (const f of [a!, b!, c!]) await put(db, f);
      const base = Date.now() + 60_000;
      await db.touchNarInfos([a!.hash], base + 1);
      await db.touchNarInfos([b!.hash], base + 2);
      await db.touchNarInfos([c!.hash], base + 3);
      assert.deepEqual(await db.leastRecentlyUsed(10), [a!.hash, b!.hash, c!.hash]);

      await db.touchNarInfos([a!.hash], base + 10);
      assert.deepEqual(await db.leastRecentlyUsed(10), [b!.hash, c!.hash, a!.hash]);

      await db.touchNarFiles([b!.narFile.name], base + 20);
      assert.deepEqual(await db.leastRecentlyUsed(10), [c!.hash, a!.hash, b!.hash]);

      // An older access time never moves a narinfo back.
      await db.touchNarInfos([b!.hash], base);
      await db.touchNarFiles([b!.narFile.name], base);
      assert.deepEqual(await db.leastRecentlyUsed(10), [c!.hash, a!.hash, b!.hash]);

      // Equal access times fall back to insertion order; the limit is respected.
      await db.touchNarInfos([c!.hash, a!.hash, hashOf('unknown')], base + 30);
      assert.deepEqual(await db.leastRecentlyUsed(10), [b!.hash, a!.hash, c!.hash]);
      assert.deepEqual(await db.leastRecentlyUsed(1), [b!.hash]);
      await db.touchNarInfos([], base + 40);
      await db.touchNarFiles([], base + 40);
    });

    it('pins keep their whole closure out of the least-recently-used list', async () => {
      const db = await migrated();
      // top -> mid -> leaf (and top refers to itself, as Nix paths often do); other is unrelated.
      const leaf = fixture('pin-leaf');
      const mid = fixture('pin-mid', { refs: [baseName('pin-leaf')] });
      const top = fixture('pin-top', { refs: [baseName('pin-mid'), baseName('pin-top')] });
      const other = fixture('pin-other', { refs: [baseName('pin-leaf')] });
      for (const f of [leaf, mid, top, other]) await put(db, f);

      await db.addPin(top.hash, 1000);
      assert.deepEqual(await db.leastRecentlyUsed(100), [other.hash]);

      // Pinning mid alone keeps mid and leaf, not top.
      await db.addPin(mid.hash, 2000);
      assert.equal(await db.removePin(top.hash), true);
      assert.equal(await db.removePin(top.hash), false);
      assert.deepEqual((await db.leastRecentlyUsed(100)).sort(), [top.hash, other.hash].sort());

      // A pin on a hash the cache does not hold is listed without a store path.
      await db.addPin(hashOf('pin-unknown'), 3000);
      await db.addPin(mid.hash, 9999); // already pinned: keeps its first time
      assert.deepEqual(await db.listPins(), [
        { hash: mid.hash, storePath: mid.narInfo.storePath, createdAt: 2000 },
        { hash: hashOf('pin-unknown'), storePath: undefined, createdAt: 3000 },
      ]);

      assert.equal(await db.removePin(mid.hash), true);
      assert.equal((await db.leastRecentlyUsed(100)).length, 4);
    });

    it('deleteNarInfo returns a NAR file as orphaned only once no narinfo references it', async () => {
      const db = await migrated();
      const x = fixture('del-x', { file: 'shared' });
      const y = fixture('del-y', { file: 'shared' });
      const z = fixture('del-z');
      for (const f of [x, y, z]) await put(db, f);
      await db.markNarFileStored(x.narFile.name, 777);

      assert.deepEqual(await db.deleteNarInfo(x.hash), { deleted: true, orphanedNarFiles: [] });
      assert.equal(await db.getNarInfo(x.hash), undefined);
      assert.ok(await db.getNarFile(x.narFile.name), 'the shared file is still referenced by y');

      assert.deepEqual(await db.deleteNarInfo(y.hash), {
        deleted: true,
        orphanedNarFiles: [{ name: x.narFile.name, size: 777 }],
      });
      assert.equal(await db.getNarFile(x.narFile.name), undefined);

      // A file never stored is orphaned with size 0.
      assert.deepEqual(await db.deleteNarInfo(z.hash), {
        deleted: true,
        orphanedNarFiles: [{ name: z.narFile.name, size: 0 }],
      });
      assert.deepEqual(await db.deleteNarInfo(z.hash), { deleted: false, orphanedNarFiles: [] });
      assert.deepEqual(await db.storeStats(), { narInfoCount: 0, narFileCount: 0, storedBytes: 0, auxBytes: 0 });
    });

    it('deleteNarFile removes the file and every narinfo pointing at it', async () => {
      const db = await migrated();
      const x = fixture('nf-x', { file: 'nf-shared', refs: [baseName('nf-z')], sigs: [sig('k', 1)] });
      const y = fixture('nf-y', { file: 'nf-shared' });
      const z = fixture('nf-z');
      for (const f of [x, y, z]) await put(db, f);

      assert.deepEqual((await db.deleteNarFile(x.narFile.name)).sort(), [x.hash, y.hash].sort());
      assert.equal(await db.getNarInfo(x.hash), undefined);
      assert.equal(await db.getNarInfo(y.hash), undefined);
      assert.equal(await db.getNarFile(x.narFile.name), undefined);
      assert.deepStrictEqual(await db.getNarInfo(z.hash), z.narInfo);
      assert.deepEqual(await db.deleteNarFile('missing.nar.xz'), []);
      // x can be stored again afterwards.
      await put(db, x);
      assert.deepStrictEqual(await db.getNarInfo(x.hash), x.narInfo);
    });

    it('knownNarFiles and knownNarInfos pick out the recorded names from a batch; createdAt is the first migration', async () => {
      const db = await migrated();
      const created = await db.createdAt();
      assert.ok(created !== undefined && created <= Date.now() && created > Date.now() - 10 * 60_000, `createdAt ${created}`);
      const a = fixture('kn-a');
      const b = fixture('kn-b');
      for (const f of [a, b]) await put(db, f);
      assert.deepEqual(await db.knownNarFiles([]), new Set());
      assert.deepEqual(await db.knownNarFiles([a.narFile.name, 'unknown.nar.xz', b.narFile.name]), new Set([a.narFile.name, b.narFile.name]));
      assert.deepEqual(await db.knownNarInfos([b.hash, fixture('kn-c').hash]), new Set([b.hash]));
      const many = Array.from({ length: 600 }, (_, i) => `missing-${i}.nar`);
      assert.deepEqual(await db.knownNarFiles([...many, a.narFile.name]), new Set([a.narFile.name]), 'a batch of hundreds');
      await db.deleteNarInfo(a.hash);
      assert.deepEqual(await db.knownNarFiles([a.narFile.name]), new Set(), 'gone with its last narinfo');
    });

    it('storeStats counts all narinfos but only stored NAR files', async () => {
      const db = await migrated();
      assert.deepEqual(await db.storeStats(), { narInfoCount: 0, narFileCount: 0, storedBytes: 0, auxBytes: 0 });
      const a = fixture('st-a');
      const b = fixture('st-b');
      const c = fixture('st-c', { file: 'st-a' });
      for (const f of [a, b, c]) await put(db, f);
      assert.deepStrictEqual(await db.storeStats(), { narInfoCount: 3, narFileCount: 0, storedBytes: 0, auxBytes: 0 });
      await db.markNarFileStored(a.narFile.name, 100);
      assert.deepStrictEqual(await db.storeStats(), { narInfoCount: 3, narFileCount: 1, storedBytes: 100, auxBytes: 0 });
      await db.markNarFileStored(b.narFile.name, 6_000_000_000);
      assert.deepStrictEqual(await db.storeStats(), { narInfoCount: 3, narFileCount: 2, storedBytes: 6_000_000_100, auxBytes: 0 });
    });

    it('small files: recorded, counted, touched into least-recently-used order, deleted', async () => {
      const db = await migrated();
      await db.putAuxFile({ kind: 'log', name: 'aaaa-x.drv', size: 1000 });
      await new Promise((resolve) => setTimeout(resolve, 5));
      await db.putAuxFile({ kind: 'ls', name: 'bbbb.ls', size: 6_000_000_000 });
      await new Promise((resolve) => setTimeout(resolve, 5));
      await db.putAuxFile({ kind: 'log', name: 'aaaa-x.drv', size: 1500 }); // replaced: newer and bigger
      assert.equal((await db.storeStats()).auxBytes, 6_000_001_500);
      const order = async () => (await db.leastRecentlyUsedAuxFiles(10)).map((f) => `${f.kind}/${f.name}:${f.size}`);
      assert.deepEqual(await order(), ['ls/bbbb.ls:6000000000', 'log/aaaa-x.drv:1500']);
      await db.touchAuxFiles([{ kind: 'ls', name: 'bbbb.ls' }, { kind: 'ls', name: 'missing.ls' }], Date.now() + 60_000);
      assert.deepEqual(await order(), ['log/aaaa-x.drv:1500', 'ls/bbbb.ls:6000000000']);
      const [first] = await db.leastRecentlyUsedAuxFiles(1);
      assert.ok(first && first.lastAccessedAt > 0);
      await db.deleteAuxFile({ kind: 'ls', name: 'bbbb.ls' });
      assert.deepEqual(await order(), ['log/aaaa-x.drv:1500']);
      assert.equal((await db.storeStats()).auxBytes, 1500);
      // A pinned path's listing is not offered for eviction (but still counted).
      const pinned = fixture('aux-pinned');
      await put(db, pinned);
      await db.addPin(pinned.hash, Date.now());
      await db.putAuxFile({ kind: 'ls', name: `${pinned.hash}.ls`, size: 10 });
      assert.deepEqual(await order(), ['log/aaaa-x.drv:1500']);
      assert.equal((await db.storeStats()).auxBytes, 1510);
      await db.removePin(pinned.hash);
      assert.deepEqual(await order(), ['log/aaaa-x.drv:1500', `ls/${pinned.hash}.ls:10`]);
    });

    it('fsck pages: every narinfo, NAR record and small-file record once, in id order, with what fsck needs', async () => {
      const db = await migrated();
      const a = fixture('pg-a', { refs: [baseName('pg-b')], sigs: [sig('k1', 1), sig('k2', 2)] });
      const b = fixture('pg-b', { file: 'pg-a' }); // shares a's NAR
      const c = fixture('pg-c', { minimal: true });
      for (const f of [a, b, c]) await put(db, f);
      await db.markNarFileStored(a.narFile.name, 1234);
      for (let i = 0; i < 5; i++) await db.putAuxFile({ kind: i % 2 ? 'log' : 'ls', name: `f${i}`, size: i + 1 });
      assert.deepEqual(await db.recordCounts(), { narInfos: 3, narFiles: 2, auxFiles: 5 });

      const narInfos = [...(await db.narInfoPage(0, 2))];
      assert.equal(narInfos.length, 2);
      narInfos.push(...(await db.narInfoPage(narInfos[1]!.id, 2)));
      assert.deepEqual(await db.narInfoPage(narInfos[2]!.id, 2), []);
      assert.deepEqual(narInfos.map((e) => e.hash), [a.hash, b.hash, c.hash]);
      assert.deepStrictEqual(narInfos[0]!.narInfo, a.narInfo, 'references and signatures in order');
      assert.deepStrictEqual(narInfos[2]!.narInfo, c.narInfo);
      assert.deepEqual(narInfos.map((e) => e.narFileName), [a.narFile.name, a.narFile.name, c.narFile.name]);

      const files = [...(await db.narFilePage(0, 1)), ...(await db.narFilePage(0, 10)).slice(1)];
      assert.deepEqual(files.map((f) => [f.name, f.narInfoCount, f.storedAt !== undefined, f.verifiedAt]), [
        [a.narFile.name, 2, true, undefined],
        [c.narFile.name, 1, false, undefined],
      ]);
      assert.equal(files[0]!.fileSize, 1234);
      assert.deepEqual(await db.narFilePage(files[1]!.id, 10), []);

      const aux = [...(await db.auxFilePage(undefined, 3))];
      aux.push(...(await db.auxFilePage(aux.at(-1), 3)));
      assert.deepEqual(aux.map((f) => `${f.kind}/${f.name}:${f.size}`), ['log/f1:2', 'log/f3:4', 'ls/f0:1', 'ls/f2:3', 'ls/f4:5']);
      assert.deepEqual(await db.auxFilePage(aux.at(-1), 3), []);
    });

    it('fsck repairs: verified times (cleared when stored anew), signatures replaced, unused NAR records deleted', async () => {
      const db = await migrated();
      const a = fixture('rp-a', { sigs: [sig('k1', 1), sig('k2', 2)] });
      const b = fixture('rp-b');
      for (const f of [a, b]) await put(db, f);
      await db.markNarFileStored(a.narFile.name, 1234);
      await db.markNarFileVerified(a.narFile.name, 1_700_000_000_000);
      const verifiedAt = async () => (await db.narFilePage(0, 10)).find((f) => f.name === a.narFile.name)?.verifiedAt;
      assert.equal(await verifiedAt(), 1_700_000_000_000);
      await db.markNarFileStored(a.narFile.name, 1234);
      assert.equal(await verifiedAt(), undefined, 'bytes stored again are not verified yet');

      assert.equal(await db.setNarInfoSignatures(a.hash, [sig('k3', 3), sig('k1', 1)]), true);
      assert.deepEqual((await db.getNarInfo(a.hash))?.sigs, [sig('k3', 3), sig('k1', 1)]);
      assert.equal(await db.setNarInfoSignatures(fixture('rp-none').hash, [sig('k3', 3)]), false);

      assert.equal(await db.deleteNarFileIfUnused(a.narFile.name), undefined, 'still used by a narinfo');
      assert.ok(await db.getNarFile(a.narFile.name));
      await fresh.exec(`DELETE FROM narinfos WHERE hash = '${b.hash}'`);
      assert.deepEqual(await db.deleteNarFileIfUnused(b.narFile.name), { name: b.narFile.name, size: 0 }, 'never stored: nothing freed');
      assert.equal(await db.getNarFile(b.narFile.name), undefined);
      assert.equal(await db.deleteNarFileIfUnused('missing.nar.xz'), undefined);
    });

    it('leastRecentlyUsedNarInfos gives the order of leastRecentlyUsed with the times', async () => {
      const db = await migrated();
      for (const f of [fixture('lt-a'), fixture('lt-b')]) await put(db, f);
      const timed = await db.leastRecentlyUsedNarInfos(10);
      assert.deepEqual(timed.map((r) => r.hash), await db.leastRecentlyUsed(10));
      assert.ok(timed.every((r) => typeof r.lastAccessedAt === 'number' && r.lastAccessedAt > 0));
    });

    it('cachedPaths: pages in the order asked, filtered and limited; stopping early frees the database', async () => {
      const db = await migrated();
      // top -> leaf, and top is pinned: leaf is kept as its closure. none has no Compression line
      // and no known file size.
      const leaf = fixture('cp-leaf', { narSize: 200 });
      const top = fixture('cp-top', { narSize: 300, refs: [baseName('cp-leaf')] });
      const none = fixture('cp-none', { narSize: 100, minimal: true });
      await put(db, leaf);
      await put(db, top);
      await db.putNarInfo(none.hash, none.narInfo, { ...none.narFile, fileSize: undefined });
      await db.markNarFileStored(leaf.narFile.name, 1234);
      await db.addPin(top.hash, 1);
      const later = Date.now() + 60_000;
      await db.touchNarInfos([none.hash], later + 2);
      await db.touchNarInfos([top.hash], later + 1);

      const read = async (on: Database, query: CachedPathQuery, pageSize = 2): Promise<CachedPath[][]> => {
        const pages: CachedPath[][] = [];
        for await (const page of on.cachedPaths(query, pageSize)) pages.push(page);
        return pages;
      };
      const hashes = async (query: CachedPathQuery) => (await read(db, query)).flat().map((p) => p.hash);

      const pages = await read(db, { order: 'accessed' });
      assert.deepEqual(pages.map((p) => p.length), [2, 1]);
      const [first, second, third] = pages.flat();
      assert.deepEqual(first, {
        hash: none.hash,
        storePath: none.narInfo.storePath,
        url: none.narInfo.url,
        compression: 'bzip2',
        narSize: 100,
        fileSize: undefined,
        lastAccessedAt: later + 2,
        pinned: false,
        pinnedDirectly: false,
        narStored: false,
      });
      assert.deepEqual(
        [second, third].map((p) => [p!.hash, p!.compression, p!.fileSize, p!.lastAccessedAt === later + 1, p!.pinned, p!.pinnedDirectly, p!.narStored]),
        [
          [top.hash, 'xz', 1234, true, true, true, false],
          [leaf.hash, 'xz', 1234, false, true, false, true],
        ],
      );
      assert.deepEqual(await hashes({ order: 'size' }), [top.hash, leaf.hash, none.hash]);
      assert.deepEqual(await hashes({ order: 'path' }), [leaf.hash, none.hash, top.hash]);
      assert.deepEqual(await hashes({ order: 'accessed', pinnedOnly: true }), [top.hash, leaf.hash]);
      assert.deepEqual(await hashes({ order: 'size', match: 'cp-n' }), [none.hash]);
      assert.deepEqual(await hashes({ order: 'path', match: top.hash.slice(4, 20) }), [top.hash]);
      assert.deepEqual(await hashes({ order: 'path', match: 'CP-' }), [], 'case-sensitive');
      assert.deepEqual(await hashes({ order: 'size', limit: 2 }), [top.hash, leaf.hash]);
      assert.deepEqual(await read(db, { order: 'accessed', match: 'absent' }), [], 'no page at all');

      // A reader that stops after one page ends the read: on one connection, the next one works.
      const single = openDatabase(fresh.url, { maxOpenConns: 1, maxIdleConns: 0 });
      opened.push(single);
      for await (const page of single.cachedPaths({ order: 'accessed' }, 1)) {
        assert.equal(page.length, 1);
        break;
      }
      assert.equal((await single.getNarInfo(leaf.hash))?.storePath, leaf.narInfo.storePath);
      assert.equal((await read(single, { order: 'path' }, 1)).length, 3);
    });

    it('server leases: renewed, listed while fresh, removed', async () => {
      const db = await migrated();
      const lease = { instanceId: 'node-a', hostname: 'host-a', pid: 4242, startedAt: 1_700_000_000_000, heartbeatAt: 1_700_000_000_000 };
      await db.renewLease(lease);
      await db.renewLease({ instanceId: 'node-b', hostname: 'host-b', pid: 7, startedAt: 1_600_000_000_000, heartbeatAt: 1_600_000_000_000 });
      assert.deepStrictEqual(await db.liveLeases(1_650_000_000_000), [lease]);
      // Renewing moves the heartbeat only; the start time stays the first one.
      await db.renewLease({ ...lease, startedAt: 1, heartbeatAt: 1_800_000_000_000 });
      assert.deepStrictEqual(await open().liveLeases(1_750_000_000_000), [{ ...lease, heartbeatAt: 1_800_000_000_000 }]);
      assert.equal((await db.liveLeases(0)).length, 2);
      await db.removeLease('node-a');
      await db.removeLease('never-there');
      assert.deepEqual((await db.liveLeases(0)).map((l) => l.instanceId), ['node-b']);
    });

    it('settings: first writer wins, also between instances racing each other', async () => {
      const db = await migrated();
      assert.equal(await db.getSetting('secret_key'), undefined);
      assert.equal(await db.putSettingIfAbsent('secret_key', 'first'), 'first');
      assert.equal(await db.putSettingIfAbsent('secret_key', 'second'), 'first');
      assert.equal(await db.getSetting('secret_key'), 'first');

      const instances = [db, open(), open()];
      for (let i = 0; i < 20; i++) {
        const key = `raced-${i}`;
        const answers = await Promise.all(instances.map((inst, n) => inst.putSettingIfAbsent(key, `value-from-${n}`)));
        assert.equal(new Set(answers).size, 1, `instances disagree on ${key}: ${answers.join(', ')}`);
        assert.match(answers[0]!, /^value-from-\d$/);
        assert.equal(await db.getSetting(key), answers[0]);
      }
    });

    it('putSetting replaces a value', async () => {
      const db = await migrated();
      await db.putSetting('state', 'one');
      await db.putSetting('state', 'two');
      assert.equal(await db.getSetting('state'), 'two');
      assert.equal(await open().getSetting('state'), 'two');
    });

    it('importNarInfos keeps the records and their times, skips hashes already there, shares NAR records', async () => {
      const db = await migrated();
      const a = fixture('imp-a', { refs: [baseName('imp-b')], sigs: [sig('go-1', 1), sig('up-1', 2)] });
      const b = fixture('imp-b', { minimal: true });
      const shared = fixture('imp-shared', { file: 'imp-b', minimal: true });
      const kept = fixture('imp-kept');
      await put(db, kept);
      const entry = (f: Fixture, at: number) => ({
        hash: f.hash,
        narInfo: f.narInfo,
        narFile: { ...f.narFile, upstreamUrl: undefined, storedAt: at, fileSize: 999 },
        createdAt: at,
        lastAccessedAt: at + 1,
        narFileCreatedAt: at,
        narFileLastAccessedAt: at + 2,
      });
      const inserted = await db.importNarInfos([entry(a, 1_000), entry(b, 2_000), entry(shared, 3_000), entry(kept, 4_000)]);
      assert.equal(inserted, 3);
      assert.equal(formatNarInfo((await db.getNarInfo(a.hash))!), a.text);
      assert.equal(formatNarInfo((await db.getNarInfo(b.hash))!), b.text);
      assert.equal(formatNarInfo((await db.getNarInfo(kept.hash))!), kept.text, 'an existing narinfo is left as it was');
      assert.deepEqual(await db.getNarFile(a.narFile.name), { ...a.narFile, upstreamUrl: undefined, storedAt: 1_000, fileSize: 999 });
      // The least recently used first, with the times the records came with.
      const order = (await db.leastRecentlyUsedNarInfos(10)).filter((r) => r.hash !== kept.hash);
      assert.deepEqual(order, [
        { hash: a.hash, lastAccessedAt: 1_001 },
        { hash: b.hash, lastAccessedAt: 2_001 },
        { hash: shared.hash, lastAccessedAt: 3_001 },
      ]);
      const stats = await db.storeStats();
      assert.equal(stats.narInfoCount, 4);
      // a, b (shared) and kept's NAR record, which only now learns that its bytes are stored.
      assert.equal(stats.storedBytes, 3 * 999);
      assert.equal(await db.importNarInfos([entry(a, 5_000)]), 0, 'importing again changes nothing');
      assert.deepEqual(await db.leastRecentlyUsedNarInfos(1), [{ hash: a.hash, lastAccessedAt: 1_001 }]);
    });

    it('refuses a schema migrated past its compatibility floor, accepts a newer expand-only one', async () => {
      const db = await migrated();
      await fresh.exec(
        `INSERT INTO schema_migrations (version, name, compat_floor, applied_at) VALUES (999, 'from the future', 999, 0)`,
      );
      await assert.rejects(open().migrate(), IncompatibleSchemaError);
      await assert.rejects(db.migrate(), (error: Error) => {
        assert.ok(error instanceof IncompatibleSchemaError);
        assert.match(error.message, /version 999/);
        return true;
      });

      const other = await migrated();
      await fresh.exec(
        `INSERT INTO schema_migrations (version, name, compat_floor, applied_at) VALUES (999, 'expand only', 1, 0)`,
      );
      assert.deepEqual(await other.migrate(), []);
      assert.deepEqual(await open().migrate(), []);
    });
  });
}

/** The versions in schema_migrations, read through a raw connection. */
async function versionsOf(fresh: FreshDatabase): Promise<number[]> {
  if (fresh.url.startsWith('sqlite:')) {
    const raw = new BetterSqlite3(fresh.url.slice('sqlite:'.length), { readonly: true });
    try {
      return raw.prepare<[], { version: number }>('SELECT version FROM schema_migrations ORDER BY version').all().map((r) => r.version);
    } finally {
      raw.close();
    }
  }
  assert.ok(server);
  const name = decodeURIComponent(new URL(fresh.url).pathname.slice(1));
  const rows = await server.query<{ version: number }>(name, 'SELECT version FROM schema_migrations ORDER BY version');
  return rows.map((r) => r.version);
}

describe('PostgreSQL specifics', { skip: postgresEngine.skip, timeout: 180_000 }, () => {
  let pgServer: PostgresServer;
  before(async () => {
    pgServer = await startPostgres();
  }, { timeout: 120_000 });
  after(async () => {
    await pgServer?.stop();
  });

  it('connects through a unix socket URL (postgresql:///db?host=/dir)', async () => {
    const tcpUrl = await pgServer.createDatabase('socket');
    const name = decodeURIComponent(new URL(tcpUrl).pathname.slice(1));
    const db = openDatabase(pgServer.socketUrl(name), { maxOpenConns: 2, maxIdleConns: 1 });
    try {
      assert.deepEqual(await db.migrate(), ALL_VERSIONS);
      const f = fixture('via-socket', { refs: [baseName('x')] });
      await put(db, f);
      assert.deepStrictEqual(await db.getNarInfo(f.hash), f.narInfo);
    } finally {
      await db.close();
    }
  });

  it('respects maxOpenConns: a pool of one still serves concurrent callers', async () => {
    const url = await pgServer.createDatabase('pool');
    const db = openDatabase(url, { maxOpenConns: 1, maxIdleConns: 0 });
    try {
      await db.migrate();
      await Promise.all(Array.from({ length: 8 }, (_, i) => put(db, fixture(`pool-${i}`))));
      assert.equal((await db.storeStats()).narInfoCount, 8);
      const rows = await pgServer.query<{ n: string }>(
        'postgres',
        `SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1 AND application_name = 'ncps'`,
        [decodeURIComponent(new URL(url).pathname.slice(1))],
      );
      assert.ok(Number(rows[0]!.n) <= 1, `expected at most 1 connection, saw ${rows[0]!.n}`);
    } finally {
      await db.close();
    }
  });

  it('uses the schema beside a Go ncps once it exists; opened beside Go, it works there', async () => {
    const url = await pgServer.createDatabase('beside');
    const name = decodeURIComponent(new URL(url).pathname.slice(1));
    // Go-named tables in public, which must never be touched.
    await pgServer.query(name, 'CREATE TABLE narinfos (id BIGINT PRIMARY KEY, hash TEXT, updated_at TIMESTAMPTZ)');
    await pgServer.query(name, `CREATE SCHEMA ${SCHEMA_BESIDE_GO}`);
    const beside = openDatabase(url, POOL, { besideGo: true });
    const later = openDatabase(url, POOL);
    try {
      assert.deepEqual(await beside.migrate(), ALL_VERSIONS);
      const f = fixture('beside-go');
      await put(beside, f);
      assert.deepStrictEqual(await later.getNarInfo(f.hash), f.narInfo, 'a later instance finds the tables beside Go by itself');
      const where = await pgServer.query<{ table_schema: string }>(
        name,
        `SELECT DISTINCT table_schema FROM information_schema.tables WHERE table_name = 'narinfos' ORDER BY 1`,
      );
      assert.deepEqual(where.map((r) => r.table_schema), [SCHEMA_BESIDE_GO, 'public']);
      const goColumns = await pgServer.query<{ column_name: string }>(
        name,
        `SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'narinfos' ORDER BY 1`,
      );
      assert.deepEqual(goColumns.map((r) => r.column_name), ['hash', 'id', 'updated_at']);
    } finally {
      await beside.close();
      await later.close();
    }
  });

  it('reports an unreachable server when migrating', async () => {
    const db = openDatabase(`postgresql://postgres@127.0.0.1:1/none`, POOL);
    try {
      await assert.rejects(db.migrate(), /ECONNREFUSED|connect/);
    } finally {
      await db.close();
    }
  });
});

describe('openDatabase and redactDatabaseUrl', () => {
  it('SQLite: uses the file beside a Go ncps file once it exists, and never writes the Go file', async () => {
    const dir = await makeTempDir('beside-go');
    const goFile = path.join(dir, 'db.sqlite');
    const raw = new BetterSqlite3(goFile);
    raw.exec('CREATE TABLE narinfos (id INTEGER PRIMARY KEY, hash TEXT, updated_at TIMESTAMP)');
    raw.close();
    const before = createHash('sha256').update(readFileSync(goFile)).digest('hex');
    const beside = openDatabase(`sqlite:${goFile}`, POOL, { besideGo: true });
    await beside.migrate();
    await put(beside, fixture('beside-sqlite'));
    await beside.close();
    const later = openDatabase(`sqlite:${goFile}`, POOL);
    try {
      assert.ok(await later.getNarInfo(hashOf('beside-sqlite')));
      assert.equal((later as SqliteDatabase).file, sqliteFileBesideGo(goFile));
    } finally {
      await later.close();
    }
    assert.equal(createHash('sha256').update(readFileSync(goFile)).digest('hex'), before);
  });

  it('rejects MySQL and unknown schemes with UnsupportedDatabaseError', () => {
    assert.throws(() => openDatabase('mysql://u:p@db/ncps', POOL), (error: Error) => {
      assert.ok(error instanceof UnsupportedDatabaseError);
      assert.match(error.message, /^MySQL is not supported as this ncps's database; use SQLite or PostgreSQL \(a Go ncps MySQL database is taken over with --go-database-url\)$/);
      return true;
    });
    assert.throws(() => openDatabase('redis://u:secret@db/0', POOL), (error: Error) => {
      assert.ok(error instanceof UnsupportedDatabaseError);
      assert.match(error.message, /unsupported database URL/);
      assert.doesNotMatch(error.message, /secret/);
      return true;
    });
    assert.throws(() => openDatabase('/var/lib/ncps/db.sqlite', POOL), UnsupportedDatabaseError);
  });

  it('accepts postgres:// and postgresql:// URLs without connecting', async () => {
    for (const url of ['postgres://u:p@127.0.0.1:1/x', 'postgresql:///ncps?host=/run/postgresql', 'POSTGRESQL://h/x']) {
      const db = openDatabase(url, POOL);
      assert.ok(db instanceof PostgresDatabase, url);
      await db.close();
    }
  });

  it('masks passwords in URLs', () => {
    assert.equal(redactDatabaseUrl('postgres://ncps:s3cret@db:5432/ncps'), 'postgres://ncps:***@db:5432/ncps');
    assert.equal(redactDatabaseUrl('postgresql://ncps:p@ss/w0rd@db/ncps?sslmode=require'), 'postgresql://ncps:***@db/ncps?sslmode=require');
    assert.equal(redactDatabaseUrl('postgresql://ncps@db/ncps'), 'postgresql://ncps@db/ncps');
    assert.equal(redactDatabaseUrl('postgresql:///ncps?host=/run/postgresql'), 'postgresql:///ncps?host=/run/postgresql');
    assert.equal(
      redactDatabaseUrl('postgresql:///ncps?user=ncps&password=hunter2&host=/run/postgresql'),
      'postgresql:///ncps?user=ncps&password=***&host=/run/postgresql',
    );
    assert.equal(redactDatabaseUrl('sqlite:/var/lib/ncps/db.sqlite'), 'sqlite:/var/lib/ncps/db.sqlite');
  });
});
