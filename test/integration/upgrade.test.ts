// Upgrading an existing ncps, as the upgrading guide describes it:
//  - a data directory from before narinfo metadata lived in the database is served as it is, and
//    each narinfo moves into the database when a client asks for it (background migration),
//    signed by the adopted old key so clients that trust it keep working;
//  - the database schema is migrated on start-up, after a backup that restores (rollback);
//  - a database migrated by a newer, incompatible ncps is refused; an expand-only one is not;
//  - several instances starting together on one database apply each migration once.
import assert from 'node:assert/strict';
import { copyFile, mkdir, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import BetterSqlite3 from 'better-sqlite3';
import { MIGRATIONS, LATEST_SCHEMA_VERSION } from '../../src/db/migrations';
import { generateSecretKey, narInfoFingerprint, parseNarInfo, parseSecretKey, verifySignature } from '../../src/nix';
import { signedUpstream, substituteAndVerify, substituteClosure, teardown, type SignedUpstream } from '../helpers/fixture';
import { request } from '../helpers/http';
import {
  legacyNarInfoPath,
  makeLegacyDataDir,
  narInfoHashesInDb,
  schemaVersionsInDb,
  SQLITE_DIALECT as SQLITE,
  createV1Database,
  withSqlite,
  writeSyntheticLegacyNarInfos,
  type LegacyDataDir,
} from '../helpers/legacy';
import { freePort, runNcps, startNcps, type NcpsProcess } from '../helpers/ncps';
import { cleanupTempDirs, hashPart, makeTempDir, nixAvailable, type Closure } from '../helpers/nix';
import type { RunResult } from '../helpers/proc';

const skip = nixAvailable() ? false : 'nix-bin not installed';
// Several suites may run at once on two cores: be generous.
const TIMEOUT = 300_000;
const HOOK_TIMEOUT = 600_000;

/** An upstream nobody listens on: everything must come from the data directory. */
async function closedUpstream(): Promise<string> {
  return `http://127.0.0.1:${await freePort()}`;
}

/** Some public key ncps requires; it never sees anything signed by it. */
const UNRELATED_KEY = generateSecretKey('unrelated-upstream-1').publicKey.text;

function runDiag(r: RunResult): string {
  return `exit ${r.code}${r.signal ? ` (${r.signal})` : ''}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
}

/** The JSON log lines of a process (non-JSON lines skipped). */
function logLines(logs: string): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const line of logs.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      /* a line cut in the middle */
    }
  }
  return out;
}

/** Value of a Prometheus sample `name{labels}` in an exposition text (undefined if absent). */
function metricValue(text: string, name: string, labels: string): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const m = /^[^{]+\{([^}]*)\}\s+(\S+)/.exec(line);
    if (m && m[1]!.split(',').includes(labels)) return Number(m[2]);
  }
  return undefined;
}

/**
 * Turns a database migrated by this release back into a schema-1 database: undoes what every
 * later migration created (tables, indexes, added columns) and forgets their rows.
 */
function downgradeToV1(file: string): void {
  withSqlite(file, (db) => {
    db.transaction(() => {
      for (const migration of [...MIGRATIONS].reverse()) {
        if (migration.version <= 1) continue;
        for (const statement of [...migration.statements(SQLITE)].reverse()) {
          const s = statement.replace(/\s+/g, ' ').trim();
          let m: RegExpExecArray | null;
          if ((m = /^CREATE TABLE (?:IF NOT EXISTS )?(\w+)/i.exec(s))) db.exec(`DROP TABLE ${m[1]}`);
          else if ((m = /^CREATE (?:UNIQUE )?INDEX (?:IF NOT EXISTS )?(\w+)/i.exec(s))) db.exec(`DROP INDEX ${m[1]}`);
          else if ((m = /^ALTER TABLE (\w+) ADD (?:COLUMN )?(\w+)/i.exec(s))) db.exec(`ALTER TABLE ${m[1]} DROP COLUMN ${m[2]}`);
          else throw new Error(`the test does not know how to undo this statement of migration ${migration.version}: ${s}`);
        }
      }
      db.prepare('DELETE FROM schema_migrations WHERE version > 1').run();
    })();
  });
}

function tableNames(file: string): string[] {
  return withSqlite(file, (db) =>
    db
      .prepare<[], { name: string }>(`SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`)
      .all()
      .map((r) => r.name),
  );
}

// ---------------------------------------------------------------------------------------------
// Option 1 of the guide: background migration.

describe('background migration of a legacy data directory (upstream unreachable)', { skip }, () => {
  let legacy: LegacyDataDir;
  let ncps: NcpsProcess | undefined;
  let upstreamUrl: string;
  let untouchedHash: string;

  before(
    async () => {
      legacy = await makeLegacyDataDir({ label: 'upgrade-bg' });
      // One more legacy narinfo, signed by the same old key, that no client asks for.
      const extra = await writeSyntheticLegacyNarInfos(legacy.dataDir, 1, {
        key: parseSecretKey(legacy.oldKey.secretKey),
        writeKey: false,
      });
      untouchedHash = extra.hashes[0]!;
      upstreamUrl = await closedUpstream();
      ncps = await startNcps({
        upstreams: [upstreamUrl],
        publicKeys: [UNRELATED_KEY],
        dataDir: legacy.dataDir,
        extraArgs: ['--prometheus-enabled'],
        readyTimeoutMs: 60_000,
      });
    },
    { timeout: HOOK_TIMEOUT },
  );

  after(() => teardown(ncps), { timeout: HOOK_TIMEOUT });

  it('adopts config/cache.key: /pubkey is the old key', { timeout: TIMEOUT }, async () => {
    assert.ok(ncps);
    assert.equal(await ncps.publicKey(), legacy.oldKey.publicKey);
    assert.match(ncps.logs(), /older ncps|legacy|migrate-narinfo/i, 'the server should say it found legacy narinfo files');
  });

  it('serves the closure to the Nix client trusting only the old key', { timeout: TIMEOUT }, async () => {
    assert.ok(ncps);
    for (const hash of legacy.hashes) assert.ok(existsSync(legacyNarInfoPath(legacy.dataDir, hash)), 'legacy file present before');
    await substituteAndVerify(legacy.closure, { substituter: ncps.url, trustedPublicKey: legacy.oldKey.publicKey, ncps });
  });

  it('moved each accessed narinfo into the database and deleted its file', { timeout: TIMEOUT }, async () => {
    assert.ok(ncps);
    const inDb = new Set(narInfoHashesInDb(path.join(legacy.dataDir, 'db.sqlite')));
    for (const hash of legacy.hashes) {
      assert.equal(existsSync(legacyNarInfoPath(legacy.dataDir, hash)), false, `${hash}.narinfo should be gone from store/narinfo`);
      assert.ok(inDb.has(hash), `${hash} should be in the database`);
    }
    // Gradual: what nobody asked for stays where it is.
    assert.ok(existsSync(legacyNarInfoPath(legacy.dataDir, untouchedHash)), 'an unrequested legacy file must stay');
    assert.ok(!inDb.has(untouchedHash));
    // The NAR files stay in place (same layout) and the database knows they are stored.
    withSqlite(path.join(legacy.dataDir, 'db.sqlite'), (db) => {
      for (const name of legacy.narNames) {
        const row = db.prepare<[string], { stored_at: number | null }>('SELECT stored_at FROM nar_files WHERE name = ?').get(name);
        assert.ok(row, `nar_files row for ${name}`);
        assert.notEqual(row.stored_at, null, `${name} should be marked stored`);
      }
    });
  });

  it('serves the migrated narinfo with the old signature, and the unrequested one too', { timeout: TIMEOUT }, async () => {
    assert.ok(ncps);
    for (const storePath of legacy.closure.paths) {
      const res = await request(ncps.url, `/${hashPart(storePath)}.narinfo`);
      assert.equal(res.status, 200, res.text);
      assert.match(res.text, new RegExp(`^StorePath: ${storePath}$`, 'm'));
      assert.match(res.text, /^Sig: old-ncps-1:/m);
    }
    const res = await request(ncps.url, `/${untouchedHash}.narinfo`);
    assert.equal(res.status, 200, `${res.status} ${res.text}\n${ncps.logs().slice(-3000)}`);
    assert.equal(existsSync(legacyNarInfoPath(legacy.dataDir, untouchedHash)), false, 'migrated on that access');
  });

  it('counts the background migrations in /metrics', { timeout: TIMEOUT }, async () => {
    assert.ok(ncps);
    const res = await request(ncps.url, '/metrics');
    assert.equal(res.status, 200);
    const success = metricValue(res.text, 'ncps_background_migration_objects_total', 'result="success"');
    assert.ok(success !== undefined, `no ncps_background_migration_objects_total{result="success"} in:\n${res.text.slice(0, 4000)}`);
    assert.ok(success >= legacy.closure.paths.length, `success ${success} < closure size ${legacy.closure.paths.length}`);
    assert.equal(metricValue(res.text, 'ncps_background_migration_objects_total', 'result="failure"') ?? 0, 0);
  });

  it('keeps serving from the database once the legacy files are gone (restart)', { timeout: TIMEOUT }, async () => {
    assert.ok(ncps);
    const code = await ncps.stop();
    assert.equal(code, 0, ncps.logs().slice(-3000));
    await rm(path.join(legacy.dataDir, 'store', 'narinfo'), { recursive: true, force: true });
    await rm(path.join(legacy.dataDir, 'config'), { recursive: true, force: true });
    ncps = await startNcps({ upstreams: [upstreamUrl], publicKeys: [UNRELATED_KEY], dataDir: legacy.dataDir, readyTimeoutMs: 60_000 });
    assert.equal(await ncps.publicKey(), legacy.oldKey.publicKey, 'the adopted key now lives in the database');
    await substituteAndVerify(legacy.closure, { substituter: ncps.url, trustedPublicKey: legacy.oldKey.publicKey, ncps });
  });
});

describe('background migration with a new signing key (--cache-secret-key-path)', () => {
  let ncps: NcpsProcess | undefined;
  after(async () => {
    await ncps?.stop();
    await cleanupTempDirs();
  });

  it('serves migrated narinfos signed by the key it publishes, keeping the old signature', { timeout: TIMEOUT }, async () => {
    const dataDir = await makeTempDir('legacy-newkey');
    const { hashes, key: oldKey } = await writeSyntheticLegacyNarInfos(dataDir, 2);
    const newKey = generateSecretKey('brand-new-key-1');
    const keyFile = path.join(dataDir, 'new.sec');
    await writeFile(keyFile, newKey.text);
    ncps = await startNcps({
      upstreams: [await closedUpstream()],
      publicKeys: [UNRELATED_KEY],
      dataDir,
      extraArgs: [`--cache-secret-key-path=${keyFile}`],
      readyTimeoutMs: 60_000,
    });
    assert.equal(await ncps.publicKey(), newKey.publicKey.text);
    for (const hash of hashes) {
      for (const attempt of ['migrating access', 'served from the database']) {
        const res = await request(ncps.url, `/${hash}.narinfo`);
        assert.equal(res.status, 200, res.text);
        const narInfo = parseNarInfo(res.text);
        const fingerprint = narInfoFingerprint(narInfo);
        assert.ok(
          narInfo.sigs.some((sig) => verifySignature(sig, fingerprint, [oldKey.publicKey])),
          `${attempt}: the old signature should be kept:\n${res.text}`,
        );
        assert.ok(
          narInfo.sigs.some((sig) => verifySignature(sig, fingerprint, [newKey.publicKey])),
          `${attempt}: a legacy narinfo is served without a signature by the key ncps publishes at /pubkey ` +
            `(${newKey.publicKey.text}), so clients trusting ncps cannot substitute it:\n${res.text}`,
        );
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Database migrations on start-up, backups and rollback.

describe('schema upgrade from a version-1 database', { skip }, () => {
  let closure: Closure;
  let upstream: SignedUpstream | undefined;
  let ncps: NcpsProcess | undefined;
  let dataDir: string;
  let dbFile: string;
  let ncpsKey: string;
  let upstreamKey: string;
  let backupFile: string;

  before(
    async () => {
      upstream = await signedUpstream({ label: 'upgrade-schema', keyName: 'upgrade-upstream-1' });
      upstreamKey = upstream.key.publicKey;
      closure = upstream.closure;
      // A cache filled by this release: fetch the closure through it, then stop it.
      dataDir = await makeTempDir('upgrade-schema-data');
      dbFile = path.join(dataDir, 'db.sqlite');
      ncps = await startNcps({ upstreams: [upstream.url], publicKeys: [upstreamKey], dataDir, readyTimeoutMs: 60_000 });
      ncpsKey = await ncps.publicKey();
      await substituteClosure(closure, { substituter: ncps.url, trustedPublicKey: ncpsKey, ncps });
      // Every NAR must be stored before stopping (the prefetch/download may still run).
      await ncps.stop();
      ncps = undefined;
      await upstream.stop();
      upstream = undefined;
      // ... and turn its database into one an older release (schema 1) left behind.
      downgradeToV1(dbFile);
    },
    { timeout: HOOK_TIMEOUT },
  );

  after(() => teardown(ncps, upstream), { timeout: HOOK_TIMEOUT });

  it('starts from a genuine schema-1 database', { timeout: TIMEOUT }, async () => {
    assert.deepEqual(schemaVersionsInDb(dbFile), [1]);
    const status = await runNcps(['migrate', 'status', `--cache-database-url=sqlite:${dbFile}`, `--cache-storage-local=${dataDir}`]);
    assert.equal(status.code, 0, runDiag(status));
    assert.match(status.stdout, /^schema version: 1 /m);
    for (const m of MIGRATIONS.filter((x) => x.version > 1)) {
      assert.match(status.stdout, new RegExp(`^\\s*pending\\s+${m.version}\\s`, 'm'), runDiag(status));
    }
    assert.equal(narInfoHashesInDb(dbFile).length, closure.paths.length);
  });

  it('migrates to the latest schema on start, after a backup, and serves everything', { timeout: TIMEOUT }, async () => {
    ncps = await startNcps({ upstreams: [await closedUpstream()], publicKeys: [upstreamKey], dataDir, readyTimeoutMs: 60_000 });
    const line = logLines(ncps.logs()).find((l) => l.msg === 'database migrated');
    assert.ok(line, `no 'database migrated' log line:\n${ncps.logs().slice(-4000)}`);
    assert.deepEqual(
      line.versions,
      MIGRATIONS.filter((m) => m.version > 1).map((m) => m.version),
    );
    assert.equal(typeof line.backup, 'string', `the log line should name the backup: ${JSON.stringify(line)}`);
    backupFile = line.backup as string;
    assert.equal(path.dirname(backupFile), dataDir, 'the backup lies next to the database');
    assert.match(path.basename(backupFile), /^db\.sqlite\.backup-v1-/);
    assert.ok((await stat(backupFile)).size > 0);
    assert.deepEqual(schemaVersionsInDb(dbFile), MIGRATIONS.map((m) => m.version));

    assert.equal(await ncps.publicKey(), ncpsKey, 'the signing key survives the migration');
    await substituteAndVerify(closure, { substituter: ncps.url, trustedPublicKey: ncpsKey, ncps });
  });

  it('left a backup that is a valid SQLite database at schema 1 with the data', { timeout: TIMEOUT }, async () => {
    assert.ok(backupFile);
    const files = (await readdir(dataDir)).filter((f) => f.startsWith('db.sqlite.backup-v'));
    assert.deepEqual(files, [path.basename(backupFile)]);
    const db = new BetterSqlite3(backupFile, { readonly: true, fileMustExist: true });
    try {
      assert.equal(db.pragma('integrity_check', { simple: true }), 'ok');
      const versions = db.prepare<[], { version: number }>('SELECT version FROM schema_migrations').all().map((r) => r.version);
      assert.deepEqual(versions, [1]);
      const count = db.prepare<[], { n: number }>('SELECT count(*) AS n FROM narinfos').get()!.n;
      assert.equal(count, closure.paths.length);
    } finally {
      db.close();
    }
  });

  it('`migrate up` has nothing to do and `migrate status` lists every version', { timeout: TIMEOUT }, async () => {
    const flags = [`--cache-database-url=sqlite:${dbFile}`, `--cache-storage-local=${dataDir}`];
    const up = await runNcps(['migrate', 'up', ...flags]);
    assert.equal(up.code, 0, runDiag(up));
    assert.match(up.stdout, /nothing to migrate/);
    assert.doesNotMatch(up.stdout, /backup/);
    const status = await runNcps(['migrate', 'status', ...flags]);
    assert.equal(status.code, 0, runDiag(status));
    assert.match(status.stdout, new RegExp(`^schema version: ${LATEST_SCHEMA_VERSION} `, 'm'));
    for (const m of MIGRATIONS) assert.match(status.stdout, new RegExp(`^\\s*applied\\s+${m.version}\\s`, 'm'), runDiag(status));
    assert.doesNotMatch(status.stdout, /pending/);
  });

  it('rolls back by copying the backup over the database', { timeout: TIMEOUT }, async () => {
    assert.ok(ncps);
    assert.equal(await ncps.stop(), 0);
    ncps = undefined;
    await copyFile(backupFile, dbFile);
    await rm(`${dbFile}-wal`, { force: true });
    await rm(`${dbFile}-shm`, { force: true });
    const status = await runNcps(['migrate', 'status', `--cache-database-url=sqlite:${dbFile}`, `--cache-storage-local=${dataDir}`]);
    assert.equal(status.code, 0, runDiag(status));
    assert.match(status.stdout, /^schema version: 1 /m, runDiag(status));
    assert.deepEqual(schemaVersionsInDb(dbFile), [1]);
    for (const t of ['pins', 'server_leases']) assert.ok(!tableNames(dbFile).includes(t), `${t} should be gone after restoring`);

    // And the restored database upgrades again and serves the same cache with the same key.
    ncps = await startNcps({ upstreams: [await closedUpstream()], publicKeys: [upstreamKey], dataDir, readyTimeoutMs: 60_000 });
    assert.equal(await ncps.publicKey(), ncpsKey);
    assert.deepEqual(schemaVersionsInDb(dbFile), MIGRATIONS.map((m) => m.version));
    await substituteClosure(closure, { substituter: ncps.url, trustedPublicKey: ncpsKey, ncps });
  });
});

describe('`ncps migrate up` on a schema-1 database made from MIGRATIONS[0]', () => {
  let dir: string;
  let dbFile: string;
  before(async () => {
    dir = await makeTempDir('migrate-up-v1');
    dbFile = path.join(dir, 'db', 'db.sqlite');
    await mkdir(path.dirname(dbFile), { recursive: true });
    createV1Database(dbFile);
    // A row written with the statements of that time (the narinfo needs a nar_files row).
    withSqlite(dbFile, (db) => {
      const now = Date.now();
      const { id } = db
        .prepare(`INSERT INTO nar_files (name, compression, nar_hash, nar_size, created_at, last_accessed_at) VALUES (?, 'xz', ?, 1, ?, ?) RETURNING id`)
        .get(`${'1'.repeat(52)}.nar.xz`, `sha256:${'0'.repeat(52)}`, now, now) as { id: number };
      db.prepare(
        `INSERT INTO narinfos (hash, store_path, url, nar_hash, nar_size, nar_file_id, created_at, last_accessed_at) VALUES (?, ?, ?, ?, 1, ?, ?, ?)`,
      ).run('a'.repeat(32), `/nix/store/${'a'.repeat(32)}-v1`, `nar/${'1'.repeat(52)}.nar.xz`, `sha256:${'0'.repeat(52)}`, id, now, now);
    });
  });
  after(() => cleanupTempDirs());

  it('--dry-run lists the pending migrations and changes nothing', { timeout: TIMEOUT }, async () => {
    const r = await runNcps(['migrate', 'up', '--dry-run', `--cache-storage-local=${dir}`]);
    assert.equal(r.code, 0, runDiag(r));
    for (const m of MIGRATIONS.filter((x) => x.version > 1)) assert.match(r.stdout, new RegExp(`would apply ${m.version}\\b`), runDiag(r));
    assert.deepEqual(schemaVersionsInDb(dbFile), [1]);
    assert.deepEqual((await readdir(path.dirname(dbFile))).filter((f) => f.includes('backup')), []);
  });

  it('applies them, reports the backup, keeps the row', { timeout: TIMEOUT }, async () => {
    const r = await runNcps(['migrate', 'up', `--cache-database-url=sqlite:${dbFile}`, `--cache-storage-local=${dir}`]);
    assert.equal(r.code, 0, runDiag(r));
    for (const m of MIGRATIONS.filter((x) => x.version > 1)) assert.match(r.stdout, new RegExp(`^applied ${m.version}\\b`, 'm'), runDiag(r));
    const backup = /backup taken before migrating: (\S+)/.exec(r.stdout)?.[1];
    assert.ok(backup, runDiag(r));
    assert.match(path.basename(backup), /^db\.sqlite\.backup-v1-/);
    assert.deepEqual(schemaVersionsInDb(backup), [1]);
    assert.deepEqual(schemaVersionsInDb(dbFile), MIGRATIONS.map((m) => m.version));
    assert.deepEqual(narInfoHashesInDb(dbFile), ['a'.repeat(32)]);

    const again = await runNcps(['migrate', 'up', `--cache-storage-local=${dir}`]);
    assert.equal(again.code, 0, runDiag(again));
    assert.match(again.stdout, /nothing to migrate/);
  });
});

// ---------------------------------------------------------------------------------------------
// Compatibility floors: refusing a database from a newer, incompatible ncps.

describe('a database migrated by a newer ncps', () => {
  let dataDir: string;
  let dbFile: string;
  let ncps: NcpsProcess | undefined;

  before(async () => {
    dataDir = await makeTempDir('newer-db');
    dbFile = path.join(dataDir, 'db.sqlite');
    const r = await runNcps(['migrate', 'up', `--cache-database-url=sqlite:${dbFile}`, `--cache-storage-local=${dataDir}`]);
    assert.equal(r.code, 0, runDiag(r));
    withSqlite(dbFile, (db) =>
      db.prepare('INSERT INTO schema_migrations (version, name, compat_floor, applied_at) VALUES (999, ?, 999, ?)').run('from the future', Date.now()),
    );
  });
  after(async () => {
    await ncps?.stop();
    await cleanupTempDirs();
  });

  const serveArgs = async () => [
    'serve',
    '--cache-hostname=ncps-test',
    `--server-addr=127.0.0.1:${await freePort()}`,
    `--cache-storage-local=${dataDir}`,
    `--cache-database-url=sqlite:${dbFile}`,
    `--cache-upstream-url=${await closedUpstream()}`,
    `--cache-upstream-public-key=${UNRELATED_KEY}`,
  ];

  it('is refused by serve (exit 1, names the newer ncps) when its floor is above this release', { timeout: TIMEOUT }, async () => {
    const r = await runNcps(await serveArgs(), { timeoutMs: 60_000 });
    assert.equal(r.timedOut, false, `serve kept running on an incompatible database:\n${runDiag(r)}`);
    assert.equal(r.code, 1, runDiag(r));
    assert.match(r.stdout + r.stderr, /newer ncps/, runDiag(r));
    assert.deepEqual(schemaVersionsInDb(dbFile), [...MIGRATIONS.map((m) => m.version), 999], 'nothing changed');
  });

  it('is refused by `migrate up` and flagged by `migrate status`', { timeout: TIMEOUT }, async () => {
    const flags = [`--cache-database-url=sqlite:${dbFile}`, `--cache-storage-local=${dataDir}`];
    const up = await runNcps(['migrate', 'up', ...flags]);
    assert.equal(up.code, 1, runDiag(up));
    assert.match(up.stderr, /newer ncps/);
    const status = await runNcps(['migrate', 'status', ...flags]);
    assert.notEqual(status.code, 0, runDiag(status));
    assert.match(status.stdout, /999\s+\(from a newer ncps\)/, runDiag(status));
    assert.match(status.stderr, /newer ncps/);
  });

  it('is accepted when the newer migrations were expand-only (floor 1)', { timeout: TIMEOUT }, async () => {
    withSqlite(dbFile, (db) => db.prepare('UPDATE schema_migrations SET compat_floor = 1 WHERE version = 999').run());
    ncps = await startNcps({ upstreams: [await closedUpstream()], publicKeys: [UNRELATED_KEY], dataDir, readyTimeoutMs: 60_000 });
    const info = await request(ncps.url, '/nix-cache-info');
    assert.equal(info.status, 200);
    assert.equal(await ncps.stop(), 0);
    ncps = undefined;
    assert.deepEqual(schemaVersionsInDb(dbFile), [...MIGRATIONS.map((m) => m.version), 999]);
  });
});

// ---------------------------------------------------------------------------------------------
// Rolling starts: several instances on one fresh database.

describe('several servers starting at once on one fresh SQLite database', () => {
  after(() => cleanupTempDirs());

  // One SQLite file serves one server: a server that finds another one using it refuses to start
  // (early-refusals.test.ts). Started at the same moment, several may still get as far as the
  // migrations: those must be recorded once, and whoever serves must sign with one key.
  for (let round = 1; round <= 3; round++) {
    it(`migrate once, and each either serves with the one key or says another server uses the database (round ${round})`, { timeout: TIMEOUT }, async () => {
      const dataDir = await makeTempDir(`concurrent-start-${round}`);
      const upstreamUrl = await closedUpstream();
      const results = await Promise.allSettled(
        [1, 2, 3].map(() => startNcps({ upstreams: [upstreamUrl], publicKeys: [UNRELATED_KEY], dataDir, readyTimeoutMs: 120_000 })),
      );
      const started = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
      try {
        const failures = results.flatMap((r) => (r.status === 'rejected' ? [String((r.reason as Error).message).slice(0, 3000)] : []));
        assert.ok(started.length >= 1, `one server should start:\n${failures.join('\n---\n')}`);
        for (const failure of failures) assert.match(failure, /another ncps server is using the SQLite database/, failure);
        const keys = await Promise.all(started.map((n) => n.publicKey()));
        assert.equal(new Set(keys).size, 1, `all instances must sign with one key: ${keys.join(' ')}`);
        const rows = withSqlite(path.join(dataDir, 'db.sqlite'), (db) =>
          db.prepare<[], { version: number; n: number }>('SELECT version, count(*) AS n FROM schema_migrations GROUP BY version ORDER BY version').all(),
        );
        assert.deepEqual(
          rows,
          MIGRATIONS.map((m) => ({ version: m.version, n: 1 })),
        );
      } finally {
        await Promise.all(started.map((n) => n.stop()));
      }
    });
  }
});
