// The expand/contract rule of src/db/migrations, enforced: every SQL statement a released ncps
// ran (snapshots in test/compat/sqlite-queries-v<N>.json, one per schema version) must still
// prepare against the newest schema, the read-only ones must still run against rows written by the
// current code, and the writing ones must still run too (inside a savepoint that is rolled back:
// a NOT NULL column without a default breaks old INSERTs without failing prepare). That is what
// makes a rollback to an older release safe after an expand-only migration.
//
// Also: the current statements must be snapshotted for the current schema version, and the check
// is shown to catch contracting migrations (dropped column, dropped table, renamed column, new
// NOT NULL column).
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import BetterSqlite3 from 'better-sqlite3';
import { LATEST_SCHEMA_VERSION, MIGRATIONS } from '../../src/db/migrations';
import { SqliteDatabase } from '../../src/db/sqlite';
import { SQLITE_QUERIES } from '../../src/db/sqlite-queries';
import { generateSecretKey, parseNarInfo } from '../../src/nix';
import { randomStoreHash, syntheticNarInfo } from '../helpers/legacy';

// Tests run from build/test/unit; the snapshots stay in the source tree.
const COMPAT_DIR = path.join(__dirname, '../../../test/compat');
const SNAPSHOT_RE = /^sqlite-queries-v(\d+)\.json$/;

type Queries = Record<string, string>;

const SNAPSHOT_NOTE =
  'Every SQL statement ncps ran against SQLite at this schema version (src/db/sqlite-queries.ts). Committed data: ' +
  'test/unit/schema-compat.test.ts replays it against the latest schema, so a later migration can never break it (expand, never contract).';

interface Snapshot {
  file: string;
  schemaVersion: number;
  queries: Queries;
}

function snapshotFileName(version: number): string {
  return `sqlite-queries-v${version}.json`;
}

function loadSnapshots(): Snapshot[] {
  const snapshots: Snapshot[] = [];
  for (const file of readdirSync(COMPAT_DIR).sort()) {
    const m = SNAPSHOT_RE.exec(file);
    if (!m) continue;
    const data = JSON.parse(readFileSync(path.join(COMPAT_DIR, file), 'utf8')) as { schemaVersion: number; queries: Queries };
    assert.equal(data.schemaVersion, Number(m[1]), `${file}: schemaVersion ${data.schemaVersion} does not match its name`);
    assert.ok(data.queries && Object.keys(data.queries).length > 0, `${file} holds no queries`);
    snapshots.push({ file, schemaVersion: data.schemaVersion, queries: data.queries });
  }
  return snapshots.sort((a, b) => a.schemaVersion - b.schemaVersion);
}

/**
 * What is wrong with the snapshots for the current release, or undefined. Every schema version
 * gets a snapshot, and the snapshot of the current version is what the current code runs.
 */
export function snapshotProblem(current: Queries, latest: number, snapshots: ReadonlyMap<number, Queries>): string | undefined {
  const same = (a: Queries, b: Queries) => JSON.stringify(Object.entries(a).sort()) === JSON.stringify(Object.entries(b).sort());
  const file = `test/compat/${snapshotFileName(latest)}`;
  const snapshot = snapshots.get(latest);
  if (!snapshot) {
    const older = [...snapshots.keys()].filter((v) => v < latest).sort((a, b) => b - a)[0];
    const changed =
      older === undefined
        ? 'there is no snapshot at all'
        : same(current, snapshots.get(older)!)
          ? `they equal the snapshot of schema ${older}`
          : `they differ from the snapshot of schema ${older}`;
    return (
      `schema version ${latest} has no snapshot of the SQL statements this release runs (${changed}). ` +
      `Add ${file} (run the tests with UPDATE_COMPAT_SNAPSHOT=1 to write it from src/db/sqlite-queries.ts) and commit it, ` +
      'so later migrations are checked against these statements too.'
    );
  }
  if (!same(current, snapshot)) {
    const names = [...new Set([...Object.keys(current), ...Object.keys(snapshot)])].filter((n) => current[n] !== snapshot[n]);
    return (
      `the SQL statements differ from ${file} (${names.join(', ')}) while the schema version is still ${latest}. ` +
      `Update ${file} to what src/db/sqlite-queries.ts runs now (UPDATE_COMPAT_SNAPSHOT=1 writes it). ` +
      'If a release already shipped the old statements, add a migration-free compatible change only: old statements must keep working.'
    );
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// A database at the latest schema with rows written by the current code.

interface Fixture {
  dir: string;
  file: string;
  hashA: string;
  hashB: string;
  storePathA: string;
  nameA: string;
  narFileIdA: number;
  narInfoIdA: number;
  instanceId: string;
  now: number;
}

const dirs: string[] = [];
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

async function makeFixture(): Promise<Fixture> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ncps-test-schema-compat-'));
  dirs.push(dir);
  const file = path.join(dir, 'db.sqlite');
  const db = new SqliteDatabase(file);
  const now = Date.now();
  const key = generateSecretKey('compat-test-1');
  const hashA = randomStoreHash();
  const hashB = randomStoreHash();
  const instanceId = 'compat-instance';
  try {
    assert.deepEqual(await db.migrate(), MIGRATIONS.map((m) => m.version));
    // B is pinned; A refers to B and is not: A is the least recently used candidate.
    const b = parseNarInfo(syntheticNarInfo(hashB, key, { name: 'b' }));
    const a = parseNarInfo(syntheticNarInfo(hashA, key, { name: 'a', references: [b.storePath.slice('/nix/store/'.length)] }));
    for (const [hash, n] of [[hashB, b], [hashA, a]] as const) {
      await db.putNarInfo(hash, n, {
        name: n.url.slice('nar/'.length),
        compression: n.compression,
        narHash: n.narHash.toNix32(),
        narSize: n.narSize,
        fileHash: n.fileHash?.toNix32(),
        fileSize: n.fileSize,
        upstreamUrl: `https://upstream.invalid/${n.url}`,
      });
    }
    const nameA = a.url.slice('nar/'.length);
    await db.markNarFileStored(nameA, 1234);
    await db.addPin(hashB, now);
    await db.renewLease({ instanceId, hostname: 'compat-host', pid: 4242, startedAt: now, heartbeatAt: now });
    await db.putSettingIfAbsent('secret_key', key.text);
    await db.touchNarInfos([hashA], now + 1);
    const got = await db.getNarInfo(hashA);
    assert.equal(got?.storePath, a.storePath, 'the current code reads back what it wrote');
    const raw = new BetterSqlite3(file, { readonly: true });
    try {
      const ids = raw
        .prepare<[string], { id: number; nar_file_id: number }>('SELECT id, nar_file_id FROM narinfos WHERE hash = ?')
        .get(hashA)!;
      return { dir, file, hashA, hashB, storePathA: a.storePath, nameA, narFileIdA: ids.nar_file_id, narInfoIdA: ids.id, instanceId, now };
    } finally {
      raw.close();
    }
  } finally {
    await db.close();
  }
}

/** Positional parameters of the statements we know, by name. */
function positional(name: string, f: Fixture): unknown[] | undefined {
  const table: Record<string, unknown[]> = {
    getNarInfo: [f.hashA],
    deleteNarInfo: [f.hashA],
    narFileIdOf: [f.hashA],
    getNarFile: [f.nameA],
    narInfosOfFile: [f.nameA],
    // In deleteNarFile it runs after the narinfos pointing at the file are gone: use an unreferenced name.
    deleteNarFileByName: [`${'0'.repeat(52)}.nar.xz`],
    deleteNarFileIfUnused: [f.narFileIdA],
    leastRecentlyUsed: [10],
    leastRecentlyUsedNarInfos: [10],
    leastRecentlyUsedAuxFiles: [10],
    createdAt: [],
    knownNarFiles: [JSON.stringify([f.nameA])],
    knownNarInfos: [JSON.stringify([f.hashA])],
    addPin: [f.hashA, f.now],
    removePin: [f.hashB],
    listPins: [],
    storeStats: [],
    liveLeases: [0],
    removeLease: [f.instanceId],
    getSetting: ['secret_key'],
    insertSetting: ['compat_other', 'value'],
    insertReference: [f.narInfoIdA, 99, 'ref'],
    insertSignature: [f.narInfoIdA, 99, 'sig'],
    narInfoPage: [0, 10],
    narFilePage: [0, 10],
    narInfoIdOf: [f.hashA],
    deleteSignatures: [f.narInfoIdA],
    putSetting: ['compat-setting', 'value'],
  };
  return table[name];
}

/** Values for named parameters (`@name`), as the current code binds them. */
function named(f: Fixture): Record<string, unknown> {
  const fresh = randomStoreHash();
  return {
    hash: fresh,
    storePath: `/nix/store/${fresh}-compat`,
    url: `nar/${'1'.repeat(52)}.nar.xz`,
    compression: 'xz',
    fileHash: `sha256:${'1'.repeat(52)}`,
    fileSize: 10,
    narHash: `sha256:${'2'.repeat(52)}`,
    narSize: 20,
    deriver: null,
    system: null,
    ca: null,
    extraFields: null,
    narFileId: f.narFileIdA,
    now: f.now + 2,
    name: f.nameA,
    kind: 'log',
    size: 1234,
    at: f.now + 3,
    upstreamUrl: null,
    instanceId: 'compat-instance-2',
    hostname: 'compat-host-2',
    pid: 4343,
    startedAt: f.now,
    heartbeatAt: f.now + 4,
    limit: 10,
    pinnedOnly: 0,
    match: null,
    storedAt: f.now,
    createdAt: f.now,
    lastAccessedAt: f.now + 5,
  };
}

interface Failure {
  name: string;
  stage: 'prepare' | 'read' | 'write';
  error: string;
}

interface Replay {
  failures: Failure[];
  /** Rows returned by the read-only statements. */
  rows: Map<string, unknown[]>;
  /** Write statements only prepared (parameters unknown to this test). */
  preparedOnly: string[];
}

/** Replays `queries` against the database at `file` (each write rolled back). */
function replay(file: string, queries: Queries, f: Fixture, setup?: (db: BetterSqlite3.Database) => void): Replay {
  const conn = new BetterSqlite3(file);
  const failures: Failure[] = [];
  const rows = new Map<string, unknown[]>();
  const preparedOnly: string[] = [];
  try {
    conn.pragma('foreign_keys = ON');
    setup?.(conn);
    const values = named(f);
    for (const [name, sql] of Object.entries(queries)) {
      let stmt: BetterSqlite3.Statement;
      try {
        stmt = conn.prepare(sql);
      } catch (error) {
        failures.push({ name, stage: 'prepare', error: (error as Error).message });
        continue;
      }
      const names = [...new Set([...sql.matchAll(/[@:$](\w+)/g)].map((m) => m[1]!))];
      const questionMarks = (sql.match(/\?/g) ?? []).length;
      let params: unknown[];
      let known = true;
      if (names.length > 0) {
        known = names.every((n) => n in values);
        params = [Object.fromEntries(names.map((n) => [n, n in values ? values[n] : null]))];
      } else {
        const p = positional(name, f);
        known = p !== undefined && p.length === questionMarks;
        params = p !== undefined && p.length === questionMarks ? p : Array.from({ length: questionMarks }, () => null);
      }
      if (stmt.readonly) {
        try {
          rows.set(name, stmt.all(...params));
        } catch (error) {
          failures.push({ name, stage: 'read', error: (error as Error).message });
        }
        continue;
      }
      if (!known) {
        preparedOnly.push(name);
        continue;
      }
      conn.exec('SAVEPOINT compat');
      try {
        if (stmt.reader) stmt.all(...params);
        else stmt.run(...params);
      } catch (error) {
        failures.push({ name, stage: 'write', error: (error as Error).message });
      } finally {
        conn.exec('ROLLBACK TO compat');
        conn.exec('RELEASE compat');
      }
    }
  } finally {
    conn.close();
  }
  return { failures, rows, preparedOnly };
}

function describeFailures(snapshot: string, failures: Failure[]): string {
  return (
    `statements of ${snapshot} no longer work on schema ${LATEST_SCHEMA_VERSION}:\n` +
    failures.map((x) => `  ${x.name} (${x.stage}): ${x.error}`).join('\n') +
    '\nA migration contracted the schema (dropped or renamed a table or column, or added a NOT NULL column without a default). ' +
    'Migrations must only expand: the previous release must keep working on the new schema (rollback). ' +
    'If contracting is unavoidable, raise compatFloor of that migration so older releases refuse to start.'
  );
}

// ---------------------------------------------------------------------------------------------

describe('schema compatibility: old releases\' SQL against the newest schema', () => {
  const snapshots = loadSnapshots();

  it('has snapshots to check', () => {
    assert.ok(snapshots.length > 0, `no ${SNAPSHOT_RE} files in ${COMPAT_DIR}`);
    for (const s of snapshots) assert.ok(s.schemaVersion <= LATEST_SCHEMA_VERSION, `${s.file} is newer than this release`);
  });

  for (const snapshot of snapshots) {
    it(`every statement of ${snapshot.file} prepares and runs`, async () => {
      const f = await makeFixture();
      const result = replay(f.file, snapshot.queries, f);
      assert.deepEqual(result.failures, [], describeFailures(snapshot.file, result.failures));
      assert.deepEqual(
        result.preparedOnly,
        [],
        'these write statements were only prepared, not run: give their parameters in positional() or named() of this test',
      );

      // The read-only statements see what the current code wrote.
      const expectRows = (name: string, check?: (rows: Array<Record<string, unknown>>) => void) => {
        const rows = result.rows.get(name) as Array<Record<string, unknown>> | undefined;
        if (rows === undefined) return; // not in this snapshot
        assert.ok(rows.length > 0, `${snapshot.file} ${name} found nothing of what the current code wrote`);
        check?.(rows);
      };
      expectRows('getNarInfo', (rows) => {
        if ('store_path' in rows[0]!) assert.equal(rows[0]!.store_path, f.storePathA);
        if ('sigs' in rows[0]!) assert.match(String(rows[0]!.sigs), /^compat-test-1:/);
      });
      expectRows('getNarFile', (rows) => {
        if ('stored_at' in rows[0]!) assert.notEqual(rows[0]!.stored_at, null);
      });
      expectRows('narFileIdOf');
      expectRows('narInfosOfFile', (rows) => assert.deepEqual(rows.map((r) => r.hash), [f.hashA]));
      expectRows('leastRecentlyUsed', (rows) => assert.deepEqual(rows.map((r) => r.hash), [f.hashA], 'B is pinned'));
      expectRows('leastRecentlyUsedNarInfos', (rows) => assert.deepEqual(rows.map((r) => r.hash), [f.hashA], 'B is pinned'));
      expectRows('knownNarFiles', (rows) => assert.deepEqual(rows.map((r) => r.value), [f.nameA]));
      expectRows('storeStats', (rows) => {
        if ('narinfos' in rows[0]!) assert.equal(rows[0]!.narinfos, 2);
      });
      expectRows('listPins', (rows) => assert.deepEqual(rows.map((r) => r.hash), [f.hashB]));
      expectRows('liveLeases', (rows) => assert.deepEqual(rows.map((r) => r.instance_id), [f.instanceId]));
      expectRows('getSetting');
      expectRows('narInfoPage', (rows) => assert.ok(rows.some((r) => r.hash === f.hashA)));
      expectRows('narFilePage', (rows) => assert.ok(rows.some((r) => r.name === f.nameA)));
      expectRows('narInfoIdOf', (rows) => assert.equal(rows[0]!.id, f.narInfoIdA));
      for (const name of ['cachedPathsByAccess', 'cachedPathsBySize', 'cachedPathsByPath']) {
        expectRows(name, (rows) => {
          const row = (hash: string) => rows.find((r) => r.hash === hash);
          assert.equal(row(f.hashA)?.store_path, f.storePathA, name);
          assert.equal(row(f.hashA)?.nar_stored, 1, `${name}: A's NAR is stored`);
          assert.equal(row(f.hashB)?.pinned_directly, 1, `${name}: B is pinned`);
          assert.equal(row(f.hashA)?.pinned_directly, 0, `${name}: A is not`);
        });
      }
    });
  }
});

describe('schema compatibility: every schema version has a snapshot', () => {
  it(`test/compat/${snapshotFileName(LATEST_SCHEMA_VERSION)} holds the statements this release runs`, () => {
    const file = path.join(COMPAT_DIR, snapshotFileName(LATEST_SCHEMA_VERSION));
    if (process.env.UPDATE_COMPAT_SNAPSHOT === '1') {
      const data = {
        schemaVersion: LATEST_SCHEMA_VERSION,
        note: SNAPSHOT_NOTE,
        queries: SQLITE_QUERIES,
      };
      writeFileSync(file, `${JSON.stringify(data, null, 2)}\n`);
    }
    const snapshots = new Map(loadSnapshots().map((s) => [s.schemaVersion, s.queries]));
    const problem = snapshotProblem({ ...SQLITE_QUERIES }, LATEST_SCHEMA_VERSION, snapshots);
    assert.equal(problem, undefined, problem);
  });

  it('the check fails when a new schema version comes without a snapshot', () => {
    const current: Queries = { ...SQLITE_QUERIES };
    const changed: Queries = { ...current, getSetting: 'SELECT value, updated_at FROM settings WHERE key = ?' };
    const snaps = new Map([[LATEST_SCHEMA_VERSION, current]]);
    const next = LATEST_SCHEMA_VERSION + 1;
    const missing = snapshotProblem(changed, next, snaps);
    assert.ok(missing, 'a migration to a new version without a snapshot must be reported');
    assert.match(missing, new RegExp(`Add test/compat/sqlite-queries-v${next}\\.json`));
    assert.match(missing, /differ from the snapshot/);
    // Even when the statements did not change: every schema version gets its snapshot.
    assert.match(snapshotProblem(current, next, snaps) ?? '', new RegExp(`sqlite-queries-v${next}\\.json`));
    // Statements edited without a new schema version: the snapshot must follow.
    assert.match(snapshotProblem(changed, LATEST_SCHEMA_VERSION, snaps) ?? '', /differ from .*\(getSetting\)/);
    assert.equal(snapshotProblem(current, LATEST_SCHEMA_VERSION, snaps), undefined);
  });
});

describe('schema compatibility: the check catches contracting migrations', () => {
  const snapshot = loadSnapshots().at(-1)!;

  const cases: Array<{ what: string; sql: string[]; expect: Array<{ name: string; stage: Failure['stage']; error: RegExp }> }> = [
    {
      what: 'a dropped column',
      sql: ['ALTER TABLE narinfos DROP COLUMN deriver'],
      expect: [
        { name: 'getNarInfo', stage: 'prepare', error: /no such column: n\.deriver/ },
        { name: 'insertNarInfo', stage: 'prepare', error: /deriver/ },
      ],
    },
    {
      what: 'a dropped table',
      sql: ['DROP TABLE pins'],
      expect: [
        { name: 'addPin', stage: 'prepare', error: /no such table: pins/ },
        { name: 'listPins', stage: 'prepare', error: /no such table: pins/ },
        { name: 'leastRecentlyUsedNarInfos', stage: 'prepare', error: /no such table: pins/ },
      ],
    },
    {
      what: 'a renamed column',
      sql: ['ALTER TABLE nar_files RENAME COLUMN upstream_url TO source_url'],
      expect: [{ name: 'getNarFile', stage: 'prepare', error: /no such column: upstream_url/ }],
    },
  ];

  for (const c of cases) {
    it(`reports ${c.what}`, async () => {
      const f = await makeFixture();
      // The "contracting migration", applied on top of the latest schema.
      const conn = new BetterSqlite3(f.file);
      try {
        for (const s of c.sql) conn.exec(s);
      } finally {
        conn.close();
      }
      const { failures } = replay(f.file, snapshot.queries, f);
      for (const e of c.expect) {
        const hit = failures.find((x) => x.name === e.name);
        assert.ok(hit, `${e.name} should fail after ${c.what}; failures: ${JSON.stringify(failures)}`);
        assert.equal(hit.stage, e.stage);
        assert.match(hit.error, e.error);
      }
      assert.match(describeFailures(snapshot.file, failures), /contracted the schema/);
    });
  }

  it('reports a NOT NULL column without a default (prepare alone would not)', async () => {
    const f = await makeFixture();
    const conn = new BetterSqlite3(f.file);
    try {
      // SQLite cannot ADD such a column; a migration would rebuild the table, as here.
      conn.pragma('foreign_keys = OFF');
      conn.transaction(() => {
        const { sql } = conn.prepare<[], { sql: string }>(`SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'settings'`).get()!;
        conn.exec(sql.replace(/^CREATE TABLE settings \(/, 'CREATE TABLE settings_new (\n tenant TEXT NOT NULL,'));
        conn.exec(`INSERT INTO settings_new SELECT 'default', * FROM settings`);
        conn.exec('DROP TABLE settings');
        conn.exec('ALTER TABLE settings_new RENAME TO settings');
      })();
    } finally {
      conn.close();
    }
    const { failures } = replay(f.file, snapshot.queries, f);
    const prepareFailures = failures.filter((x) => x.stage === 'prepare');
    assert.deepEqual(prepareFailures, [], 'every statement still prepares');
    const hit = failures.find((x) => x.name === 'insertSetting');
    assert.ok(hit, `insertSetting should fail to run; failures: ${JSON.stringify(failures)}`);
    assert.equal(hit.stage, 'write');
    assert.match(hit.error, /NOT NULL constraint failed: settings\.tenant/);
  });

  it('passes an expanding migration (new nullable column, new table, new index)', async () => {
    const f = await makeFixture();
    const conn = new BetterSqlite3(f.file);
    try {
      conn.exec('ALTER TABLE narinfos ADD COLUMN tenant TEXT');
      conn.exec('CREATE TABLE narinfo_tags (narinfo_id INTEGER NOT NULL REFERENCES narinfos(id) ON DELETE CASCADE, tag TEXT NOT NULL)');
      conn.exec('CREATE INDEX narinfos_tenant ON narinfos (tenant)');
    } finally {
      conn.close();
    }
    const { failures } = replay(f.file, snapshot.queries, f);
    assert.deepEqual(failures, []);
  });
});
